import math

import numpy as np
import pytest
import tensorflow as tf

from kcnn.detection import (
    anchor_points,
    box_ciou,
    box_giou,
    box_iou,
    decode_distances,
    encode_distances,
)


def reference_overlaps(box1, box2):
    """IoU, GIoU and CIoU of two xyxy boxes in float64, straight from the papers.

    GIoU: Rezatofighi et al. 2019, IoU - |C minus (A union B)| / |C|.
    CIoU: Zheng et al. 2020, IoU - rho^2 / c^2 - alpha v,
    v = 4 / pi^2 (atan(w_gt / h_gt) - atan(w / h))^2, alpha = v / ((1 - IoU) + v).
    """
    (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = box1, box2
    area_a, area_b = (ax1 - ax0) * (ay1 - ay0), (bx1 - bx0) * (by1 - by0)
    inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    union = area_a + area_b - inter
    iou = inter / union
    hull_w = max(ax1, bx1) - min(ax0, bx0)
    hull_h = max(ay1, by1) - min(ay0, by0)
    giou = iou - (hull_w * hull_h - union) / (hull_w * hull_h)
    rho2 = ((ax0 + ax1) / 2 - (bx0 + bx1) / 2) ** 2 + ((ay0 + ay1) / 2 - (by0 + by1) / 2) ** 2
    c2 = hull_w**2 + hull_h**2
    v = (
        4
        / math.pi**2
        * (math.atan((bx1 - bx0) / (by1 - by0)) - math.atan((ax1 - ax0) / (ay1 - ay0))) ** 2
    )
    alpha = v / ((1 - iou) + v) if v > 0 else 0.0
    return iou, giou, iou - rho2 / c2 - alpha * v, alpha


def random_boxes(rng, count):
    corners = rng.uniform(0, 50, size=(count, 2))
    sizes = rng.uniform(1, 30, size=(count, 2))
    return np.concatenate([corners, corners + sizes], axis=-1)


def test_anchor_points_are_row_major_cell_centres_finest_level_first():
    points, strides = anchor_points((16, 32), strides=(8, 16))
    expected = []
    for stride, rows, columns in ((8, 2, 4), (16, 1, 2)):
        for row in range(rows):
            for column in range(columns):
                expected.append((column * stride + stride / 2, row * stride + stride / 2, stride))
    expected = np.array(expected)
    np.testing.assert_array_equal(points, expected[:, :2])
    np.testing.assert_array_equal(strides, expected[:, 2])
    assert points.dtype == strides.dtype == np.float32


def test_anchor_points_bad_arguments():
    with pytest.raises(ValueError, match=r"divisible by every stride.*stride=16"):
        anchor_points(24, strides=(8, 16))
    with pytest.raises(ValueError, match=r"`strides` must be .*strides=\(8, 0\)"):
        anchor_points(32, strides=(8, 0))


def test_encode_worked_example_and_decode_round_trip():
    # The point (12, 4) with stride 2 inside the box (10, 0, 20, 8): 2 px to the left side,
    # 4 px to the top, 8 px to the right, 4 px to the bottom; halved by the stride.
    distances = encode_distances([[10.0, 0.0, 20.0, 8.0]], [[12.0, 4.0]], [2.0])
    np.testing.assert_allclose(distances, [[1.0, 2.0, 4.0, 2.0]])

    rng = np.random.default_rng(0)
    points, strides = anchor_points(32, strides=(8, 16))
    boxes = np.stack([random_boxes(rng, len(points)) for _ in range(3)])  # (3, N, 4)
    encoded = encode_distances(boxes, points, strides)
    assert encoded.shape == boxes.shape
    np.testing.assert_allclose(decode_distances(encoded, points, strides), boxes, rtol=1e-12)
    # Distances scale with 1 / stride: the same box seen from a stride-16 point is half as far.
    np.testing.assert_allclose(
        np.asarray(encoded)[:, -1, 0] * 16, points[-1, 0] - boxes[:, -1, 0], rtol=1e-12
    )


def test_decode_to_another_format():
    boxes = decode_distances(
        [[1.0, 2.0, 4.0, 2.0]], [[12.0, 4.0]], [2.0], bounding_box_format="center_xywh"
    )
    # xyxy (10, 0, 20, 8): centre (15, 4), width 10, height 8.
    np.testing.assert_allclose(boxes, [[15.0, 4.0, 10.0, 8.0]])
    back = encode_distances(boxes, [[12.0, 4.0]], [2.0], bounding_box_format="center_xywh")
    np.testing.assert_allclose(back, [[1.0, 2.0, 4.0, 2.0]])


def test_worked_examples():
    a, b = [0.0, 0.0, 4.0, 4.0], [2.0, 2.0, 6.0, 6.0]
    # Overlap 2x2 = 4, union 16 + 16 - 4 = 28; hull 6x6 = 36; centres (2, 2) and (4, 4):
    # rho^2 = 8, hull diagonal^2 = 72; same aspect ratio, so v = 0.
    assert float(box_iou(a, b)) == pytest.approx(1 / 7, rel=1e-6)
    assert float(box_giou(a, b)) == pytest.approx(1 / 7 - 8 / 36, rel=1e-6)
    assert float(box_ciou(a, b)) == pytest.approx(1 / 7 - 8 / 72, rel=1e-6)
    # A 2x2 square inside a 4x2 box sharing its left side: IoU 4 / 8, centres 1 px apart,
    # hull 4x2 (diagonal^2 = 20), v = 4/pi^2 (atan(2) - atan(1))^2, alpha = v / (0.5 + v).
    c, d = [0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 4.0, 2.0]
    v = 4 / math.pi**2 * (math.atan(2.0) - math.atan(1.0)) ** 2
    assert float(box_ciou(c, d)) == pytest.approx(0.5 - 1 / 20 - v / (0.5 + v) * v, rel=1e-6)
    # Disjoint boxes: IoU 0, GIoU below 0.
    assert float(box_iou([0.0, 0.0, 1.0, 1.0], [2.0, 0.0, 3.0, 1.0])) == 0.0
    assert float(box_giou([0.0, 0.0, 1.0, 1.0], [2.0, 0.0, 3.0, 1.0])) == pytest.approx(-1 / 3)


@pytest.mark.parametrize("function, index", [(box_iou, 0), (box_giou, 1), (box_ciou, 2)])
def test_pairwise_and_elementwise_match_float64_reference(function, index):
    rng = np.random.default_rng(1)
    boxes1, boxes2 = random_boxes(rng, 7), random_boxes(rng, 5)
    boxes2[0] = boxes1[0]  # identical boxes: IoU = GIoU = CIoU = 1
    boxes2[1] = boxes1[1] + [40.0, 0.0, 40.0, 0.0]  # shifted, maybe disjoint
    expected = np.array([[reference_overlaps(a, b)[index] for b in boxes2] for a in boxes1])
    pairwise = np.asarray(function(boxes1[None], boxes2[None], pairwise=True))
    assert pairwise.shape == (1, 7, 5)
    np.testing.assert_allclose(pairwise[0], expected, atol=1e-7)
    elementwise = np.asarray(function(boxes1[:5], boxes2))
    np.testing.assert_allclose(elementwise, np.diag(expected[:5]), atol=1e-7)
    assert elementwise[0] == pytest.approx(1.0, abs=1e-7)


@pytest.mark.parametrize("function, index", [(box_iou, 0), (box_giou, 1), (box_ciou, 2)])
def test_gradient_matches_finite_differences(function, index):
    """CIoU's alpha is held constant in the gradient, so the finite differences of the
    reference keep alpha at its value for the unperturbed boxes."""
    rng = np.random.default_rng(2)
    boxes1 = random_boxes(rng, 4)
    corners = boxes1[:, :2] + rng.uniform(-3, 3, size=(4, 2))  # overlapping boxes1
    boxes2 = np.concatenate([corners, corners + rng.uniform(5, 30, size=(4, 2))], axis=-1)

    fixed_alphas = [reference_overlaps(a, b)[3] for a, b in zip(boxes1, boxes2, strict=True)]

    def reference_with_fixed_alpha(flat):
        total = 0.0
        for a, b, fixed_alpha in zip(flat.reshape(4, 4), boxes2, fixed_alphas, strict=True):
            iou, giou, ciou, alpha = reference_overlaps(a, b)
            if index == 2:
                ciou = ciou + alpha * _aspect(a, b) - fixed_alpha * _aspect(a, b)
            total += (iou, giou, ciou)[index]
        return total

    step = 1e-6
    flat = boxes1.ravel()
    numerical = np.array(
        [
            (
                reference_with_fixed_alpha(flat + step * np.eye(16)[i])
                - reference_with_fixed_alpha(flat - step * np.eye(16)[i])
            )
            / (2 * step)
            for i in range(16)
        ]
    )
    variable = tf.Variable(boxes1)
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(function(variable, tf.constant(boxes2)))
    analytic = tape.gradient(total, variable).numpy().ravel()
    np.testing.assert_allclose(analytic, numerical, atol=1e-6)
    assert np.abs(analytic).max() > 1e-4


def _aspect(a, b):
    return (
        4
        / math.pi**2
        * (math.atan((b[2] - b[0]) / (b[3] - b[1])) - math.atan((a[2] - a[0]) / (a[3] - a[1]))) ** 2
    )
