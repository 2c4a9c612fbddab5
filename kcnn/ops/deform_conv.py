"""Deformable convolution v1 (Dai et al. 2017) and v2 (Zhu et al. 2019), NHWC.

Dai, Qi, Xiong, Li, Zhang, Hu & Wei, "Deformable Convolutional Networks", ICCV 2017
(arXiv:1703.06211), eq. (2); Zhu, Hu, Lin & Dai, "Deformable ConvNets v2: More Deformable,
Better Results", CVPR 2019 (arXiv:1811.11168), eq. (1). For every output position p0 and
kernel tap k at grid offset p_k:

    y(p0) = sum_k w_k . x(p0 * s - pad + p_k * d + dp_k) . dm_k  (+ b)

x(p) at a fractional p is bilinear interpolation of the four neighbouring pixels, and pixels
outside the (padded) input read 0. v1 is the case dm_k = 1.

Layout, the same as `torchvision.ops.deform_conv2d` with the channel axis moved last, so
offsets, masks and weights port between the two (transpose NCHW <-> NHWC and OIHW <-> HWIO):

    offsets: (B, H_out, W_out, 2 * G * kh * kw)
        for offset group g and kernel tap k = i * kw + j (row-major over the kernel),
        channel 2 * (g * kh * kw + k) is dy and channel 2 * (g * kh * kw + k) + 1 is dx.
    mask:    (B, H_out, W_out, G * kh * kw), channel g * kh * kw + k; multiplies the samples
        as given (apply a sigmoid before, as DCNv2 does, if the mask comes from logits).
    input channel c belongs to offset group c // (C_in / G).

For a 3x3 kernel and G = 1 the 18 offset channels read

    [dy(-1,-1), dx(-1,-1), dy(-1,0), dx(-1,0), dy(-1,1), dx(-1,1), dy(0,-1), ..., dx(1,1)]

where (i - 1, j - 1) is the tap's place in the kernel, so offsets of zeros everywhere and a
mask of ones give back the plain convolution.

How it is computed: the input is padded by one zero pixel on every side and its 2x2
neighbourhoods are laid side by side, so the four bilinear corners of a sample are one
contiguous row of 4 * C / G values; one gather per (position, tap, group) reads them (instead
of four gathers of single pixels), the bilinear weights (times the mask, zero outside the
image) reduce them to the sample, and one matrix product with the (kh * kw * C_in, C_out)
kernel gives the output. The gradient is explicit: the same gather gives the derivatives of
the bilinear weights (hence of the offsets and the mask), and the input gradient is one
scatter-add of the weighted column gradients into the neighbourhood rows, folded back onto
the pixels. Sampling and its gradient each run as an XLA-compiled function (also inside a
model that is not compiled), which measured about 1.4x faster than the same TensorFlow ops;
`jit_compile=False` runs them as plain ops. XLA's CPU scatter-add runs on one core, so the
compiled gradient runs as one call per slice of the batch, side by side: at least one per core,
and small enough slices (down to one image with a static batch; 8 slices with a dynamic batch
of static image size) that the weighted rows stay in cache between the multiply that writes
them and the scatter that reads them. See bench/RESULTS.md for the timings against
`keras.layers.Conv2D` and torchvision.
"""

import functools
import math
import os

import tensorflow as tf

from kcnn._validation import normalize_tuple, same_padding, window_output_size


def _static_or_dynamic(tensor, axis):
    static = tensor.shape[axis]
    return static if static is not None else tf.shape(tensor)[axis]


def deform_output_size(size, kernel, stride, pad_total, dilation):
    """floor((n + pad_total - d (k - 1) - 1) / s) + 1, for ints or scalar tensors (see
    `kcnn._validation.window_output_size`)."""
    return window_output_size(size, kernel, stride, pad_total, dilation)


def normalize_deform_padding(padding):
    """Returns "same", "valid" or explicit ((top, bottom), (left, right)).

    Accepts "valid" / "same" (any case), an int or `(pad_h, pad_w)` of zeros on both sides
    (torchvision's `padding`), or `((top, bottom), (left, right))`.
    """
    if isinstance(padding, str):
        if padding.lower() in ("valid", "same"):
            return padding.lower()
    elif (
        isinstance(padding, tuple | list)
        and len(padding) == 2
        and all(isinstance(pair, tuple | list) for pair in padding)
    ):
        pairs = tuple(normalize_tuple(pair, 2, "padding", allow_zero=True) for pair in padding)
        return pairs
    else:
        try:
            pads = normalize_tuple(padding, 2, "padding", allow_zero=True)
        except ValueError:
            pads = None
        if pads is not None:
            return ((pads[0], pads[0]), (pads[1], pads[1]))
    raise ValueError(
        '`padding` must be "valid", "same", a non-negative int or a tuple of 2 non-negative '
        f"ints. Received: padding={padding!r}"
    )


