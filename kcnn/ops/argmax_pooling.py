"""Max-pooling that also returns where each maximum came from, and its inverse, max-unpooling.

SegNet (Badrinarayanan et al. 2015, arXiv:1511.00561) stores the position of every maximum in
its encoder and puts each decoder value back at that position ("max-unpooling", first used by
Zeiler & Fergus 2014, arXiv:1311.2901, and DeconvNet, Noh et al. 2015, arXiv:1505.04366).

Index convention: the one of `tf.nn.max_pool_with_argmax(include_batch_in_index=False)`. For a
pooled value of image b, row i, column j, channel c whose maximum sat at input row y, column x,
the index is the flat position inside that image, `(y * W + x) * C + c`, where W and C are the
input width and channel count. Indices refer to the unpadded input.

Why not `tf.nn.max_pool_with_argmax` and `tf.scatter_nd`: the first has no XLA kernel and
becomes a Flex op in TFLite, and tensorflow-addons' `MaxUnpooling2D` built on the pair became a
custom TFLite op that the stock interpreter cannot run. Here both directions use only strided
slices, comparisons, `where`, `stack`, `pad` and `reshape`, which XLA compiles and TFLite runs
with builtin kernels. For a k x k window the pooling pass keeps a running maximum over the
window's strided slices and the tap (window position) it came from, so no (k*k)-times larger
stacked tensor is materialised.

Speed: as separate TensorFlow ops these chains are memory-bound (about 10x slower than
`MaxPooling2D` + `UpSampling2D` in graph mode on a CPU), so each kernel runs as its own
XLA-compiled function (one per configuration and shape), fused into one pass, also inside a
model that is not compiled with XLA. For non-overlapping windows the gradients are given
explicitly: the gradient of pooling is unpooling of the incoming gradient, and the gradient
of unpooling is a gather at the indices; both are again compiled kernels. Measured on 2 CPU
cores, (16, 128, 128, 64), graph mode: forward 1.25x and forward+backward 1.26x the time of
`MaxPooling2D` + `UpSampling2D` (bench/bench_argmax_pooling.py, bench/RESULTS.md). SavedModel
export keeps the compiled functions, and the TFLite converter inlines them into builtin ops.
"""

import functools

import tensorflow as tf

from kcnn._validation import same_padding, window_output_size


def pooled_size(size, pool, stride, padding):
    """Output length of a pooling window along one axis (TF's "valid" / "same" rules).

    Returns (output_size, padding_before). `size` may be an int or a scalar tensor.
    """
    if padding == "valid":
        return window_output_size(size, pool, stride), 0
    output, pad_total = same_padding(size, pool, stride)
    if not isinstance(pad_total, int):
        pad_total = tf.maximum(pad_total, 0)
    return output, pad_total // 2


def _static_or_dynamic(tensor, axis):
    static = tensor.shape[axis]
    return static if static is not None else tf.shape(tensor)[axis]


