"""RoIAlign (He et al. 2017), single-level and on a feature pyramid (Lin et al. 2017), NHWC.

He, Gkioxari, Dollar & Girshick, "Mask R-CNN", ICCV 2017 (arXiv:1703.06870), section 3: each
box is divided into `out_h x out_w` bins with no rounding of its coordinates; each bin is
sampled at `sampling_ratio x sampling_ratio` regularly spaced points, each point is bilinearly
interpolated from the four nearest feature pixels, and the bin's value is their average.

Box convention, torchvision's `roi_align`: `boxes[k] = (x1, y1, x2, y2)` in input-image pixels,
`box_indices[k]` the image of the batch the box lies on. A box is scaled by `spatial_scale` (the
feature map's size over the image's, e.g. 1/16 at stride 16) and, with `aligned=True`, shifted
by -0.5 pixel so that pixel centres sit at integer + 0.5, as Detectron2 and torchvision's
`roi_align(aligned=True)` do; the original Mask R-CNN code (`aligned=False`) did not shift and
forced every box to be at least 1 x 1 feature pixel. For output bin (i, j) and grid point
(a, b), the sample sits at

    y = y1' + i * bin_h + (a + 0.5) * bin_h / sampling_ratio,  bin_h = (y2' - y1') / out_h

(the same for x), where y1', y2' are the scaled (and shifted) box coordinates.

Boundary rules, those of torchvision's CPU and CUDA kernels (and Detectron2's): a sample with
y < -1 or y > H (or x < -1 or x > W), or a non-finite coordinate, contributes 0 but still
counts in the average; otherwise y is raised to 0 if negative, and a y at or past row H - 1
reads row H - 1 alone (the same for x). So a box running off the image is averaged over fewer
live samples, and samples within one pixel outside the border read the border.

How it is computed: the sample coordinates are separable (y depends on the box and the output
row only, x on the box and the output column), so the bilinear weights and neighbours are
computed per axis and combined by broadcasting. The 2 x 2 neighbourhoods of the features are
laid side by side as rows of a `(N * H * W, 4 * C)` table (the map padded by one zero row and
column at the bottom and right, which always get weight 0), so one gather of one row reads the
four neighbours of a sample. Each bin is then one `(1, 4 * s**2) x (4 * s**2, C)` matrix
product of its weights (the average's 1 / s**2 folded in, s = sampling_ratio) with its
gathered rows. On 2 CPU cores, for features (2, 64, 64, 256) and 512 boxes of 7 x 7 bins, this
measured 2.2x (graph) and 3.7x (XLA) faster forward, and 1.3x and 2.7x faster forward+backward,
than four gathers of single pixels summed with broadcast multiplications (bench/RESULTS.md).
The cost is the gathered rows, `K * out_h * out_w * s**2 * 4 * C` values, and the table, four
copies of the features. Every op (pad, slices, stack, gather, floor, comparisons, `where`,
broadcasting arithmetic, batched matrix product, reshape) is a TFLite builtin and has an XLA
kernel; the shapes are static except the number of boxes K and, optionally, the batch and map
sizes. `tf.image.crop_and_resize` is not used: it is a Flex op
in TFLite and has neither the sampling grid nor the boundary rules above.

Gradients: with respect to the features, exact (the transpose of the gather, a scatter-add of
the weighted output gradient onto the four neighbours of each sample). With respect to the
boxes, the derivative of the formula above taken piecewise: the bilinear weights move with the
sample coordinates, a clamped coordinate (below 0 or at the last row or column) has derivative
0, and crossing a pixel or the -1 / H limit is a jump whose derivative is not counted.
torchvision gives the boxes no gradient; Mask R-CNN does not back-propagate into the boxes
either, so pass `ops.stop_gradient(boxes)` to match. `box_indices` is an integer tensor and
has no gradient.

Feature pyramid (Lin, Dollar, Girshick, He, Hariharan & Belongie, "Feature Pyramid Networks for
Object Detection", CVPR 2017, arXiv:1612.03144, eq. 1): a box of width w and height h in
image pixels is read from level `k = floor(k0 + log2(sqrt(w * h) / 224))`, clamped to the
levels given, where level Pk has stride 2**k. `multilevel_roi_align` puts the neighbourhoods of
every level in one table and gathers each box's samples from its own level's rows, so its cost
is that of one single-level RoIAlign on all boxes plus building the table of every level, not
one RoIAlign per level (computing every level for every box and selecting would cost
`len(levels)` times as much).
"""