def _pads(padding, size, kernel, stride, dilation, axis):
    """(pad_before, pad_total) along one spatial axis."""
    if padding == "valid":
        return 0, 0
    if padding == "same":
        # TensorFlow's rule: the output has ceil(n / s) positions, odd padding goes after.
        _, total = same_padding(size, kernel, stride, dilation)
        total = total if isinstance(total, int) else tf.maximum(total, 0)
        return total // 2, total
    before, after = padding[axis]
    return before, before + after


def _geometry(inputs, offsets, mask, config):
    """Where every (position, tap, group) samples, and with which bilinear weights.

    Samples are numbered m = (((b * H_out + i) * W_out + j) * K + k) * G + g. Returns a dict
    of flat tensors: `index` (M,) int32, the corner-table row of each sample; `weights`
    (M, 4), the bilinear weights of its four corners times the mask (0 outside the image);
    and what the gradient needs: `frac_y`, `frac_x`, `scale` (the mask, 0 outside) and
    `inside`, each (M,). Tensors stay at rank <= 5 so that TFLite's builtin kernels run
    them.
    """
    (kh, kw), (sh, sw), padding, (dh, dw), groups = config
    taps = kh * kw
    batch = tf.shape(inputs)[0]
    height, width = _static_or_dynamic(inputs, 1), _static_or_dynamic(inputs, 2)
    out_h, out_w = _static_or_dynamic(offsets, 1), _static_or_dynamic(offsets, 2)
    pad_top, _ = _pads(padding, height, kh, sh, dh, 0)
    pad_left, _ = _pads(padding, width, kw, sw, dw, 1)

    # Positions (B * H_out, W_out, K, G) in input pixel coordinates, in float32 (or float64)
    # even under mixed precision: a float16 position is off by up to 1/32 pixel at 64.
    compute = offsets.dtype if offsets.dtype in (tf.float32, tf.float64) else tf.float32
    offsets = tf.reshape(tf.cast(offsets, compute), [-1, out_w, groups, taps, 2])
    offsets = tf.transpose(offsets, [0, 1, 3, 2, 4])  # (B * H_out, W_out, K, G, 2)
    offset_y, offset_x = tf.unstack(offsets, axis=4)
    tap_y = tf.constant([(k // kw) * dh for k in range(taps)], compute)
    tap_x = tf.constant([(k % kw) * dw for k in range(taps)], compute)
    base_y = tf.cast(tf.range(out_h) * sh - pad_top, compute)[:, None] + tap_y  # (H_out, K)
    base_x = tf.cast(tf.range(out_w) * sw - pad_left, compute)[:, None] + tap_x  # (W_out, K)
    base_y = tf.reshape(tf.tile(base_y, [batch, 1]), [-1, 1, taps, 1])
    pos_y = base_y + offset_y
    pos_x = tf.reshape(base_x, [1, -1, taps, 1]) + offset_x

    floor_y, floor_x = tf.floor(pos_y), tf.floor(pos_x)
    height_f, width_f = tf.cast(height, compute), tf.cast(width, compute)
    inside = (pos_y > -1.0) & (pos_y < height_f) & (pos_x > -1.0) & (pos_x < width_f)
    # Outside samples (also non-finite offsets) get fraction 0, so no NaN reaches a weight.
    zero = tf.zeros_like(pos_y)
    frac_y = tf.where(inside, pos_y - floor_y, zero)
    frac_x = tf.where(inside, pos_x - floor_x, zero)
    # Top-left corner in the padded image, clipped so that outside samples (weight 0) and
    # non-finite offsets still index inside the table.
    row = tf.clip_by_value(tf.cast(tf.where(inside, floor_y, -1.0), tf.int32), -1, height - 1)
    col = tf.clip_by_value(tf.cast(tf.where(inside, floor_x, -1.0), tf.int32), -1, width - 1)
    image = tf.reshape(tf.repeat(tf.range(batch), out_h), [-1, 1, 1, 1])
    group = tf.reshape(tf.range(groups), [1, 1, 1, groups])
    index = ((image * (height + 1) + row + 1) * (width + 1) + col + 1) * groups + group

    scale = tf.where(inside, tf.ones_like(pos_y), zero)
    if mask is not None:
        mask = tf.reshape(tf.cast(mask, compute), [-1, out_w, groups, taps])
        scale = tf.where(inside, tf.transpose(mask, [0, 1, 3, 2]), zero)
    flat = [tf.reshape(t, [-1]) for t in (index, frac_y, frac_x, scale, inside)]
    index, frac_y, frac_x, scale, inside = flat
    weights = _bilinear_weights(frac_y, frac_x) * scale[:, None]
    return {
        "index": index,
        "weights": weights,
        "frac_y": frac_y,
        "frac_x": frac_x,
        "scale": scale,
        "inside": inside,
    }


def _bilinear_weights(frac_y, frac_x):
    """Weights (M, 4) of the corners top-left, top-right, bottom-left, bottom-right."""
    return tf.stack(
        [
            (1.0 - frac_y) * (1.0 - frac_x),
            (1.0 - frac_y) * frac_x,
            frac_y * (1.0 - frac_x),
            frac_y * frac_x,
        ],
        axis=1,
    )


def _corner_table(inputs, groups):
    """2x2 neighbourhoods of the zero-padded input as rows of a (rows, 4 * C / G) table.

    Row ((b * (H + 1) + r) * (W + 1) + c) * G + g holds, for the channels of group g, the
    padded pixels (r, c), (r, c + 1), (r + 1, c) and (r + 1, c + 1): the four bilinear
    corners of any sample whose top-left corner is input pixel (r - 1, c - 1).
    """
    width = _static_or_dynamic(inputs, 2)
    group_channels = inputs.shape[3] // groups
    padded = tf.pad(inputs, [[0, 0], [1, 1], [1, 1], [0, 0]])
    corners = [padded[:, :-1, :-1], padded[:, :-1, 1:], padded[:, 1:, :-1], padded[:, 1:, 1:]]
    corners = [tf.reshape(c, [-1, width + 1, groups, group_channels]) for c in corners]
    return tf.reshape(tf.stack(corners, axis=3), [-1, 4 * group_channels])


def _gather_corners(inputs, index, groups):
    """The four corners of every sample, (M, 4, C / G)."""
    neighbours = tf.gather(_corner_table(inputs, groups), index)
    return tf.reshape(neighbours, [-1, 4, inputs.shape[3] // groups])


def _sample_forward(inputs, offsets, mask, config):
    """Bilinear samples (M, C / G), one row per (position, tap, group), and the sampling
    geometry.

    The samples stay flat here: reshaped to the columns (B, H_out, W_out, K * C) inside the
    XLA-compiled function, the reshape was fused into the gather with per-element index
    arithmetic and took 3-4x the time of the whole sampling (64 channels); outside it is
    free.
    """
    geometry = _geometry(inputs, offsets, mask, config)
    neighbours = _gather_corners(inputs, geometry["index"], config[4])
    weights = tf.expand_dims(tf.cast(geometry["weights"], inputs.dtype), 2)
    return tf.reduce_sum(neighbours * weights, axis=1), geometry


def _dot_per_corner(neighbours, grad):
    """`sum_c neighbours[m, f, c] * grad[m, 0, c]`, (M, 4).

    A sum over the minor axis in eight-wide partial sums first: XLA on CPU vectorizes a
    reduction over a major axis, and this ran 3x faster than one sum over C (64 channels).
    """
    channels = neighbours.shape[2]
    lanes = math.gcd(channels, 8)
    partial = tf.reduce_sum(
        tf.reshape(neighbours, [-1, 4, channels // lanes, lanes])
        * tf.reshape(grad, [-1, 1, channels // lanes, lanes]),
        axis=2,
    )
    return tf.reduce_sum(partial, axis=2)


def _sample_backward(
    inputs, offsets, samples_gradient, geometry, with_mask, offsets_dtype, mask_dtype, config
):
    """Gradients of the columns with respect to the input, the offsets and the mask.

    Per sample, with g the column gradient and n_f the four corners (f = 00, 01, 10, 11):
    the input receives w_f * g at corner f (the transpose of the gather: a scatter-add into
    the corner table, then the table's four corner slots are added back onto the pixels);
    the offsets receive the derivative of the bilinear weights, e.g. for dy
    ((n_10 - n_00) (1 - fx) + (n_11 - n_01) fx) . g times mask; the mask receives the
    unmasked bilinear sample . g. Outside the image all three are 0.
    """
    (kh, kw), _, _, _, groups = config
    taps = kh * kw
    index = geometry["index"]
    group_channels = inputs.shape[3] // groups
    out_shape = tf.shape(offsets)
    grad = tf.reshape(samples_gradient, [-1, 1, group_channels])  # (M, 1, Cg)
    neighbours = _gather_corners(inputs, index, groups)
    compute = geometry["frac_y"].dtype
    # d loss / d (bilinear weight of each corner), before the mask and inside factor.
    raw = tf.cast(_dot_per_corner(neighbours, grad), compute)  # (M, 4)
    corner_gradient = raw * geometry["scale"][:, None]

    # (M, 4, Cg) summed into (rows, 4, Cg). Flattened to (M, 4 * Cg) first, XLA wrote the
    # weighted rows through a layout copy: 6.3 ms of core time per step instead of 4.4 for
    # the multiply alone ((8, 32, 32, 64), profiled).
    contributions = tf.expand_dims(tf.cast(geometry["weights"], grad.dtype), 2) * grad
    batch = tf.shape(inputs)[0]
    height, width = _static_or_dynamic(inputs, 1), _static_or_dynamic(inputs, 2)
    rows = batch * (height + 1) * (width + 1) * groups
    table_gradient = tf.math.unsorted_segment_sum(contributions, index, rows)
    inputs_gradient = _table_to_input(table_gradient, inputs, groups)

    frac_y, frac_x = geometry["frac_y"], geometry["frac_x"]
    g00, g01, g10, g11 = tf.unstack(corner_gradient, axis=1)
    grad_y = (g10 - g00) * (1.0 - frac_x) + (g11 - g01) * frac_x
    grad_x = (g01 - g00) * (1.0 - frac_y) + (g11 - g10) * frac_y
    per_position = [out_shape[0] * out_shape[1], out_shape[2], taps, groups]
    offsets_gradient = tf.stack(
        [tf.reshape(grad_y, per_position), tf.reshape(grad_x, per_position)], axis=4
    )
    offsets_gradient = tf.transpose(offsets_gradient, [0, 1, 3, 2, 4])  # (.., G, K, 2)
    offsets_gradient = tf.reshape(
        offsets_gradient, [out_shape[0], out_shape[1], out_shape[2], 2 * groups * taps]
    )
    offsets_gradient = tf.cast(offsets_gradient, offsets_dtype)
    mask_gradient = None
    if with_mask:
        inside = tf.cast(geometry["inside"], compute)
        per_tap = tf.reduce_sum(raw * _bilinear_weights(frac_y, frac_x), axis=1) * inside
        mask_gradient = tf.transpose(tf.reshape(per_tap, per_position), [0, 1, 3, 2])
        mask_gradient = tf.reshape(
            mask_gradient, [out_shape[0], out_shape[1], out_shape[2], groups * taps]
        )
        mask_gradient = tf.cast(mask_gradient, mask_dtype)
    return inputs_gradient, offsets_gradient, mask_gradient


def _table_to_input(table_gradient, like, groups):
    """Adds the corner-table gradient back onto the input pixels (the table's transpose)."""
    batch = tf.shape(like)[0]
    height, width = _static_or_dynamic(like, 1), _static_or_dynamic(like, 2)
    channels = like.shape[3]
    table = tf.reshape(table_gradient, [-1, width + 1, groups, 4, channels // groups])
    t00, t01, t10, t11 = (
        tf.reshape(t, [batch, height + 1, width + 1, channels]) for t in tf.unstack(table, axis=3)
    )
    none = [0, 0]
    padded = (
        tf.pad(t00, [none, [0, 1], [0, 1], none])
        + tf.pad(t01, [none, [0, 1], [1, 0], none])
        + tf.pad(t10, [none, [1, 0], [0, 1], none])
        + tf.pad(t11, [none, [1, 0], [1, 0], none])
    )
    return padded[:, 1:-1, 1:-1]


@functools.cache
def _kernels(config, with_mask, jit_compile, offsets_dtype, mask_dtype):
    """The sampling and its gradient as (optionally XLA-compiled) functions."""

    def forward(inputs, offsets, mask):
        return _sample_forward(inputs, offsets, mask if with_mask else None, config)

    def backward(inputs, offsets, samples_gradient, geometry):
        return _sample_backward(
            inputs,
            offsets,
            samples_gradient,
            geometry,
            with_mask,
            offsets_dtype,
            mask_dtype,
            config,
        )

    if not jit_compile:
        return forward, backward
    return (
        tf.function(forward, jit_compile=True, autograph=False),
        tf.function(backward, jit_compile=True, autograph=False),
    )


# Weighted rows (the scatter-add's input) per part of the backward kernel: parts of this size
# or one image (not smaller) stay in cache between the multiply that writes them and the
# scatter that reads them. Measured on 2 cores (backward kernel, ms): (8, 32, 32, 64) 2 parts
# 12.5, 8 (one image, 9.4 MB each) 11.4; (64, 16, 16, 32) 2 parts 14.3, 32 (2.4 MB) 12.1,
# 64 (1.2 MB) 13.1; (128, 8, 8, 16) 2 parts 4.9, 8 (2.4 MB) 4.2, 128 (0.15 MB) 8.3.
_PART_BYTES = 5 * 2**19
# With a dynamic batch the number of parts is fixed when the graph is built: this many (at
# least one per core; parts beyond the batch are empty). (None, 32, 32, 64) with 8 images,
# forward+backward in ms: 2 parts 25.19 / 24.94, 8 parts 22.35 / 22.22 (two runs).
_DYNAMIC_PARTS = 8


def _parallel_parts(batch, image_bytes=None):
    """How many parts the backward kernel splits the batch into.

    At least one per CPU core that TensorFlow may run ops on concurrently; with a static
    batch, also as many as keep each part's weighted rows (`image_bytes` per image) near
    `_PART_BYTES`, at most one per image. A dynamic batch (None) gets `_DYNAMIC_PARTS` when
    the image size is static (`image_bytes` given), else one part per core.
    """
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:  # pragma: no cover - macOS and Windows
        cores = os.cpu_count() or 1
    threads = tf.config.threading.get_inter_op_parallelism_threads()
    parts = min(threads, cores) if threads > 0 else cores
    if batch is None:
        return max(1, parts, _DYNAMIC_PARTS if image_bytes else 1)
    if image_bytes:
        images_per_part = max(1, _PART_BYTES // image_bytes)
        parts = max(parts, -(-batch // images_per_part))
    return max(1, min(parts, batch))


def _backward_by_images(backward, parts, inputs, offsets, samples_gradient, geometry, config):
    """The backward kernel run on `parts` slices of the batch, concatenated.

    XLA's CPU scatter-add (the input gradient) runs on one core; independent kernel calls
    on disjoint images run side by side. Samples are numbered image by image, so the
    slices of the flat geometry are contiguous, and each image's samples read and write
    only its own rows of the corner table (the index is shifted by the part's first
    image). A part may hold no image (dynamic batch smaller than `parts`).
    """
    if parts == 1:
        return backward(inputs, offsets, samples_gradient, geometry)
    (kh, kw), _, _, _, groups = config
    batch = _static_or_dynamic(inputs, 0)
    height, width = _static_or_dynamic(inputs, 1), _static_or_dynamic(inputs, 2)
    out_h, out_w = _static_or_dynamic(offsets, 1), _static_or_dynamic(offsets, 2)
    samples_per_image = out_h * out_w * kh * kw * groups
    rows_per_image = (height + 1) * (width + 1) * groups
    bounds = [batch * i // parts for i in range(parts + 1)]
    results = []
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        first, last = start * samples_per_image, stop * samples_per_image
        part = {name: value[first:last] for name, value in geometry.items()}
        part["index"] = part["index"] - start * rows_per_image
        part_gradient = samples_gradient[first:last]
        results.append(backward(inputs[start:stop], offsets[start:stop], part_gradient, part))
    inputs_gradient, offsets_gradient, mask_gradient = (
        None if values[0] is None else tf.concat(values, 0) for values in zip(*results, strict=True)
    )
    return inputs_gradient, offsets_gradient, mask_gradient


def _image_rows_bytes(inputs, offsets, config):
    """Bytes of one image's weighted rows in the backward kernel (out_h * out_w * kh * kw
    samples of 4 corners x C_in values), or None when a size is not static."""
    (kh, kw), *_ = config
    out_h, out_w, channels = offsets.shape[1], offsets.shape[2], inputs.shape[3]
    if None in (out_h, out_w, channels):
        return None
    return out_h * out_w * kh * kw * 4 * channels * inputs.dtype.size


def _sample(inputs, offsets, mask, config, jit_compile):
    """Bilinear samples (M, C / G) with an explicit gradient for inputs, offsets and mask."""
    with_mask = mask is not None
    if mask is None:
        mask = tf.zeros([0], offsets.dtype)  # a placeholder: custom_gradient needs tensors
    forward, backward = _kernels(config, with_mask, jit_compile, offsets.dtype, mask.dtype)

    @tf.custom_gradient
    def sample(inputs, offsets, mask):
        samples, geometry = forward(inputs, offsets, mask)

        def gradient(samples_gradient):
            # Only XLA's scatter-add is single-threaded; TensorFlow's own (jit_compile=False)
            # already uses every core, so that path runs in one call.
            parts = 1
            if jit_compile:
                image_bytes = _image_rows_bytes(inputs, offsets, config)
                parts = _parallel_parts(inputs.shape[0], image_bytes)
            inputs_gradient, offsets_gradient, mask_gradient = _backward_by_images(
                backward, parts, inputs, offsets, samples_gradient, geometry, config
            )
            if mask_gradient is None:
                mask_gradient = tf.zeros_like(mask)
            return inputs_gradient, offsets_gradient, mask_gradient

        return samples, gradient

    return sample(inputs, offsets, mask)


def deform_conv2d(
    inputs,
    offsets,
    kernel,
    bias=None,
    mask=None,
    strides=1,
    padding="valid",
    dilation_rate=1,
    jit_compile=None,
):
    """Deformable 2D convolution (DCNv1; DCNv2 when `mask` is given), NHWC.

    See the module docstring for the formula and the offset / mask channel layout, which is
    `torchvision.ops.deform_conv2d`'s with channels last.

    Args:
        inputs: float tensor `(B, H, W, C_in)`.
        offsets: float tensor `(B, H_out, W_out, 2 * G * kh * kw)`; `G`, the number of
            offset groups, is read from its channel count and must divide `C_in`.
        kernel: float tensor `(kh, kw, C_in, C_out)` (Keras's HWIO layout).
        bias: None or float tensor `(C_out,)`.
        mask: None (DCNv1) or float tensor `(B, H_out, W_out, G * kh * kw)` (DCNv2).
        strides: int or tuple of 2 ints. Defaults to `1`.
        padding: `"valid"`, `"same"` (TensorFlow's rule: extra padding at the bottom/right),
            an int or a tuple `(pad_h, pad_w)` of zeros added on both sides, as
            torchvision's `padding`, or `((top, bottom), (left, right))`. Defaults to
            `"valid"`.
        dilation_rate: int or tuple of 2 ints. Defaults to `1`.
        jit_compile: None or bool. Whether the sampling runs as an XLA-compiled function.
            None (the default) compiles, which measured faster on CPU.

    Returns:
        Tensor `(B, H_out, W_out, C_out)` with
        `H_out = floor((H + pad_h_total - dh * (kh - 1) - 1) / sh) + 1` (and `ceil(H / sh)`
        for `"same"`).

    Raises:
        ValueError: for inputs of the wrong rank, a kernel whose input channels differ from
            the input's, offsets or a mask whose channel count or spatial size does not fit,
            or an offset-group count that does not divide `C_in`.

    Example:
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(1, 5, 5, 2)).astype("float32")
    >>> w = np.random.default_rng(1).normal(size=(3, 3, 2, 4)).astype("float32")
    >>> zero = np.zeros((1, 3, 3, 18), "float32")
    >>> y = deform_conv2d(x, zero, w)
    >>> plain = tf.nn.conv2d(x, w, 1, "VALID")
    >>> bool(np.allclose(y, plain, atol=1e-5))
    True
    """
    inputs = tf.convert_to_tensor(inputs)
    offsets = tf.convert_to_tensor(offsets)
    kernel = tf.convert_to_tensor(kernel)
    bias = None if bias is None else tf.convert_to_tensor(bias)
    mask = None if mask is None else tf.convert_to_tensor(mask)
    strides = normalize_tuple(strides, 2, "strides")
    dilation_rate = normalize_tuple(dilation_rate, 2, "dilation_rate")
    kernel_size = tuple(kernel.shape[:2])
    padding = normalize_deform_padding(padding)
    groups = _check_shapes(inputs, offsets, kernel, bias, mask, strides, padding, dilation_rate)
    config = (kernel_size, strides, padding, dilation_rate, groups)
    samples = _sample(inputs, offsets, mask, config, jit_compile is not False)
    # One row of kh * kw * C_in samples per output position (the im2col columns).
    columns = tf.reshape(samples, [-1, kernel_size[0] * kernel_size[1] * inputs.shape[3]])
    outputs = tf.linalg.matmul(
        columns, tf.reshape(tf.cast(kernel, columns.dtype), [-1, kernel.shape[3]])
    )
    outputs = tf.reshape(outputs, tf.concat([tf.shape(offsets)[:3], [kernel.shape[3]]], 0))
    if bias is not None:
        outputs = outputs + tf.cast(bias, outputs.dtype)
    return outputs


def _check_shapes(inputs, offsets, kernel, bias, mask, strides, padding, dilation_rate):
    """Validates the argument shapes and returns the number of offset groups."""
    if inputs.shape.rank != 4:
        raise ValueError(
            f"`inputs` must have rank 4 (batch, height, width, channels). "
            f"Received: inputs.shape={inputs.shape}"
        )
    if kernel.shape.rank != 4:
        raise ValueError(
            "`kernel` must have rank 4 (kernel_height, kernel_width, in_channels, "
            f"out_channels). Received: kernel.shape={kernel.shape}"
        )
    channels = inputs.shape[3]
    if channels is None or channels != kernel.shape[2]:
        raise ValueError(
            "The kernel's input channels must equal the input's channels. "
            f"Received: inputs.shape={inputs.shape}, kernel.shape={kernel.shape}"
        )
    taps = kernel.shape[0] * kernel.shape[1]
    if offsets.shape.rank != 4 or offsets.shape[3] is None or offsets.shape[3] % (2 * taps):
        raise ValueError(
            "`offsets` must have shape (batch, out_height, out_width, 2 * offset_groups * "
            f"{taps}) for a {kernel.shape[0]}x{kernel.shape[1]} kernel. "
            f"Received: offsets.shape={offsets.shape}"
        )
    groups = offsets.shape[3] // (2 * taps)
    if channels % groups:
        raise ValueError(
            f"The number of offset groups ({groups}, from offsets.shape[-1] = "
            f"{offsets.shape[3]}) must divide the input channels ({channels})."
        )
    expected = []
    for axis in (1, 2):
        size = inputs.shape[axis]
        if size is None:
            expected.append(None)
            continue
        before, total = _pads(
            padding,
            size,
            kernel.shape[axis - 1],
            strides[axis - 1],
            dilation_rate[axis - 1],
            axis - 1,
        )
        expected.append(
            deform_output_size(
                size, kernel.shape[axis - 1], strides[axis - 1], total, dilation_rate[axis - 1]
            )
        )
    for axis, size in zip((1, 2), expected, strict=True):
        if size is not None and offsets.shape[axis] is not None and offsets.shape[axis] != size:
            raise ValueError(
                f"`offsets` must have the output's spatial size {tuple(expected)}. "
                f"Received: offsets.shape={offsets.shape}"
            )
    if mask is not None:
        mask_shape = tf.TensorShape(getattr(mask, "shape", None))
        if (
            mask_shape.rank != 4
            or mask_shape[3] != groups * taps
            or any(
                mask_shape[a] is not None
                and offsets.shape[a] is not None
                and mask_shape[a] != offsets.shape[a]
                for a in (1, 2)
            )
        ):
            raise ValueError(
                "`mask` must have shape (batch, out_height, out_width, offset_groups * "
                f"{taps}) = (batch, {offsets.shape[1]}, {offsets.shape[2]}, {groups * taps}). "
                f"Received: mask.shape={mask_shape}"
            )
    if bias is not None:
        bias_shape = tf.TensorShape(getattr(bias, "shape", None))
        if bias_shape != tf.TensorShape([kernel.shape[3]]):
            raise ValueError(
                f"`bias` must have shape ({kernel.shape[3]},). Received: bias.shape={bias_shape}"
            )
    return groups