def _pool_kernel(inputs, pool_size, strides, padding, index_dtype):
    """Max-pools NHWC `inputs` and returns `(pooled, indices)`.

    Args:
        inputs: float tensor `(B, H, W, C)`.
        pool_size: tuple `(kh, kw)` of positive ints.
        strides: tuple `(sh, sw)` of positive ints.
        padding: `"valid"` or `"same"` (padded positions never win the max).
        index_dtype: dtype of `indices`. Defaults to `"int32"`, which TFLite's builtin
            kernels support everywhere; `"int64"` matches `tf.nn.max_pool_with_argmax`'s
            default output type.

    Returns:
        `pooled` like `inputs` with the pooled spatial size, and `indices` of the same shape
        holding `(y * W + x) * C + c` of each maximum (ties go to the first window position
        in row-major order).
    """
    (pool_h, pool_w), (stride_h, stride_w) = pool_size, strides
    height, width = _static_or_dynamic(inputs, 1), _static_or_dynamic(inputs, 2)
    channels = inputs.shape[3]
    out_h, pad_top = pooled_size(height, pool_h, stride_h, padding)
    out_w, pad_left = pooled_size(width, pool_w, stride_w, padding)
    padded = inputs
    if padding == "same":
        pad_bottom = (out_h - 1) * stride_h + pool_h - height - pad_top
        pad_right = (out_w - 1) * stride_w + pool_w - width - pad_left
        lowest = inputs.dtype.min
        paddings = [[0, 0], [pad_top, tf.maximum(pad_bottom, 0)]]
        paddings += [[pad_left, tf.maximum(pad_right, 0)], [0, 0]]
        padded = tf.pad(inputs, paddings, constant_values=lowest)

    best, best_tap = None, None
    for tap in range(pool_h * pool_w):
        dy, dx = divmod(tap, pool_w)
        window = padded[
            :,
            dy : dy + (out_h - 1) * stride_h + 1 : stride_h,
            dx : dx + (out_w - 1) * stride_w + 1 : stride_w,
            :,
        ]
        if best is None:
            best, best_tap = window, tf.zeros_like(window, dtype=index_dtype)
            continue
        better = window > best
        best = tf.where(better, window, best)
        best_tap = tf.where(better, tf.constant(tap, index_dtype), best_tap)

    # Flat index of the winning tap: ((row0 + dy) * W + col0 + dx) * C + c, with
    # dy = tap // kw and dx = tap % kw.
    rows = tf.cast(tf.range(out_h) * stride_h - pad_top, index_dtype)[:, None, None]
    cols = tf.cast(tf.range(out_w) * stride_w - pad_left, index_dtype)[None, :, None]
    channel = tf.range(channels, dtype=index_dtype)[None, None, :]
    width_i = tf.cast(width, index_dtype)
    base = (rows * width_i + cols) * channels + channel
    tap_dy = best_tap // pool_w if pool_w > 1 else best_tap
    tap_dx = best_tap - tap_dy * pool_w
    indices = base + (tap_dy * width_i + tap_dx) * channels
    return best, indices


def unpooled_size(pooled, pool, stride, padding):
    """Default pre-pooling length along one axis: the largest one that pools to `pooled`."""
    if padding == "valid":
        return (pooled - 1) * stride + pool
    return pooled * stride


def _unpool_kernel(pooled, indices, pool_size, strides, padding, output_size, like):
    """Puts each pooled value back at its recorded input position; zeros elsewhere.

    Args:
        pooled: float tensor `(B, h, w, C)`.
        indices: integer tensor of the same shape, as returned by `max_pool_with_argmax`.
        pool_size: tuple `(kh, kw)` of the pooling that produced `indices`.
        strides: tuple `(sh, sw)` of that pooling.
        padding: `"valid"` or `"same"`, that pooling's padding.
        output_size: None or tuple `(H, W)` of ints: the pre-pooling size.
        like: None or a tensor `(B, H, W, ...)` of the pre-pooling size; wins over
            `output_size`. With neither, the size is the largest that pools to `(h, w)`
            (`unpooled_size`). Sizes are read inside the function, so they are compile-time
            constants under XLA.

    Returns:
        Tensor `(B, H, W, C)`.

    The tap each index points at inside its own window is recovered by subtracting the
    window's base index, and compared with each tap's offset (no integer division). For
    non-overlapping windows (stride >= pool size, SegNet's 2x2 / 2) each tap's values form one
    plane and the planes are interleaved back into the image with `stack` and `reshape`.
    Overlapping windows may pick the same input position more than once (always with the same
    value); there each tap's plane is spread to its positions and written over the previous
    ones with `where`, which keeps values exact. An index outside its own window (which
    `max_pool_with_argmax` never produces) contributes nothing.
    """
    (pool_h, pool_w), (stride_h, stride_w) = pool_size, strides
    out_h, out_w = _static_or_dynamic(pooled, 1), _static_or_dynamic(pooled, 2)
    if like is not None:
        height, width = _static_or_dynamic(like, 1), _static_or_dynamic(like, 2)
    elif output_size is not None:
        height, width = output_size
    else:
        height = unpooled_size(out_h, pool_h, stride_h, padding)
        width = unpooled_size(out_w, pool_w, stride_w, padding)
    channels = pooled.shape[3]
    _, pad_top = pooled_size(height, pool_h, stride_h, padding)
    _, pad_left = pooled_size(width, pool_w, stride_w, padding)
    index_dtype = indices.dtype
    width_i = tf.cast(width, index_dtype)
    rows = tf.cast(tf.range(out_h) * stride_h - pad_top, index_dtype)[:, None, None]
    cols = tf.cast(tf.range(out_w) * stride_w - pad_left, index_dtype)[None, :, None]
    channel = tf.range(channels, dtype=index_dtype)[None, None, :]
    offset = indices - (rows * width_i + cols) * channels - channel  # (dy * W + dx) * C

    def selects(dy, dx):
        return tf.equal(offset, (dy * width_i + dx) * channels)

    zeros = tf.zeros_like(pooled)
    if stride_h >= pool_h and stride_w >= pool_w:
        planes = {
            (dy, dx): tf.where(selects(dy, dx), pooled, zeros)
            for dy in range(pool_h)
            for dx in range(pool_w)
        }
        full = _interleave(planes, stride_h, stride_w, zeros)
        return _fit(full, pad_top, pad_left, height, width)

    output = None
    for dy in range(pool_h):
        for dx in range(pool_w):
            chosen = selects(dy, dx)

            def spread(plane, dy=dy, dx=dx):  # rows i * sh + dy - pad_top, likewise columns
                laid_out = _interleave({(0, 0): plane}, stride_h, stride_w, zeros)
                return _fit(laid_out, pad_top - dy, pad_left - dx, height, width)

            values = spread(tf.where(chosen, pooled, zeros))
            if output is None:
                output = values
            else:
                output = tf.where(spread(tf.cast(chosen, pooled.dtype)) > 0, values, output)
    return output


