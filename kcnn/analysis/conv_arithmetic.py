"""Output sizes of convolutions and transposed convolutions along one axis.

The formulas follow Dumoulin & Visin, "A guide to convolution arithmetic for deep
learning", 2016 (arXiv:1603.07285), and the `"same"` / `"valid"` conventions of
TensorFlow and Keras 3.
"""

from kcnn._validation import check_positive_int, is_int, window_output_size

_STRING_PADDINGS = ("valid", "same", "causal")
_TRANSPOSE_STRING_PADDINGS = ("valid", "same")


def _check_size(size):
    if size is None:
        return None
    if not is_int(size) or size < 1:
        raise ValueError(f"`size` must be a positive int or None. Received: size={size!r}")
    return int(size)


def _check_padding(padding, allowed):
    if isinstance(padding, str):
        if padding.lower() in allowed:
            return padding.lower()
    elif is_int(padding) and padding >= 0:
        return int(padding)
    choices = ", ".join(f'"{p}"' for p in allowed)
    raise ValueError(
        f"`padding` must be a non-negative int or one of {choices}. Received: padding={padding!r}"
    )


def conv_output_size(size, kernel_size, strides=1, padding=0, dilation_rate=1):
    """Number of output positions of a convolution or pooling window along one axis.

    With an explicit symmetric padding `p` this is the relation of Dumoulin & Visin
    (2016, arXiv:1603.07285, relationship 15 generalised to dilation):

        out = floor((n + 2p - d(k - 1) - 1) / s) + 1

    `"valid"` means `p = 0`. `"same"` (and the Conv1D-only `"causal"`) follow
    TensorFlow and Keras: `out = ceil(n / s)` whatever the kernel and dilation,
    because the framework pads as much as needed (asymmetrically if it must).

    Args:
        size: int or None. Input length `n` along the axis. `None` (an unknown
            dimension, as in a Keras shape) gives `None`.
        kernel_size: int. Window length `k`.
        strides: int. Step `s` between windows. Defaults to `1`.
        padding: int, `"valid"`, `"same"` or `"causal"`. An int is the number of
            zeros `p` added on *each* side. Defaults to `0`.
        dilation_rate: int. Spacing `d` between kernel taps. Defaults to `1`.

    Returns:
        The output length as an int, or `None` if `size` is `None`.

    Raises:
        ValueError: if an argument is not a positive int (`padding`: not a
            non-negative int or a known string), or if the dilated kernel is larger
            than the padded input, so that not one window fits.

    Example:

    >>> conv_output_size(32, kernel_size=3)
    30
    >>> conv_output_size(227, kernel_size=11, strides=4)
    55
    >>> conv_output_size(7, kernel_size=3, strides=2, padding="same")
    4
    >>> conv_output_size(None, kernel_size=3) is None
    True
    """
    size = _check_size(size)
    kernel_size = check_positive_int(kernel_size, "kernel_size")
    strides = check_positive_int(strides, "strides")
    padding = _check_padding(padding, _STRING_PADDINGS)
    dilation_rate = check_positive_int(dilation_rate, "dilation_rate")
    if size is None:
        return None
    if padding in ("same", "causal"):
        return -(-size // strides)
    pad = 0 if padding == "valid" else padding
    effective_kernel = dilation_rate * (kernel_size - 1) + 1
    padded = size + 2 * pad
    if effective_kernel > padded:
        raise ValueError(
            "The kernel does not fit in the input: the dilated kernel spans "
            f"dilation_rate * (kernel_size - 1) + 1 = {effective_kernel} positions but the "
            f"padded input has size + 2 * padding = {padded}. Received: size={size}, "
            f"kernel_size={kernel_size}, padding={padding!r}, dilation_rate={dilation_rate}"
        )
    return window_output_size(size, kernel_size, strides, 2 * pad, dilation_rate)


def conv_transpose_output_size(
    size, kernel_size, strides=1, padding="valid", output_padding=None, dilation_rate=1
):
    """Output length of a transposed convolution along one axis.

    String paddings reproduce `keras.layers.Conv2DTranspose` (and its 1D/3D
    siblings) exactly, with `k' = d(k - 1) + 1` the dilated kernel:

    - `"valid"`: `(n - 1) s + k' + a`, where `a = output_padding`, or
      `max(k', s) - k'` when `output_padding` is `None`.
    - `"same"`: `n s` when `output_padding` is `None`, else
      `(n - 1) s + (k' mod 2) + a`.

    An int padding `p` uses the convention of Dumoulin & Visin (2016,
    arXiv:1603.07285, section 4) shared by PyTorch's `ConvTranspose2d`:
    `(n - 1) s - 2p + k' + a`, with `a = 0` when `output_padding` is `None`.

    Args:
        size: int or None. Input length `n` along the axis; `None` gives `None`.
        kernel_size: int. Kernel length `k`.
        strides: int. Upsampling factor `s`. Defaults to `1`.
        padding: `"valid"`, `"same"` or a non-negative int. Defaults to `"valid"`.
        output_padding: int or None. Extra length `a` added on one side; must be
            smaller than `strides`, as Keras requires. Defaults to `None`.
        dilation_rate: int. Spacing `d` between kernel taps. Defaults to `1`.

    Returns:
        The output length as an int, or `None` if `size` is `None`.

    Raises:
        ValueError: if an argument has an invalid value, or if an int padding
            crops the output to nothing.

    Example:

    >>> conv_transpose_output_size(9, kernel_size=3, strides=2)
    19
    >>> conv_transpose_output_size(9, kernel_size=3, strides=2, padding="same")
    18
    """
    size = _check_size(size)
    kernel_size = check_positive_int(kernel_size, "kernel_size")
    strides = check_positive_int(strides, "strides")
    padding = _check_padding(padding, _TRANSPOSE_STRING_PADDINGS)
    dilation_rate = check_positive_int(dilation_rate, "dilation_rate")
    if output_padding is not None:
        if not is_int(output_padding) or not 0 <= output_padding < strides:
            raise ValueError(
                "`output_padding` must be None or an int with 0 <= output_padding < strides. "
                f"Received: output_padding={output_padding!r}, strides={strides}"
            )
        output_padding = int(output_padding)
    if size is None:
        return None
    effective_kernel = dilation_rate * (kernel_size - 1) + 1
    if padding == "valid":
        if output_padding is None:
            output_padding = max(effective_kernel, strides) - effective_kernel
        return (size - 1) * strides + effective_kernel + output_padding
    if padding == "same":
        if output_padding is None:
            return size * strides
        return (size - 1) * strides + effective_kernel % 2 + output_padding
    output = (size - 1) * strides - 2 * padding + effective_kernel + (output_padding or 0)
    if output < 1:
        raise ValueError(
            f"`padding` crops the whole output: (size - 1) * strides - 2 * padding + "
            f"dilation_rate * (kernel_size - 1) + 1 = {output}. Received: size={size}, "
            f"kernel_size={kernel_size}, strides={strides}, padding={padding}, "
            f"dilation_rate={dilation_rate}"
        )
    return output
