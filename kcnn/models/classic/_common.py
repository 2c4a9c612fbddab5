"""Argument checks and small helpers shared by the classic architectures."""

import numbers


def check_input_shape(input_shape):
    """Returns `input_shape` as a tuple `(height, width, channels)` with known channels."""
    valid = (
        isinstance(input_shape, tuple | list)
        and len(input_shape) == 3
        and all(size is None or _is_positive_int(size) for size in input_shape[:2])
        and _is_positive_int(input_shape[2])
    )
    if not valid:
        raise ValueError(
            "`input_shape` must be a tuple (height, width, channels) of positive ints, with "
            f"height and width possibly None. Received: input_shape={input_shape!r}"
        )
    return tuple(None if size is None else int(size) for size in input_shape)


def check_min_size(input_shape, minimum, reason):
    """Raises if a known height or width is below `minimum`; `reason` says why it is needed."""
    if any(size is not None and size < minimum for size in input_shape[:2]):
        raise ValueError(
            f"`input_shape` must have a height and width of at least {minimum}: {reason}. "
            f"Received: input_shape={input_shape!r}"
        )


def check_num_classes(num_classes):
    if not _is_positive_int(num_classes) or num_classes < 2:
        raise ValueError(
            f"`num_classes` must be an int >= 2. Received: num_classes={num_classes!r}"
        )
    return int(num_classes)


def check_width(width):
    if not isinstance(width, numbers.Real) or isinstance(width, bool) or width <= 0:
        raise ValueError(f"`width` must be a positive number. Received: width={width!r}")
    return float(width)


def check_rate(value, name):
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0 <= value < 1:
        raise ValueError(f"`{name}` must be a float in [0, 1). Received: {name}={value!r}")
    return float(value)


def check_choice(value, name, choices):
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}. Received: {name}={value!r}")
    return value


def scaled(channels, width, divisor=1):
    """`channels * width` rounded to a multiple of `divisor`, at least `divisor`."""
    return max(divisor, int(round(channels * width / divisor)) * divisor)


def _is_positive_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0