def _interleave(planes, stride_h, stride_w, zeros):
    """Lays planes `(B, h, w, C)` keyed by `(dy, dx)` out as `(B, h * sh, w * sw, C)`.

    Plane `(dy, dx)` lands at rows `i * sh + dy` and columns `j * sw + dx`; missing keys are
    zeros.
    """
    rows = []
    for dy in range(stride_h):
        row = [planes.get((dy, dx), zeros) for dx in range(stride_w)]
        rows.append(tf.stack(row, axis=3))  # (B, h, w, sw, C)
    grid = tf.stack(rows, axis=2)  # (B, h, sh, w, sw, C)
    shape = tf.shape(zeros)
    return tf.reshape(grid, [-1, shape[1] * stride_h, shape[2] * stride_w, zeros.shape[3]])


def _fit(full, top, left, height, width):
    """Returns rows `top .. top + height` and columns `left .. left + width` of `full`.

    A negative `top` / `left` shifts the content down / right; rows and columns beyond
    `full` are zeros.
    """
    pad_before_h, pad_before_w = _clip_negative(top), _clip_negative(left)
    top, left = top + pad_before_h, left + pad_before_w
    extra_h = height + top - _static_or_dynamic(full, 1)
    extra_w = width + left - _static_or_dynamic(full, 2)
    pads = [pad_before_h, extra_h, pad_before_w, extra_w]
    if all(isinstance(pad, int) for pad in pads):
        pads = [max(pad, 0) for pad in pads]
    else:
        pads = [tf.maximum(pad, 0) for pad in pads]
    if not all(isinstance(pad, int) and pad == 0 for pad in pads):
        full = tf.pad(full, [[0, 0], pads[:2], pads[2:], [0, 0]])
    return full[:, top : top + height, left : left + width, :]


def _clip_negative(value):
    """`-value` where `value` is negative, else 0 (for ints and scalar tensors)."""
    if isinstance(value, int):
        return max(-value, 0)
    return tf.maximum(-value, 0)


def _gather_kernel(values, indices):
    """`values` `(B, H, W, C)` read at the flat per-image `indices` `(B, h, w, C)`."""
    batch = tf.shape(values)[0]
    flat = tf.reshape(values, [batch, -1])
    picked = tf.gather(flat, tf.reshape(indices, [batch, -1]), batch_dims=1)
    return tf.reshape(picked, tf.shape(indices))


@functools.cache
def _compiled_pool(pool_size, strides, padding, index_dtype):
    def pool(inputs):
        return _pool_kernel(inputs, pool_size, strides, padding, index_dtype)

    return tf.function(pool, jit_compile=True, autograph=False)