import math

import tensorflow as tf
from keras import backend, ops

from kcnn._validation import check_positive_int, is_int, is_number, normalize_tuple

# `torchvision.ops.roi_align(aligned=True)` and Detectron2 shift boxes by half a pixel.
HALF_PIXEL = 0.5


def roi_align(
    features, boxes, box_indices, output_size, spatial_scale=1.0, sampling_ratio=2, aligned=True
):
    """RoIAlign: a fixed-size feature map for every box, by averaged bilinear samples.

    Implements RoIAlign of He, Gkioxari, Dollar & Girshick, "Mask R-CNN", ICCV 2017
    (arXiv:1703.06870), with torchvision's box convention, half-pixel offset (`aligned=True`)
    and boundary rules; see the module docstring for the formula. Matches
    `torchvision.ops.roi_align(features_nchw, [boxes], output_size, spatial_scale,
    sampling_ratio, aligned)` with the channels last.

    Args:
        features: float tensor `(N, H, W, C)`. `C` must be known.
        boxes: float tensor `(K, 4)`, each row `(x1, y1, x2, y2)` in input-image pixels.
        box_indices: int tensor `(K,)`, the image of the batch each box lies on, in
            `[0, N)` (an index outside it fails on CPU and reads a clamped image under XLA).
        output_size: int or tuple of 2 ints `(out_h, out_w)`, the bins per box.
        spatial_scale: positive float. Feature-map size over input-image size (1 / stride).
            Defaults to `1.0`.
        sampling_ratio: positive int. Sample points per bin along each axis. torchvision's
            adaptive `sampling_ratio <= 0` (`ceil(box size / output size)` points, a number
            that differs between boxes) cannot have a static shape and is refused. Defaults
            to `2`.
        aligned: bool. Whether boxes are shifted by -0.5 pixel (Detectron2 and torchvision's
            `aligned=True`); `False` is the original Mask R-CNN, which also forces every box
            to be at least 1 x 1 feature pixel. Defaults to `True`.

    Returns:
        Tensor `(K, out_h, out_w, C)` of the features' dtype, in the order of the boxes.
        The sample positions are computed in the boxes' dtype (float32 for float16 boxes).

    Raises:
        ValueError: for a bad `output_size`, `spatial_scale`, `sampling_ratio` or `aligned`
            (named, with the value received), features that are not 4D with known channels,
            boxes that are not `(K, 4)`, box indices that are not an integer `(K,)` tensor,
            or a different number of boxes and box indices.

    Example:
    >>> import numpy as np
    >>> features = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)
    >>> boxes = np.array([[0.0, 0.0, 4.0, 4.0]], "float32")
    >>> pooled = roi_align(features, boxes, np.array([0]), output_size=2)
    >>> np.asarray(pooled)[0, :, :, 0].tolist()
    [[2.5, 4.5], [10.5, 12.5]]
    """
    output_size, sampling_ratio, aligned = _check_arguments(output_size, sampling_ratio, aligned)
    spatial_scale = check_positive_number(spatial_scale, "spatial_scale")
    features, boxes, box_indices = _check_tensors([features], boxes, box_indices)
    return _align(
        features, [spatial_scale], boxes, box_indices, None, output_size, sampling_ratio, aligned
    )


