"""Argument checks and shape arithmetic shared by every floor of kcnn.

Layers, ops, data loaders, models and the config all validate eagerly with these helpers, so
one kind of mistake gets one message everywhere: it names the argument and the value
received ("`kernel_size` must be a positive int or a tuple of 2 positive ints. Received:
kernel_size=(3, 0)"). This module imports nothing from kcnn and no TensorFlow: the shape
functions take Python ints or scalar tensors alike.
"""

import math
import numbers

PADDINGS = ("valid", "same")
DATA_FORMATS = ("channels_last", "channels_first")


def is_int(value):
    """Whether `value` is an integer (a Python or NumPy int), and not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value):
    """Whether `value` is a real number (int or float), and not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_positive_int(value, name, minimum=1):
    """Returns `value` as an int if it is an int >= `minimum` (not a bool).

    Args:
        value: the value to check.
        name: str. Name of the argument, used in the error message.
        minimum: int. Smallest allowed value. Defaults to 1.

    Returns:
        `int(value)`.

    Raises:
        ValueError: "`name` must be a positive int" (or "an int >= minimum" for another
            minimum), with the value received.

    Example:

    >>> check_positive_int(16, "filters")
    16
    """
    if not is_int(value) or value < minimum:
        kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        if minimum == 0:
            kind = "a non-negative int"
        raise ValueError(f"`{name}` must be {kind}. Received: {name}={value!r}")
    return int(value)


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
    if is_int(value):
        values = (value,) * n
    elif isinstance(value, tuple | list) and len(value) == n and all(is_int(v) for v in value):
        values = tuple(value)
    else:
        raise ValueError(message)
    if any(v < lowest for v in values):
        raise ValueError(message)
    return tuple(int(v) for v in values)


def normalize_padding(value):
    """Returns `"valid"` or `"same"` (case-insensitive input).

    Raises:
        ValueError: if `value` is not one of those strings.

    Example:

    >>> normalize_padding("SAME")
    'same'
    """
    if isinstance(value, str) and value.lower() in PADDINGS:
        return value.lower()
    raise ValueError(f'`padding` must be "valid" or "same". Received: padding={value!r}')


def check_positive_numbers(received, name, length=None):
    """`received` as a tuple of floats if it is a non-empty list or tuple (of `length`
    entries, when given) of finite positive numbers; otherwise a ValueError naming `name`.

    Example:
    >>> check_positive_numbers([0.5, 1, 2], "aspect_ratios")
    (0.5, 1.0, 2.0)
    """
    values = tuple(received) if isinstance(received, list | tuple) else ()
    if (
        not values
        or (length is not None and len(values) != length)
        or not all(is_number(v) and math.isfinite(v) and v > 0 for v in values)
    ):
        count = f"a sequence of {length}" if length is not None else "a non-empty sequence of"
        raise ValueError(
            f"`{name}` must be {count} positive numbers. Received: {name}={received!r}"
        )
    return tuple(float(v) for v in values)


def normalize_data_format(value, default=None):
    """`"channels_last"` or `"channels_first"` (any case); None means `default` when one is
    given (e.g. `keras.config.image_data_format()`), else it is refused.

    Example:
    >>> normalize_data_format("Channels_First"), normalize_data_format(None, "channels_last")
    ('channels_first', 'channels_last')
    """
    if value is None and default is not None:
        return default
    if isinstance(value, str) and value.lower() in DATA_FORMATS:
        return value.lower()
    accepted = (
        '"channels_last", "channels_first" or None'
        if default is not None
        else ('"channels_last" or "channels_first"')
    )
    raise ValueError(f"`data_format` must be {accepted}. Received: data_format={value!r}")


