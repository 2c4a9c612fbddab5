"""Anchor points, distance encoding and IoU-family overlaps for anchor-free detectors.

Boxes are `(x_min, y_min, x_max, y_max)` in pixels ("xyxy") unless a function takes a
`bounding_box_format`, which names any format of `keras.utils.bounding_boxes.convert_format`.

An anchor-free detector (FCOS, Tian et al. 2019, arXiv:1904.01355; YOLOv8) predicts, at
every cell centre of every pyramid level, the distances from that point to the four sides
of the object's box. The points are `((j + 0.5) * stride, (i + 0.5) * stride)` for row `i`
and column `j` of a level, in row-major order, with the levels concatenated from the finest
to the coarsest: the order in which `kcnn.detection.Detector` flattens its outputs.
"""

import math

import keras
import numpy as np
from keras import ops

EPSILON = 1e-7


def anchor_points(image_size, strides, offset=0.5):
    """Returns the anchor points of every pyramid level and the stride of each point.

    Args:
        image_size: int or tuple `(height, width)` of the input image, in pixels; each
            side must be divisible by every stride (the detector requires it, so that a
            level of stride s has exactly `size / s` cells).
        strides: sequence of positive ints, one per level, from the finest to the
            coarsest, e.g. `(8, 16, 32)` for levels P3 to P5.
        offset: float. Position of the point inside its cell, in cells. Defaults to 0.5
            (the cell centre).

    Returns:
        A tuple `(points, point_strides)` of float32 NumPy arrays: `points` of shape
        `(num_points, 2)` holding `(x, y)` in pixels, `point_strides` of shape
        `(num_points,)`. `num_points = sum(height / s * width / s for s in strides)`.

    Raises:
        ValueError: if a stride is not a positive int or does not divide the image size.

    Example:
    >>> points, point_strides = anchor_points((16, 32), strides=(8, 16))
    >>> points[:5].tolist()
    [[4.0, 4.0], [12.0, 4.0], [20.0, 4.0], [28.0, 4.0], [4.0, 12.0]]
    >>> points.shape, point_strides[-2:].tolist()
    ((10, 2), [16.0, 16.0])
    """
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    strides = tuple(strides)
    if not strides or not all(isinstance(s, int) and s > 0 for s in strides):
        raise ValueError(
            f"`strides` must be a non-empty sequence of positive ints. Received: strides={strides}"
        )
    all_points, all_strides = [], []
    for stride in strides:
        if height % stride or width % stride:
            raise ValueError(
                f"`image_size` must be divisible by every stride. Received: "
                f"image_size={(height, width)}, stride={stride}"
            )
        xs = (np.arange(width // stride) + offset) * stride
        ys = (np.arange(height // stride) + offset) * stride
        grid_x, grid_y = np.meshgrid(xs, ys)  # (rows, columns): row-major when flattened
        all_points.append(np.stack([grid_x.ravel(), grid_y.ravel()], axis=-1))
        all_strides.append(np.full(grid_x.size, stride))
    points = np.concatenate(all_points).astype("float32")
    return points, np.concatenate(all_strides).astype("float32")


def encode_distances(boxes, points, strides, bounding_box_format="xyxy"):
    """Encodes boxes as FCOS / YOLOv8 distances from anchor points, in stride units.

    (left, top, right, bottom) = (x - x_min, y - y_min, x_max - x, y_max - y) / stride.
    A distance is negative when the point lies outside the box.

    Args:
        boxes: tensor `(..., num_points, 4)`, the box each point should predict.
        points: tensor `(num_points, 2)` of `(x, y)` pixels (see `anchor_points`).
        strides: tensor `(num_points,)`, the stride of each point.
        bounding_box_format: str. Format of `boxes`. Defaults to `"xyxy"`.

    Returns:
        A tensor `(..., num_points, 4)` of `(left, top, right, bottom)` distances.

    Example:
    >>> distances = encode_distances([[10.0, 0.0, 20.0, 8.0]], [[12.0, 4.0]], [2.0])
    >>> np.asarray(distances).tolist()
    [[1.0, 2.0, 4.0, 2.0]]
    """
    boxes = _to_xyxy(boxes, bounding_box_format)
    points = ops.cast(points, boxes.dtype)
    strides = ops.expand_dims(ops.cast(strides, boxes.dtype), -1)
    x_min, y_min, x_max, y_max = ops.unstack(boxes, 4, axis=-1)
    x, y = points[:, 0], points[:, 1]
    distances = ops.stack([x - x_min, y - y_min, x_max - x, y_max - y], axis=-1)
    return distances / strides


def decode_distances(distances, points, strides, bounding_box_format="xyxy"):
    """Decodes `(left, top, right, bottom)` distances in stride units into boxes.

    The inverse of `encode_distances`: x_min = x - left * stride, y_min = y - top * stride,
    x_max = x + right * stride, y_max = y + bottom * stride.

    Args:
        distances: tensor `(..., num_points, 4)` in stride units, e.g. the first 4
            channels of a `Detector` output.
        points: tensor `(num_points, 2)` of `(x, y)` pixels.
        strides: tensor `(num_points,)`.
        bounding_box_format: str. Format of the returned boxes. Defaults to `"xyxy"`.

    Returns:
        A tensor `(..., num_points, 4)` of boxes in pixels.

    Example:
    >>> boxes = decode_distances([[1.0, 2.0, 4.0, 2.0]], [[12.0, 4.0]], [2.0])
    >>> np.asarray(boxes).tolist()
    [[10.0, 0.0, 20.0, 8.0]]
    """
    distances = _float_tensor(distances)
    points = ops.cast(points, distances.dtype)
    strides = ops.expand_dims(ops.cast(strides, distances.dtype), -1)
    pixels = distances * strides
    left, top, right, bottom = ops.unstack(pixels, 4, axis=-1)
    x, y = points[:, 0], points[:, 1]
    boxes = ops.stack([x - left, y - top, x + right, y + bottom], axis=-1)
    if bounding_box_format == "xyxy":
        return boxes
    return keras.utils.bounding_boxes.convert_format(
        boxes, source="xyxy", target=bounding_box_format, dtype=boxes.dtype
    )


def box_iou(boxes1, boxes2, pairwise=False):
    """Intersection over union of xyxy boxes: |A ∩ B| / |A ∪ B|.

    Args:
        boxes1: tensor `(..., 4)`.
        boxes2: tensor `(..., 4)`.
        pairwise: bool. False: element-wise, with broadcasting of the leading axes.
            True: every box of `boxes1 (..., N, 4)` against every box of
            `boxes2 (..., M, 4)`, giving `(..., N, M)`. Defaults to False.

    Returns:
        A tensor of IoUs in [0, 1], the broadcast leading shape (or `(..., N, M)`).

    Example:
    >>> round(float(box_iou([0.0, 0.0, 2.0, 2.0], [1.0, 0.0, 3.0, 2.0])), 4)  # 2 / 6
    0.3333
    """
    return _overlaps(boxes1, boxes2, pairwise, "iou")


def box_giou(boxes1, boxes2, pairwise=False):
    """Generalized IoU (Rezatofighi et al. 2019, arXiv:1902.09630): IoU − |C \\ (A ∪ B)| / |C|,
    C the smallest box enclosing A and B. In [-1, 1].

    Args: as `box_iou`.

    Example:
    >>> round(float(box_giou([0.0, 0.0, 1.0, 1.0], [2.0, 0.0, 3.0, 1.0])), 4)  # 0 - (3 - 2) / 3
    -0.3333
    """
    return _overlaps(boxes1, boxes2, pairwise, "giou")


def box_ciou(boxes1, boxes2, pairwise=False):
    """Complete IoU (Zheng et al. 2020, "Distance-IoU Loss", AAAI, arXiv:1911.08287).

        CIoU = IoU − ρ²(b, b_gt) / c² − α v
        v = 4 / π² (arctan(w_gt / h_gt) − arctan(w / h))²,   α = v / ((1 − IoU) + v)

    with ρ the distance between the box centres and c the diagonal of the smallest
    enclosing box. α is a trade-off weight, not a function to differentiate: as in the
    authors' implementation it is held constant in the gradient (stop-gradient). v is
    symmetric, so which argument is the ground truth does not matter.

    Args: as `box_iou`.

    Example:
    >>> # IoU 0, centre distance 2, enclosing box 4 x 2: 0 - 2**2 / (4**2 + 2**2)
    >>> round(float(box_ciou([0.0, 0.0, 2.0, 2.0], [2.0, 0.0, 4.0, 2.0])), 4)
    -0.2
    """
    return _overlaps(boxes1, boxes2, pairwise, "ciou")


def _float_tensor(values):
    """`values` as a tensor, float32 unless it already is a floating-point tensor."""
    values = ops.convert_to_tensor(values)
    if not keras.backend.standardize_dtype(values.dtype).startswith("float"):
        values = ops.cast(values, "float32")
    return values


def _to_xyxy(boxes, bounding_box_format):
    boxes = _float_tensor(boxes)
    if bounding_box_format == "xyxy":
        return boxes
    return keras.utils.bounding_boxes.convert_format(
        boxes, source=bounding_box_format, target="xyxy", dtype=boxes.dtype
    )


def _overlaps(boxes1, boxes2, pairwise, kind):
    boxes1, boxes2 = _to_xyxy(boxes1, "xyxy"), _to_xyxy(boxes2, "xyxy")
    boxes2 = ops.cast(boxes2, boxes1.dtype)
    if pairwise:
        boxes1, boxes2 = ops.expand_dims(boxes1, -2), ops.expand_dims(boxes2, -3)
    x_min1, y_min1, x_max1, y_max1 = ops.unstack(boxes1, 4, axis=-1)
    x_min2, y_min2, x_max2, y_max2 = ops.unstack(boxes2, 4, axis=-1)
    width1, height1 = x_max1 - x_min1, y_max1 - y_min1
    width2, height2 = x_max2 - x_min2, y_max2 - y_min2
    intersection = ops.maximum(ops.minimum(x_max1, x_max2) - ops.maximum(x_min1, x_min2), 0.0)
    intersection = intersection * ops.maximum(
        ops.minimum(y_max1, y_max2) - ops.maximum(y_min1, y_min2), 0.0
    )
    union = width1 * height1 + width2 * height2 - intersection
    iou = intersection / (union + EPSILON)
    if kind == "iou":
        return iou
    enclosing_width = ops.maximum(x_max1, x_max2) - ops.minimum(x_min1, x_min2)
    enclosing_height = ops.maximum(y_max1, y_max2) - ops.minimum(y_min1, y_min2)
    if kind == "giou":
        enclosing_area = enclosing_width * enclosing_height + EPSILON
        return iou - (enclosing_area - union) / enclosing_area
    diagonal_squared = enclosing_width**2 + enclosing_height**2 + EPSILON
    centre_distance_squared = ((x_min1 + x_max1 - x_min2 - x_max2) / 2) ** 2 + (
        (y_min1 + y_max1 - y_min2 - y_max2) / 2
    ) ** 2
    aspect = (4 / math.pi**2) * (
        ops.arctan(width2 / (height2 + EPSILON)) - ops.arctan(width1 / (height1 + EPSILON))
    ) ** 2
    trade_off = ops.stop_gradient(aspect / (1 - iou + aspect + EPSILON))
    return iou - centre_distance_squared / diagonal_squared - trade_off * aspect
