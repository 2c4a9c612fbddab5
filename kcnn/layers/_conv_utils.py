"""Argument normalisation and validation shared by the convolution and pooling layers.

Every helper raises `ValueError` with a message that names the argument and the value
received, so that layers validate eagerly in `__init__` with one line per argument.
"""

import numbers

_PADDINGS = ("valid", "same")


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def normalize_tuple(value, n, name, allow_zero=False):
    """Returns `value` as a tuple of `n` ints: an int is repeated, a sequence is checked.

    Args:
        value: int, or tuple or list of `n` ints.
        n: int. Length of the tuple, e.g. 2 for a 2D kernel.
        name: str. Name of the argument, used in the error message.
        allow_zero: bool. Whether 0 is allowed (e.g. for a padding size).
            Defaults to `False`.

    Returns:
        A tuple of `n` Python ints.

    Raises:
        ValueError: if `value` is not an int or a sequence of `n` ints, or if an
            entry is negative (zero when `allow_zero` is `False`).

    Example:

    >>> normalize_tuple(3, 2, "kernel_size")
    (3, 3)
    >>> normalize_tuple([1, 2], 2, "strides")
    (1, 2)
    """
    kind = "non-negative" if allow_zero else "positive"
    lowest = 0 if allow_zero else 1
    message = (
        f"`{name}` must be a {kind} int or a tuple of {n} {kind} ints. Received: {name}={value!r}"
    )
    if _is_int(value):
        values = (value,) * n
    elif isinstance(value, tuple | list) and len(value) == n and all(_is_int(v) for v in value):
        values = tuple(value)
    else:
        raise ValueError(message)
    if any(v < lowest for v in values):
        raise ValueError(message)
    return tuple(int(v) for v in values)


def normalize_padding(value):
    """Returns `"valid"` or `"same"` (case-insensitive input).

    Args:
        value: str. The padding mode.

    Returns:
        `"valid"` or `"same"`.

    Raises:
        ValueError: if `value` is not one of those strings.

    Example:

    >>> normalize_padding("SAME")
    'same'
    """
    if isinstance(value, str) and value.lower() in _PADDINGS:
        return value.lower()
    raise ValueError(f'`padding` must be "valid" or "same". Received: padding={value!r}')


def check_positive_int(value, name):
    """Returns `value` as an int if it is a positive int (not a bool).

    Args:
        value: the value to check.
        name: str. Name of the argument, used in the error message.

    Returns:
        `int(value)`.

    Raises:
        ValueError: if `value` is not a positive int.

    Example:

    >>> check_positive_int(16, "filters")
    16
    """
    if not _is_int(value) or value < 1:
        raise ValueError(f"`{name}` must be a positive int. Received: {name}={value!r}")
    return int(value)


def check_strides_with_dilation(strides, dilation_rate):
    """Rejects strides above 1 combined with a dilation above 1, as Keras convolutions do.

    TensorFlow's convolution kernels support either a stride or a dilation larger than 1
    along the spatial axes, not both at once.

    Args:
        strides: tuple of ints.
        dilation_rate: tuple of ints.

    Raises:
        ValueError: if some stride and some dilation rate are both larger than 1.

    Example:

    >>> check_strides_with_dilation((2, 2), (1, 1))
    """
    if max(strides) > 1 and max(dilation_rate) > 1:
        raise ValueError(
            "`strides` > 1 is not supported together with `dilation_rate` > 1. "
            f"Received: strides={strides}, dilation_rate={dilation_rate}"
        )
