"""Mask R-CNN's mask targets, loss and pasting against NumPy float64 references written from
the paper's and Detectron2's definitions."""

import numpy as np
import pytest
import tensorflow as tf

from kcnn.data import load_detection_data
from kcnn.detection import mask_loss, mask_targets, paste_masks, sample_rois

from ..ops import roi_align_reference


@pytest.fixture(scope="module")
def scenes():
    return load_detection_data("shapes", image_size=32, train_count=3, test_count=1, masks=True)


def _reference_targets(masks, rois, matched, size):
    """Loops: RoIAlign (aligned, 2 x 2 samples per bin) of the matched 0/1 mask, >= 0.5."""
    targets = np.zeros((*matched.shape, size, size))
    for b in range(matched.shape[0]):
        for r in range(matched.shape[1]):
            image = masks[b, matched[b, r]].astype(np.float64)[None, :, :, None]
            pooled = roi_align_reference.roi_align(
                image, rois[b, r][None], [0], (size, size), 1.0, 2, True
            )
            targets[b, r] = pooled[0, :, :, 0] >= 0.5
    return targets


def test_mask_targets_equal_roi_aligned_ground_truth(scenes):
    masks, boxes = scenes.masks_train, scenes.y_train
    rng = np.random.default_rng(0)
    count = 6
    valid = boxes[..., 4] >= 0
    matched = np.stack([rng.choice(np.flatnonzero(row), count) for row in valid])
    # RoIs around the matched boxes, jittered, some partly outside the image.
    centre = rng.normal(0, 4, (3, count, 4))
    rois = np.take_along_axis(boxes[..., :4], matched[..., None], axis=1) + centre
    targets = np.asarray(mask_targets(masks, rois.astype("float32"), matched, output_size=14))
    expected = _reference_targets(masks, rois, matched, 14)
    assert targets.dtype == np.float32 and set(np.unique(targets)) <= {0.0, 1.0}
    # float32 against float64 may round a bin that averages to exactly 0.5 either way.
    assert np.mean(targets != expected) < 0.002
    assert 0.2 < targets.mean() < 0.95  # the RoIs do cover their objects


def test_a_box_that_is_its_filled_rectangle_mask_gives_all_ones():
    masks = np.zeros((1, 2, 16, 16), np.uint8)
    masks[0, 1, 4:12, 2:10] = 1
    targets = mask_targets(masks, [[[2.0, 4.0, 10.0, 12.0]]], [[1]], output_size=4)
    np.testing.assert_array_equal(np.asarray(targets), np.ones((1, 1, 4, 4)))


def test_sample_rois_matches_each_foreground_roi_to_its_best_ground_truth(scenes):
    gt = scenes.y_train.astype("float32")
    rng = np.random.default_rng(1)
    proposals = rng.uniform(0, 32, (3, 40, 4))
    proposals = np.concatenate(
        [
            np.minimum(proposals[..., :2], proposals[..., 2:]),
            np.maximum(proposals[..., :2], proposals[..., 2:]) + 1,
        ],
        axis=-1,
    ).astype("float32")
    rois = sample_rois(proposals, np.ones((3, 40), bool), gt, num_samples=32, seed=(0, 3))
    classes, matched = np.asarray(rois["classes"]), np.asarray(rois["matched"])
    assert (classes > 0).sum() >= 3  # at least the ground truth itself
    for b, r in zip(*np.nonzero(classes > 0), strict=True):
        box = np.asarray(rois["rois"])[b, r]
        ious = [_iou(box, row[:4]) if row[4] >= 0 else -1.0 for row in gt[b]]
        assert matched[b, r] == int(np.argmax(ious))
        assert classes[b, r] == gt[b, matched[b, r], 4] + 1
    np.testing.assert_array_equal(matched[classes == 0], 0)