def multilevel_roi_align(
    features,
    boxes,
    box_indices,
    output_size,
    levels,
    sampling_ratio=2,
    aligned=True,
    canonical_size=224.0,
    canonical_level=4,
):
    """RoIAlign on a feature pyramid: each box read from the level its size picks.

    Implements the level assignment of Lin et al., "Feature Pyramid Networks for Object
    Detection", CVPR 2017 (arXiv:1612.03144), eq. 1 (see `assign_pyramid_levels`), and
    RoIAlign of He et al. 2017 (arXiv:1703.06870) on that level with
    `spatial_scale = 1 / 2**k`. All levels are flattened into one table and one set of
    gathers reads every box from its own level, so the cost is about that of one
    single-level `roi_align` on all boxes, not one per level.

    Args:
        features: list of float tensors `(N, H_k, W_k, C)`, one per level in the order of
            `levels`, with the same batch `N` and channels `C`.
        boxes: float tensor `(K, 4)`, `(x1, y1, x2, y2)` in input-image pixels.
        box_indices: int tensor `(K,)`, the image of each box, in `[0, N)`.
        output_size: int or tuple of 2 ints `(out_h, out_w)`.
        levels: tuple of consecutive increasing non-negative ints, e.g. `(2, 3, 4, 5)` for
            P2..P5; level k has stride 2**k.
        sampling_ratio: positive int. Defaults to `2`.
        aligned: bool. Defaults to `True`.
        canonical_size: positive float. The box size (sqrt of the area) mapped to
            `canonical_level`: 224, the ImageNet pre-training size. Defaults to `224.0`.
        canonical_level: int. k0 of eq. 1. Defaults to `4`.

    Returns:
        Tensor `(K, out_h, out_w, C)` in the order of the boxes.

    Raises:
        ValueError: for a bad argument (named, with the value received), a number of
            feature maps different from the number of levels, or maps whose channels differ.

    Example:
    >>> import numpy as np
    >>> pyramid = [np.ones((1, 64 // 2**k, 64 // 2**k, 8), "float32") for k in (2, 3)]
    >>> boxes = np.array([[0.0, 0.0, 16.0, 16.0], [0.0, 0.0, 60.0, 60.0]], "float32")
    >>> multilevel_roi_align(pyramid, boxes, np.array([0, 0]), 7, levels=(2, 3)).shape
    TensorShape([2, 7, 7, 8])
    """
    output_size, sampling_ratio, aligned = _check_arguments(output_size, sampling_ratio, aligned)
    levels = check_levels(levels)
    canonical_size = check_positive_number(canonical_size, "canonical_size")
    canonical_level = _check_int(canonical_level, "canonical_level")
    if not isinstance(features, list | tuple) or len(features) != len(levels):
        count = len(features) if isinstance(features, list | tuple) else type(features).__name__
        raise ValueError(
            f"`features` must be a list of {len(levels)} feature maps, one per level of "
            f"levels={levels}. Received: {count}"
        )
    features, boxes, box_indices = _check_tensors(features, boxes, box_indices)
    level = assign_pyramid_levels(boxes, levels, canonical_size, canonical_level) - levels[0]
    scales = [2.0**-k for k in levels]
    return _align(features, scales, boxes, box_indices, level, output_size, sampling_ratio, aligned)


def assign_pyramid_levels(boxes, levels, canonical_size=224.0, canonical_level=4):
    """The pyramid level of each box, FPN eq. 1 (Lin et al. 2017, arXiv:1612.03144).

    `k = floor(k0 + log2(sqrt(w * h) / canonical_size))`, clamped to
    `[levels[0], levels[-1]]`, with w, h the box's width and height in image pixels.
    Computed without the logarithm, as the count of thresholds
    `canonical_size * 2**(k - k0)` that `sqrt(w * h)` reaches (compared as areas): equal to
    the formula in exact arithmetic, including at the powers of two where a float32
    `log2` rounds either way (torchvision adds 1e-6 to the logarithm for that reason).
    Degenerate boxes (zero or negative area) go to the lowest level.

    Args:
        boxes: float tensor `(K, 4)`, `(x1, y1, x2, y2)`.
        levels: tuple of consecutive increasing ints (see `check_levels`).
        canonical_size: positive float. Defaults to `224.0`.
        canonical_level: int. Defaults to `4`.

    Returns:
        int32 tensor `(K,)` of levels (values of `levels`, not positions in it).

    Example:
    >>> import numpy as np
    >>> boxes = np.array([[0, 0, 100, 100], [0, 0, 224, 224], [0, 0, 900, 900]], "float32")
    >>> np.asarray(assign_pyramid_levels(boxes, (2, 3, 4, 5))).tolist()
    [2, 4, 5]
    """
    boxes = ops.convert_to_tensor(boxes)
    compute = _compute_dtype(boxes)
    x1, y1, x2, y2 = ops.unstack(ops.cast(boxes, compute), 4, axis=1)
    area = (x2 - x1) * (y2 - y1)
    level = ops.full_like(area, levels[0], dtype="int32")
    for k in levels[1:]:
        threshold = (canonical_size * 2.0 ** (k - canonical_level)) ** 2
        level = level + ops.cast(area >= threshold, "int32")
    return level