def check_strides_with_dilation(strides, dilation_rate):
    """Rejects strides above 1 combined with a dilation above 1, as Keras convolutions do.

    TensorFlow's convolution kernels support either a stride or a dilation larger than 1
    along the spatial axes, not both at once.

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


def check_fraction(value, name, low_open=True, high_open=True):
    """Returns `value` as a float if it lies in the interval from 0 to 1.

    Args:
        value: the value to check.
        name: str. Name of the argument, used in the error message.
        low_open: bool. Whether 0 is excluded. Defaults to True.
        high_open: bool. Whether 1 is excluded. Defaults to True.

    Raises:
        ValueError: naming the argument, the interval and the value received.

    Example:

    >>> check_fraction(0.25, "test_fraction")
    0.25
    """
    inside = is_number(value) and (value > 0.0 if low_open else value >= 0.0)
    inside = inside and (value < 1.0 if high_open else value <= 1.0)
    if not inside:
        interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
        if low_open and high_open:
            interval = "strictly between 0 and 1"
        else:
            interval = f"in {interval}"
        raise ValueError(f"`{name}` must be a number {interval}. Received: {name}={value!r}")
    return float(value)


def normalize_image_size(image_size, name="image_size", minimum=1):
    """Turns an int or a `(height, width)` pair into a `(height, width)` tuple of ints.

    Raises:
        ValueError: naming the argument, the smallest side and the value received.

    Example:

    >>> normalize_image_size(32)
    (32, 32)
    """
    if is_int(image_size):
        size = (int(image_size), int(image_size))
    elif (
        isinstance(image_size, tuple | list)
        and len(image_size) == 2
        and all(is_int(side) for side in image_size)
    ):
        size = (int(image_size[0]), int(image_size[1]))
    else:
        size = None
    if size is None or min(size) < minimum:
        kind = f"an int >= {minimum} or a tuple of 2 ints (height, width) >= {minimum}"
        if minimum == 1:
            kind = "a positive int or a tuple of 2 positive ints (height, width)"
        raise ValueError(f"`{name}` must be {kind}. Received: {name}={image_size!r}")
    return size


def window_output_size(size, kernel, stride=1, pad_total=0, dilation=1):
    """Output positions of a convolution or pooling window along one axis.

    floor((n + p - d (k - 1) - 1) / s) + 1 (Dumoulin & Visin 2016, "A guide to convolution
    arithmetic for deep learning", arXiv:1603.07285, relationship 15), for `n` input
    positions, `p` padding in total, kernel `k`, dilation `d` and stride `s`. Works on ints
    and on scalar tensors (floor division).

    Example:

    >>> window_output_size(7, 3, stride=2, pad_total=2)
    4
    """
    return (size + pad_total - dilation * (kernel - 1) - 1) // stride + 1


def same_padding(size, kernel, stride=1, dilation=1):
    """`(output_size, pad_total)` of TensorFlow's "same" padding along one axis.

    The output has ceil(n / s) positions and the padding is whatever the window needs for
    them, at least 0 (split with the smaller half before: `pad_total // 2`). Works on ints;
    for a scalar tensor `pad_total` is returned unclamped and the caller takes the maximum
    with 0.

    Example:

    >>> same_padding(7, 3, stride=2)
    (4, 2)
    """
    output = -(-size // stride)  # ceil division, also for tensors
    pad_total = (output - 1) * stride + dilation * (kernel - 1) + 1 - size
    if isinstance(pad_total, int):
        pad_total = max(pad_total, 0)
    return output, pad_total


def check_loss_keys(options, known, what):
    """Checks a task's `train.loss` mapping against the keys its loss takes.

    Args:
        options: the `train.loss` mapping (or None).
        known: the keys the loss takes, in the order the message lists them.
        what: the loss's name in the message, e.g. `"classification"`.

    Returns:
        `options` as a new dict (empty for None).

    Raises:
        ValueError: naming the unknown keys and listing the known ones.
    """
    options = dict(options or {})
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(
            f"Unknown {what} loss key(s) {unknown} in `train.loss`. Known: {list(known)}"
        )
    return options
