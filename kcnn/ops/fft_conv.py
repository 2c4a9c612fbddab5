"""2-D convolution through the Fourier domain (the convolution theorem), stride 1.

The convolution theorem: the discrete Fourier transform of a circular convolution is the
pointwise product of the transforms, F(x * w) = F(x) F(w). Zero-padding both signals to at
least H + kh - 1 by W + kw - 1 makes the circular convolution equal to the linear one, so
one forward transform of the input and of the kernel, a product and one inverse transform
give the whole "full" convolution, from which "valid" and "same" are crops. Mathieu, Henaff &
LeCun, "Fast Training of Convolutional Networks through FFTs", ICLR 2014 (arXiv:1312.5851)
use it for convolutional networks: each input map and each kernel is transformed once and
reused for every (input, output) channel pair, so the per-pair work is a complex product and
a sum over input channels, which is a matrix product per frequency.

Cost, per (input channel, output channel) pair on an H x W map with a kh x kw kernel: direct
convolution does H W kh kw multiply-adds, O(H W k^2); the Fourier route does O(H W) complex
multiply-adds for the product plus transforms of O(H W log(H W)) shared by all pairs. The
Fourier cost does not grow with the kernel, but its constant is large (complex arithmetic,
padded sizes, memory traffic of the spectra), so it wins only for large kernels:
bench/bench_fft_conv.py and bench/RESULTS.md measure the crossover against
`keras.layers.Conv2D`.

Deep-learning "convolution" (`keras.layers.Conv2D`, `tf.nn.conv2d`) is cross-correlation,
y(i, j) = sum_(u, v) x(i + u, j + v) w(u, v); it is the convolution of x with the kernel
flipped along both spatial axes, which is what is transformed here.
"""

import keras
import tensorflow as tf
from keras import ops

from kcnn._validation import normalize_data_format, normalize_padding

# tf.signal's FFTs take float32 / float64 only: 16-bit inputs are computed in float32.
_LOW_PRECISION = ("float16", "bfloat16")


def fast_fft_length(size):
    """The smallest integer >= `size` with no prime factor other than 2, 3 and 5.

    TensorFlow's CPU FFT is several times slower on lengths with a large prime factor
    (measured on 2 CPU cores, 8 x 16 maps: 97 x 97 took 15.4 ms, 96 x 96 6.5 ms, and
    67 x 67 6.7 ms against 2.6 ms for 72 x 72), so the zero-padding goes up to such a length.

    Example:

    >>> [fast_fft_length(n) for n in (1, 7, 66, 97)]
    [1, 8, 72, 100]
    """
    length = max(int(size), 1)
    while True:
        rest = length
        for prime in (2, 3, 5):
            while rest % prime == 0:
                rest //= prime
        if rest == 1:
            return length
        length += 1


