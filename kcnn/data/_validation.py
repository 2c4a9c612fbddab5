"""Argument checks shared by the data loaders."""

import numbers


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_test_fraction(test_fraction):
    """Raises `ValueError` unless `test_fraction` is a number strictly between 0 and 1."""
    if (
        isinstance(test_fraction, bool)
        or not isinstance(test_fraction, numbers.Real)
        or not 0.0 < test_fraction < 1.0
    ):
        raise ValueError(
            "`test_fraction` must be a number strictly between 0 and 1. "
            f"Received: test_fraction={test_fraction!r}"
        )


def check_positive_int(value, name, minimum=1):
    """Returns `value` as an int, or raises `ValueError` naming `name`."""
    if not _is_int(value) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}. Received: {name}={value!r}")
    return int(value)


def normalize_image_size(image_size, name="image_size", minimum=1):
    """Turns an int or a `(height, width)` pair into a `(height, width)` tuple of ints."""
    if _is_int(image_size):
        size = (int(image_size), int(image_size))
    elif (
        isinstance(image_size, (tuple, list))
        and len(image_size) == 2
        and all(_is_int(side) for side in image_size)
    ):
        size = (int(image_size[0]), int(image_size[1]))
    else:
        size = None
    if size is None or min(size) < minimum:
        raise ValueError(
            f"`{name}` must be an int >= {minimum} or a tuple of 2 ints (height, width) "
            f">= {minimum}. Received: {name}={image_size!r}"
        )
    return size