def check_levels(levels):
    """Returns `levels` as a tuple of consecutive increasing non-negative ints.

    Raises:
        ValueError: naming `levels` and the value received.

    Example:
    >>> check_levels([2, 3, 4, 5])
    (2, 3, 4, 5)
    """
    values = tuple(levels) if isinstance(levels, list | tuple) else None
    if (
        not values
        or not all(is_int(k) and k >= 0 for k in values)
        or any(b != a + 1 for a, b in zip(values, values[1:], strict=False))
    ):
        raise ValueError(
            "`levels` must be a non-empty tuple of consecutive increasing non-negative ints, "
            f"e.g. (2, 3, 4, 5) for P2..P5. Received: levels={levels!r}"
        )
    return tuple(int(k) for k in values)


def _align(features, scales, boxes, box_indices, level, output_size, sampling_ratio, aligned):
    """RoIAlign of every box on its level (`level` None: the single map of `features`)."""
    out_h, out_w = output_size
    channels = features[0].shape[3]
    dtype = _compute_dtype(boxes)
    boxes = ops.cast(boxes, dtype)

    # Every level's pixels become rows of one (sum_k N * H_k * W_k, 4 * C) table of 2 x 2
    # neighbourhoods; a box reads rows first_row[level] + (image * H + y) * W + x of its level.
    heights, widths, first_rows, rows = [], [], [], 0
    for feature_map in features:
        heights.append(_size(feature_map, 1))
        widths.append(_size(feature_map, 2))
        first_rows.append(rows)
        rows = rows + _size(feature_map, 0) * heights[-1] * widths[-1]
    table = ops.concatenate([_neighbourhood_table(f) for f in features], axis=0)
    if level is None:
        height, width, first_row, scale = heights[0], widths[0], first_rows[0], scales[0]
    else:
        height, width, first_row = (
            _per_box(values, level) for values in (heights, widths, first_rows)
        )
        scale = ops.take(ops.convert_to_tensor(scales, dtype), level)

    offset = HALF_PIXEL if aligned else 0.0
    x1, y1, x2, y2 = ops.unstack(boxes, 4, axis=1)
    start_x, start_y = x1 * scale - offset, y1 * scale - offset
    box_w, box_h = (x2 * scale - offset) - start_x, (y2 * scale - offset) - start_y
    if not aligned:
        box_w, box_h = ops.maximum(box_w, 1.0), ops.maximum(box_h, 1.0)
    ys = _sample_coordinates(start_y, _divide(box_h, out_h), out_h, sampling_ratio)
    xs = _sample_coordinates(start_x, _divide(box_w, out_w), out_w, sampling_ratio)
    y_low, y_weights = _neighbours(ys, height)
    x_low, x_weights = _neighbours(xs, width)

    # Broadcast to (K, out_h, out_w, sampling_ratio, sampling_ratio) samples.
    def along_y(t):
        return ops.reshape(t, (-1, out_h, 1, sampling_ratio, 1))

    def along_x(t):
        return ops.reshape(t, (-1, 1, out_w, 1, sampling_ratio))

    height, width = ops.cast(height, "int32"), ops.cast(width, "int32")
    base = first_row + ops.cast(box_indices, "int32") * height * width
    base = ops.reshape(base, (-1, 1, 1, 1, 1))
    row_width = ops.reshape(width, (-1, 1, 1))
    average = 1.0 / sampling_ratio**2
    index = base + along_y(y_low * row_width) + along_x(x_low)
    neighbours = ops.take(table, ops.reshape(index, (-1,)), axis=0)
    # Weights of the top-left, top-right, bottom-left and bottom-right neighbours, in the
    # table's order, per sample.
    weights = [
        ops.reshape(along_y(y_weight * average) * along_x(x_weight), (-1,))
        for y_weight in y_weights
        for x_weight in x_weights
    ]
    samples = 4 * sampling_ratio**2
    weights = ops.reshape(ops.cast(ops.stack(weights, axis=1), table.dtype), (-1, 1, samples))
    pooled = ops.matmul(weights, ops.reshape(neighbours, (-1, samples, channels)))
    return ops.reshape(pooled, (-1, out_h, out_w, channels))