def _iou(a, b):
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_mask_loss_and_its_gradient_equal_numpy():
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 2, (2, 3, 4, 4, 3)).astype("float32")
    classes = np.array([[1, 3, 0], [2, 0, 0]])
    targets = (rng.random((2, 3, 4, 4)) < 0.5).astype("float32")
    foreground = classes > 0
    variable = tf.Variable(logits)
    with tf.GradientTape() as tape:
        loss = mask_loss(variable, classes, targets, foreground)
    gradient = tape.gradient(loss, variable).numpy()

    x = logits.astype(np.float64)
    expected_loss, expected_gradient = 0.0, np.zeros_like(x)
    for b, r in zip(*np.nonzero(foreground), strict=True):
        z, t = x[b, r, :, :, classes[b, r] - 1], targets[b, r]
        p = 1.0 / (1.0 + np.exp(-z))
        expected_loss += np.mean(-t * np.log(p) - (1 - t) * np.log(1 - p)) / 3
        expected_gradient[b, r, :, :, classes[b, r] - 1] = (p - t) / 16 / 3
    np.testing.assert_allclose(float(loss), expected_loss, rtol=1e-5)
    np.testing.assert_allclose(gradient, expected_gradient, atol=1e-7)
    assert float(mask_loss(variable, classes, targets, np.zeros_like(foreground))) == 0.0


def _reference_paste(mask, box, height, width):
    """Per pixel: Detectron2's grid_sample (align_corners=False, zeros outside) of the box
    frame's m x m mask at the pixel centre."""
    size = mask.shape[0]
    x0, y0, x1, y1 = box
    pasted = np.zeros((height, width), bool)
    for y in range(height):
        for x in range(width):
            u = (x + 0.5 - x0) / (x1 - x0) * size - 0.5
            v = (y + 0.5 - y0) / (y1 - y0) * size - 0.5
            left, top = int(np.floor(u)), int(np.floor(v))
            value = 0.0
            for j, wx in ((left, left + 1 - u), (left + 1, u - left)):
                for i, wy in ((top, top + 1 - v), (top + 1, v - top)):
                    if 0 <= i < size and 0 <= j < size:
                        value += wx * wy * mask[i, j]
            pasted[y, x] = value >= 0.5
    return pasted


def test_paste_masks_equals_a_per_pixel_bilinear_reference():
    rng = np.random.default_rng(3)
    masks = rng.random((2, 3, 7, 7))
    corners = rng.uniform(-4, 24, (2, 3, 2, 2))
    boxes = np.concatenate([corners.min(axis=2), corners.max(axis=2) + 2], axis=-1)
    pasted = paste_masks(masks, boxes, (20, 18))
    assert pasted.shape == (2, 3, 20, 18) and pasted.dtype == bool
    for index in np.ndindex(2, 3):
        np.testing.assert_array_equal(
            pasted[index], _reference_paste(masks[index], boxes[index], 20, 18)
        )


def test_a_full_mask_pastes_to_the_pixels_whose_centres_lie_in_its_box():
    box = np.array([2.3, 1.6, 9.4, 7.0])
    pasted = paste_masks(np.ones((1, 28, 28)), box[None], (10, 12))[0]
    ys, xs = np.mgrid[:10, :12] + 0.5
    inside = (xs > box[0]) & (xs < box[2]) & (ys > box[1]) & (ys < box[3])
    np.testing.assert_array_equal(pasted, inside)
    assert not paste_masks(np.ones((1, 4, 4)), np.array([[3.0, 3.0, 3.0, 8.0]]), (10, 10)).any()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((np.ones((2, 4, 5)), np.zeros((2, 4)), (8, 8)), "square masks"),
        ((np.ones((2, 4, 4)), np.zeros((3, 4)), (8, 8)), "one box per mask"),
        ((np.ones((2, 4, 4)), np.zeros((2, 4)), (8,)), "image_size"),
    ],
)
def test_paste_masks_names_bad_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        paste_masks(*arguments)