@functools.cache
def _compiled_unpool(pool_size, strides, padding, output_size):
    def unpool(pooled, indices, like):
        return _unpool_kernel(pooled, indices, pool_size, strides, padding, output_size, like)

    return tf.function(unpool, jit_compile=True, autograph=False)


_compiled_gather = tf.function(_gather_kernel, jit_compile=True, autograph=False)


def _non_overlapping(pool_size, strides):
    return strides[0] >= pool_size[0] and strides[1] >= pool_size[1]


def max_pool_with_argmax(
    inputs, pool_size=(2, 2), strides=None, padding="valid", index_dtype="int32"
):
    """Max-pools NHWC `inputs` and returns `(pooled, indices)`.

    Args:
        inputs: float tensor `(B, H, W, C)`.
        pool_size: tuple `(kh, kw)` of positive ints. Defaults to `(2, 2)`.
        strides: tuple `(sh, sw)` of positive ints, or None for `pool_size`.
        padding: `"valid"` or `"same"` (padded positions never win the max).
        index_dtype: dtype of `indices`. Defaults to `"int32"`, which TFLite's builtin
            kernels support everywhere; `"int64"` matches `tf.nn.max_pool_with_argmax`'s
            default output type.

    Returns:
        `pooled` like `inputs` with the pooled spatial size, and `indices` of the same shape
        holding `(y * W + x) * C + c` of each maximum (ties go to the first window position
        in row-major order).

    Example:
    >>> import numpy as np
    >>> x = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)
    >>> pooled, indices = max_pool_with_argmax(x)
    >>> np.asarray(indices)[0, :, :, 0].tolist()
    [[5, 7], [13, 15]]
    """
    pool_size, strides = tuple(pool_size), tuple(strides or pool_size)
    inputs = tf.convert_to_tensor(inputs)
    kernel = _compiled_pool(pool_size, strides, padding, tf.as_dtype(index_dtype).name)
    if not _non_overlapping(pool_size, strides):
        return kernel(inputs)

    @tf.custom_gradient
    def pool(inputs):
        pooled, indices = kernel(inputs)

        def gradient(pooled_gradient, indices_gradient=None):
            # Pooling routes each window's gradient to its maximum: that is unpooling.
            unpool = _compiled_unpool(pool_size, strides, padding, None)
            return unpool(pooled_gradient, indices, inputs)

        return (pooled, indices), gradient

    return pool(inputs)


def max_unpool(
    pooled, indices, pool_size=(2, 2), strides=None, padding="valid", output_size=None, like=None
):
    """Puts each pooled value back at its recorded input position; zeros elsewhere.

    Args:
        pooled: float tensor `(B, h, w, C)`.
        indices: integer tensor of the same shape, as returned by `max_pool_with_argmax`.
        pool_size: tuple `(kh, kw)` of the pooling that produced `indices`. Defaults to
            `(2, 2)`.
        strides: tuple `(sh, sw)` of that pooling, or None for `pool_size`.
        padding: `"valid"` or `"same"`, that pooling's padding.
        output_size: None or tuple `(H, W)` of ints: the pre-pooling size.
        like: None or a tensor `(B, H, W, ...)` of the pre-pooling size; wins over
            `output_size`. With neither, the size is the largest that pools to `(h, w)`.

    Returns:
        Tensor `(B, H, W, C)`.

    Example:
    >>> import numpy as np
    >>> x = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)
    >>> pooled, indices = max_pool_with_argmax(x)
    >>> np.asarray(max_unpool(pooled, indices))[0, 1, :, 0].tolist()
    [0.0, 5.0, 0.0, 7.0]
    """
    pool_size, strides = tuple(pool_size), tuple(strides or pool_size)
    output_size = None if output_size is None else tuple(int(size) for size in output_size)
    pooled, indices = tf.convert_to_tensor(pooled), tf.convert_to_tensor(indices)
    kernel = _compiled_unpool(pool_size, strides, padding, output_size)
    if not _non_overlapping(pool_size, strides):
        return kernel(pooled, indices, like)

    @tf.custom_gradient
    def unpool(pooled):
        def gradient(output_gradient):
            # Each pooled value landed at exactly one position: read the gradient there.
            return _compiled_gather(output_gradient, indices)

        return kernel(pooled, indices, like), gradient

    return unpool(pooled)