def _neighbourhood_table(features):
    """Rows `(N * H * W, 4 * C)`: row `(b * H + y) * W + x` holds pixels (y, x), (y, x + 1),
    (y + 1, x), (y + 1, x + 1) of image b, zeros past the last row or column."""
    channels = features.shape[3]
    padded = ops.pad(features, [[0, 0], [0, 1], [0, 1], [0, 0]])
    corners = [padded[:, :-1, :-1], padded[:, :-1, 1:], padded[:, 1:, :-1], padded[:, 1:, 1:]]
    return ops.reshape(ops.stack(corners, axis=3), (-1, 4 * channels))


def _sample_coordinates(start, bin_size, bins, sampling_ratio):
    """Sample positions `(K, bins, sampling_ratio)` along one axis, in the order of
    operations of torchvision's kernel, so that float32 positions round alike."""
    bin_index = ops.reshape(ops.arange(bins, dtype=start.dtype), (1, bins, 1))
    grid = ops.reshape(ops.arange(sampling_ratio, dtype=start.dtype) + 0.5, (1, 1, -1))
    start = ops.reshape(start, (-1, 1, 1))
    bin_size = ops.reshape(bin_size, (-1, 1, 1))
    # A graph's arithmetic optimizer would sum the three terms in another order (moving
    # positions by a float32 step); a Snapshot of the first sum keeps torchvision's order.
    first = _snapshot(start + bin_index * bin_size)
    return first + _divide(grid * bin_size, sampling_ratio)


@tf.custom_gradient
def _snapshot(x):
    """`x` through a Snapshot, which a graph's arithmetic optimizer does not look through
    (the identity's gradient: TensorFlow registers none for Snapshot)."""
    return tf.raw_ops.Snapshot(input=x), lambda upstream: upstream


def _divide(x, divisor):
    """`x / divisor` for a positive int `divisor`, correctly rounded in a graph too.

    In a graph TensorFlow divides `x / 7` as `x * (1 / 7)` (in 258 of 512 random float32
    values the last bit differs from the true quotient), which moves sample positions by a
    float32 step and outputs by up to 2e-5 from torchvision's. `DivNoNan` is a true division
    (the divisor is never 0 here) that the graph keeps; TFLite converts it to builtin ops.
    """
    return ops.divide_no_nan(x, ops.cast(divisor, x.dtype))


def _neighbours(coordinates, size):
    """Lower neighbour (int32) and the weights of the lower and upper neighbours along one
    axis, with torchvision's boundary rules: outside [-1, size] both weights 0; below 0 read
    0; at or past size - 1 read size - 1 alone (the upper weight is 0, so the table's zero
    padding past the edge only ever gets weight 0). `size` is an int or a per-box `(K,)` tensor."""
    size = ops.reshape(ops.cast(size, coordinates.dtype), (-1, 1, 1))
    last = size - 1.0
    # Written as "inside" so that NaN coordinates (every comparison False) land outside.
    inside = ops.logical_and(coordinates >= -1.0, coordinates <= size)
    coordinates = ops.where(inside, ops.maximum(coordinates, 0.0), 0.0)
    low = ops.floor(coordinates)
    at_edge = low >= last
    low = ops.where(at_edge, last, low)
    fraction = ops.where(at_edge, 0.0, coordinates - low)
    weights = (ops.where(inside, 1.0 - fraction, 0.0), ops.where(inside, fraction, 0.0))
    return ops.cast(low, "int32"), weights


def _per_box(values, level):
    """`values[level]` for every box; `values` holds Python ints or scalar int tensors."""
    values = ops.stack([ops.cast(v, "int32") for v in values])
    return ops.take(values, level)