def fft_conv2d(inputs, kernel, padding="valid", data_format="channels_last", bias=None):
    """2-D convolution (cross-correlation, as `keras.layers.Conv2D`) computed with FFTs.

    By the convolution theorem (see the module docstring; Mathieu, Henaff & LeCun 2014, "Fast
    Training of Convolutional Networks through FFTs", arXiv:1312.5851): the input and the kernel
    flipped along both spatial axes are zero-padded to at least (H + kh - 1, W + kw - 1),
    rounded up to lengths with prime factors 2, 3 and 5 only when H and W are known at tracing
    time, and transformed with `tf.signal.rfft2d`; their spectra are multiplied and summed over
    the input channels (one complex `einsum`), transformed back with `tf.signal.irfft2d`, and
    the "valid" or "same" window is cropped out. The result equals `keras.layers.Conv2D` with
    `strides=1`, `dilation_rate=1`, up to floating-point rounding (about 1e-6 of the output
    scale in float32: measured 2-3e-7 on 64 x 64 maps of 16 channels against a float64
    reference, where `tf.nn.conv2d` measured 3-6e-7).

    Cost per (input channel, output channel) pair: O(H W log(H W)), independent of the
    kernel size, against O(H W kh kw) for direct convolution; with its larger constant the
    Fourier route pays off only for large kernels. Measured against `keras.layers.Conv2D`
    (oneDNN) on 2 CPU cores, batch 8, 64 x 64, 16 -> 16 channels, "same": the forward pass
    is faster from k = 15 to 23 on (noisy runs), forward+backward from k = 15, and 7-10x
    slower at k = 3 (bench/bench_fft_conv.py, bench/RESULTS.md).

    Why `tf.signal`: `keras.ops.rfft` and `keras.ops.irfft` transform the last axis only and
    `keras.ops.fft2` takes complex input as (real, imaginary) pairs, so a real 2-D transform
    in `keras.ops` would be two 1-D transforms around two transposes, with the complex
    product spelled out as four real ones. `tf.signal.rfft2d` / `irfft2d` do the real 2-D
    transform in one op each, and `tf.einsum` sums the complex products, because
    `keras.ops.einsum` (and `matmul`) cast complex128 down to complex64 (Keras 3.15), which
    would halve the precision of float64 inputs. Everything else is `keras.ops`.

    Args:
        inputs: float tensor, `(B, H, W, C_in)` for `"channels_last"` or `(B, C_in, H, W)`
            for `"channels_first"`. H and W may be unknown (`None`) inside a graph.
        kernel: float tensor `(kh, kw, C_in, C_out)`, the layout of `Conv2D.kernel`.
        padding: str. `"valid"` (no padding) or `"same"` (TensorFlow's rule: the output has
            the input's size, the padding is split with the smaller half before, so an even
            kernel gets the extra row and column after). Case-insensitive. Defaults to
            `"valid"`.
        data_format: str. `"channels_last"` or `"channels_first"`. Defaults to
            `"channels_last"`.
        bias: optional float tensor `(C_out,)`, added to every output position. Defaults to
            `None` (no bias).

    Input shape:
        `(B, H, W, C_in)` or `(B, C_in, H, W)`, following `data_format`.

    Output shape:
        `(B, H_out, W_out, C_out)` or `(B, C_out, H_out, W_out)`, with
        `H_out, W_out = H, W` for `"same"` and `H - kh + 1, W - kw + 1` for `"valid"`. The
        dtype of `inputs` (16-bit inputs are computed in float32, the dtype the FFT takes).

    Raises:
        ValueError: if `padding` or `data_format` is not one of its values, if `inputs` or
            `kernel` is not 4-D, if the kernel's input channels differ from the input's, if
            `bias` does not have `C_out` entries, or if with `"valid"` padding the kernel is
            larger than the input.

    Example:

    >>> import numpy as np
    >>> inputs = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)
    >>> kernel = np.ones((2, 2, 1, 1), "float32")  # sums of 2 x 2 windows
    >>> np.round(fft_conv2d(inputs, kernel)[0, :, :, 0].numpy()).tolist()
    [[10.0, 14.0, 18.0], [26.0, 30.0, 34.0], [42.0, 46.0, 50.0]]
    """
    padding = normalize_padding(padding)
    data_format = normalize_data_format(data_format)
    inputs = ops.convert_to_tensor(inputs)
    kernel = ops.convert_to_tensor(kernel)
    if len(inputs.shape) != 4:
        raise ValueError(
            f"`inputs` must be 4-D (batch and 2 spatial axes, {data_format}). "
            f"Received: inputs.shape={tuple(inputs.shape)}"
        )
    if len(kernel.shape) != 4:
        raise ValueError(
            "`kernel` must be 4-D (kernel_height, kernel_width, in_channels, out_channels). "
            f"Received: kernel.shape={tuple(kernel.shape)}"
        )
    if data_format == "channels_last":
        inputs = ops.transpose(inputs, (0, 3, 1, 2))
    channels, height, width = inputs.shape[1:]
    kernel_h, kernel_w, kernel_in, filters = kernel.shape
    if channels is not None and channels != kernel_in:
        channel_axis = 3 if data_format == "channels_last" else 1
        raise ValueError(
            f"`kernel` must have as many input channels (axis 2) as `inputs` (axis "
            f"{channel_axis}, {data_format}). Received: kernel.shape={tuple(kernel.shape)}, "
            f"{channels} input channels"
        )
    if padding == "valid" and (
        (height is not None and kernel_h > height) or (width is not None and kernel_w > width)
    ):
        raise ValueError(
            '`kernel` must not be larger than the input with padding="valid". Received: '
            f"kernel size {(kernel_h, kernel_w)}, input size {(height, width)}"
        )
    if bias is not None:
        bias = ops.convert_to_tensor(bias)
        if tuple(bias.shape) != (filters,):
            raise ValueError(
                f"`bias` must have shape ({filters},), the kernel's output channels. "
                f"Received: bias.shape={tuple(bias.shape)}"
            )

    dtype = keras.backend.standardize_dtype(inputs.dtype)
    if dtype in _LOW_PRECISION:
        inputs = ops.cast(inputs, "float32")
    kernel = ops.cast(kernel, inputs.dtype)
    if height is None or width is None:
        dynamic = ops.shape(inputs)
        height, width = dynamic[2], dynamic[3]
        fft_length = [height + kernel_h - 1, width + kernel_w - 1]
    else:
        fft_length = [fast_fft_length(height + kernel_h - 1), fast_fft_length(width + kernel_w - 1)]

    # (kh, kw, C_in, C_out) -> (C_in, C_out, kh, kw), flipped: correlation is convolution with
    # the mirrored kernel. rfft2d zero-pads both to fft_length.
    flipped = ops.flip(ops.transpose(kernel, (2, 3, 0, 1)), axis=(2, 3))
    input_spectrum = tf.signal.rfft2d(inputs, fft_length=fft_length)
    kernel_spectrum = tf.signal.rfft2d(flipped, fft_length=fft_length)
    # tf.einsum: keras.ops.einsum casts complex128 to complex64 (see the docstring).
    spectrum = tf.einsum("bihw,iohw->bohw", input_spectrum, kernel_spectrum)
    full = tf.signal.irfft2d(spectrum, fft_length=fft_length)

    # Index n of the full convolution is the correlation at n - (k - 1): "valid" starts at
    # n = k - 1, "same" (k - 1 - (k - 1) // 2 zeros before) at n = k // 2.
    if padding == "valid":
        top, left = kernel_h - 1, kernel_w - 1
        out_h, out_w = height - kernel_h + 1, width - kernel_w + 1
    else:
        top, left = kernel_h // 2, kernel_w // 2
        out_h, out_w = height, width
    outputs = full[:, :, top : top + out_h, left : left + out_w]
    if bias is not None:
        outputs = outputs + ops.reshape(ops.cast(bias, outputs.dtype), (1, filters, 1, 1))
    if data_format == "channels_last":
        outputs = ops.transpose(outputs, (0, 2, 3, 1))
    return ops.cast(outputs, dtype)