def _size(tensor, axis):
    static = tensor.shape[axis]
    return static if static is not None else ops.shape(tensor)[axis]


def _compute_dtype(boxes):
    # Sample positions in float16 would be off by up to 1/4 pixel at 512: keep float32.
    dtype = backend.standardize_dtype(boxes.dtype)
    return dtype if dtype in ("float32", "float64") else "float32"


def check_sampling_ratio(sampling_ratio):
    """Returns `sampling_ratio` as a positive int.

    Raises:
        ValueError: naming `sampling_ratio` and the value received, and for a value <= 0
            explaining why torchvision's adaptive sampling is not offered.

    Example:
    >>> check_sampling_ratio(2)
    2
    """
    if is_int(sampling_ratio) and sampling_ratio <= 0:
        raise ValueError(
            "`sampling_ratio` must be a positive int: the adaptive sampling of torchvision's "
            "sampling_ratio <= 0 (ceil(box size / output size) points per bin, a number that "
            "differs between boxes) has no static shape. Received: "
            f"sampling_ratio={sampling_ratio!r}"
        )
    return check_positive_int(sampling_ratio, "sampling_ratio")


def check_positive_number(value, name):
    """Returns `value` as a float if it is a finite number > 0 (not a bool).

    Raises:
        ValueError: "`name` must be a positive number", with the value received.

    Example:
    >>> check_positive_number(0.25, "spatial_scale")
    0.25
    """
    if not is_number(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"`{name}` must be a positive number. Received: {name}={value!r}")
    return float(value)


def _check_arguments(output_size, sampling_ratio, aligned):
    output_size = normalize_tuple(output_size, 2, "output_size")
    sampling_ratio = check_sampling_ratio(sampling_ratio)
    if not isinstance(aligned, bool):
        raise ValueError(f"`aligned` must be a bool. Received: aligned={aligned!r}")
    return output_size, sampling_ratio, aligned


def _check_int(value, name):
    if not is_int(value):
        raise ValueError(f"`{name}` must be an int. Received: {name}={value!r}")
    return int(value)


def _is_float(tensor):
    return "float" in backend.standardize_dtype(tensor.dtype)


def _check_tensors(features, boxes, box_indices):
    """Converts to tensors and checks ranks, channels and the number of boxes."""
    features = [ops.convert_to_tensor(f) for f in features]
    boxes = ops.convert_to_tensor(boxes)
    box_indices = ops.convert_to_tensor(box_indices)
    for feature_map in features:
        if len(feature_map.shape) != 4 or feature_map.shape[3] is None:
            raise ValueError(
                "`features` must be 4D (batch, height, width, channels) with known channels. "
                f"Received: features.shape={tuple(feature_map.shape)}"
            )
    channels = {f.shape[3] for f in features}
    if len(channels) > 1:
        raise ValueError(
            "Every level of `features` must have the same channels. Received: "
            f"{[tuple(f.shape) for f in features]}"
        )
    if len(boxes.shape) != 2 or boxes.shape[1] != 4 or not _is_float(boxes):
        raise ValueError(
            "`boxes` must be a float tensor of shape (num_boxes, 4), (x1, y1, x2, y2) per box. "
            f"Received: boxes.shape={tuple(boxes.shape)}, "
            f"boxes.dtype={backend.standardize_dtype(boxes.dtype)}"
        )
    if len(box_indices.shape) != 1 or "int" not in backend.standardize_dtype(box_indices.dtype):
        raise ValueError(
            "`box_indices` must be an int tensor of shape (num_boxes,). Received: "
            f"box_indices.shape={tuple(box_indices.shape)}, "
            f"box_indices.dtype={backend.standardize_dtype(box_indices.dtype)}"
        )
    if (
        None not in (boxes.shape[0], box_indices.shape[0])
        and boxes.shape[0] != box_indices.shape[0]
    ):
        raise ValueError(
            "`boxes` and `box_indices` must have the same number of boxes. Received: "
            f"boxes.shape={tuple(boxes.shape)}, box_indices.shape={tuple(box_indices.shape)}"
        )
    return features, boxes, box_indices
