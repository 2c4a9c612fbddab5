import math
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from kcnn.detection import (
    decode_boxes,
    encode_boxes,
    fast_rcnn_loss,
    fpn_anchors,
    generate_proposals,
    match_anchors,
    rpn_loss,
    sample_balanced,
    sample_rois,
)

from . import two_stage_reference as reference

RNG = np.random.default_rng(0)
CLIP = math.log(1000 / 16)


def grid_boxes(rng, count, image_size, minimum=4.0, maximum=20.0):
    """Random boxes with coordinates on a 0.25-pixel grid: their IoUs with integer anchors
    are computed exactly in float32 and float64 alike, so thresholds and ties agree."""
    height, width = image_size
    sizes = np.round(rng.uniform(minimum, maximum, (count, 2)) * 4) / 4
    corners = np.round(rng.uniform(0, 1, (count, 2)) * ([width, height] - sizes) * 4) / 4
    return np.concatenate([corners, corners + sizes], axis=1)


def integer_anchors(image_size=(32, 40)):
    """Anchors with integer corners (ratios 1/4, 1, 4), P2 and P3."""
    return fpn_anchors(image_size, ("P2", "P3"), sizes=(8, 16), aspect_ratios=(0.25, 1.0, 4.0))


def test_fpn_anchors_worked_example_64_by_64_at_p2():
    (anchors,) = fpn_anchors((64, 64), levels=("P2",))
    assert anchors.shape == (16 * 16 * 3, 4) and anchors.dtype == np.float32
    half_long, half_short = 16 * math.sqrt(2), 16 / math.sqrt(2)  # 32 / sqrt(0.5) / 2, ...
    # Cell (0, 0) centred at (2, 2): ratio 0.5 (wide), 1, 2 (tall).
    np.testing.assert_allclose(
        anchors[0], [2 - half_long, 2 - half_short, 2 + half_long, 2 + half_short], rtol=1e-6
    )
    np.testing.assert_array_equal(anchors[1], [-14, -14, 18, 18])
    np.testing.assert_allclose(
        anchors[2], [2 - half_short, 2 - half_long, 2 + half_short, 2 + half_long], rtol=1e-6
    )
    # Row y = 1, column x = 2 (centre (10, 6)), ratio 2: row (1 * 16 + 2) * 3 + 2.
    np.testing.assert_allclose(
        anchors[56], [10 - half_short, 6 - half_long, 10 + half_short, 6 + half_long], rtol=1e-6
    )
    # The last cell (15, 15) is centred at (62, 62).
    np.testing.assert_array_equal(anchors[-2], [46, 46, 78, 78])
    widths, heights = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    np.testing.assert_allclose(widths * heights, 32.0**2, rtol=1e-5)
    np.testing.assert_allclose(heights / widths, np.tile([0.5, 1.0, 2.0], 256), rtol=1e-5)


def test_fpn_anchors_match_the_reference_on_every_level():
    levels = ("P2", "P3", "P4", "P5", "P6")
    computed = fpn_anchors((50, 70), levels)  # not divisible: ceil(50 / 4) = 13 rows on P2
    expected = reference.anchors((50, 70), (2, 3, 4, 5, 6), (32, 64, 128, 256, 512), (0.5, 1, 2))
    assert [len(a) for a in computed] == [13 * 18 * 3, 7 * 9 * 3, 4 * 5 * 3, 2 * 3 * 3, 1 * 2 * 3]
    for got, want in zip(computed, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-4)
    (custom,) = fpn_anchors(16, levels=(3,), sizes=(10.0,), aspect_ratios=(4.0,))
    np.testing.assert_allclose(custom, reference.anchors((16, 16), (3,), (10,), (4,))[0], atol=1e-5)


def test_encode_matches_the_formula_broadcasts_and_decode_inverts_it():
    anchors = grid_boxes(RNG, 5, (60, 80))
    boxes = np.stack([grid_boxes(RNG, 5, (60, 80)) for _ in range(2)])  # (2, 5, 4)
    for weights in [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)]:
        deltas = np.asarray(encode_boxes(boxes, anchors, weights))
        assert deltas.shape == (2, 5, 4) and deltas.dtype == np.float64
        expected = [
            [reference.encode(boxes[b, a], anchors[a], weights) for a in range(5)] for b in range(2)
        ]
        np.testing.assert_allclose(deltas, expected, rtol=1e-12, atol=1e-12)
        decoded = decode_boxes(deltas, anchors, weights)
        np.testing.assert_allclose(decoded, boxes, atol=1e-10)


def test_decode_clamps_the_size_deltas():
    anchors = grid_boxes(RNG, 6, (60, 80))
    deltas = RNG.normal(0, 1, (6, 4)) * [1, 1, 3, 3]
    deltas[0, 2], deltas[1, 3] = 9.0, 12.0  # above log(1000 / 16) = 4.135
    for weights in [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)]:
        decoded = np.asarray(decode_boxes(deltas, anchors, weights))
        expected = [
            reference.decode(d, a, weights, CLIP) for d, a in zip(deltas, anchors, strict=True)
        ]
        np.testing.assert_allclose(decoded, expected, rtol=1e-12)
    clamped = np.asarray(decode_boxes(deltas[:2], anchors[:2]))
    np.testing.assert_allclose(
        (clamped[0, 2] - clamped[0, 0]) / (anchors[0, 2] - anchors[0, 0]), 62.5
    )
    unclamped = np.asarray(decode_boxes(deltas[:1], anchors[:1], clip=None))
    assert unclamped[0, 2] - unclamped[0, 0] > 1000 * (anchors[0, 2] - anchors[0, 0])


def ground_truth_batch(rng, image_size):
    """Image 0: three boxes and a padding row; image 1: a padding row first, then two boxes;
    image 2: padding only. Padding rows hold real-looking boxes, which must never match. One
    box per image lies close to an anchor of `integer_anchors`, so IoUs above 0.7 exist."""
    boxes = np.stack([grid_boxes(rng, 4, image_size, 5.0, 24.0) for _ in range(3)])
    boxes[0, 0] = [6.25, 1.5, 14.0, 10.0]  # the 8 x 8 anchor at (10, 6): IoU 62 / 67.875
    boxes[1, 1] = [16.0, 4.25, 32.0, 8.5]  # the 16 x 4 anchor at (24, 6): IoU 60 / 72
    classes = np.array([[0, 2, 1, -1], [-1, 1, 0, -1], [-1, -1, -1, -1]], np.float64)
    return np.concatenate([boxes, classes[..., None]], axis=-1)


@pytest.mark.parametrize("allow_low_quality", [True, False])
def test_match_anchors_matches_the_reference(allow_low_quality):
    anchors = np.concatenate(integer_anchors())
    gt = ground_truth_batch(np.random.default_rng(1), (32, 40))
    labels, matched = match_anchors(
        anchors, gt.astype(np.float32), allow_low_quality=allow_low_quality
    )
    labels, matched = np.asarray(labels), np.asarray(matched)
    assert labels.shape == matched.shape == (3, len(anchors)) and labels.dtype == np.int32
    for b in range(3):
        want_labels, want_matched = reference.match(
            anchors, gt[b, :, :4], gt[b, :, 4] >= 0, 0.7, 0.3, allow_low_quality
        )
        np.testing.assert_array_equal(labels[b], want_labels)
        positive = want_labels == 1
        np.testing.assert_array_equal(matched[b, positive], want_matched[positive])
        assert set(matched[b, positive]) <= set(np.flatnonzero(gt[b, :, 4] >= 0))
    assert not np.any(labels[2])  # no ground truth: every anchor negative
    assert {-1, 0, 1} <= set(labels[:2].ravel())
    if allow_low_quality:  # the data exercise the rule: positives below 0.7 IoU exist
        strict = np.asarray(match_anchors(anchors, gt, allow_low_quality=False)[0])
        assert np.sum((labels == 1) & (strict != 1)) > 0


def test_match_anchors_low_quality_ties_padding_and_zero_overlap():
    anchors = np.array([[0, 0, 10, 10], [10, 0, 20, 10], [40, 40, 50, 50]], np.float32)
    gt = np.array(
        [
            [[5, 0, 15, 10, 0], [40, 40, 50, 50, -1]],  # IoU 1/3 with anchors 0 and 1 (a tie)
            [[100, 100, 110, 110, 3], [0, 0, 10, 10, -1]],  # overlaps nothing; padding would
        ],
        np.float32,
    )
    labels, matched = match_anchors(anchors, gt)
    assert np.asarray(labels).tolist() == [[1, 1, 0], [0, 0, 0]]
    assert np.asarray(matched)[0, :2].tolist() == [0, 0]
    strict, _ = match_anchors(anchors, gt, allow_low_quality=False)
    assert np.asarray(strict).tolist() == [[-1, -1, 0], [0, 0, 0]]
    # 4-column boxes with an explicit mask give the same.
    explicit, _ = match_anchors(anchors, gt[..., :4], gt[..., 4] >= 0)
    np.testing.assert_array_equal(explicit, labels)


def test_sample_balanced_counts_and_eligibility():
    labels = np.full((4, 50), -1, np.int32)
    labels[0, :3], labels[0, 10:40] = 1, 0  # few positives: all 3 drawn, 13 negatives
    labels[1, 5:25], labels[1, 30:50] = 1, 0  # many of both: 4 positives, 12 negatives
    labels[2, ::2], labels[2, 1:6:2] = 1, 0  # few negatives: 4 + 3
    positive, negative = (np.asarray(m) for m in sample_balanced(labels, 16, 0.25, seed=(3, 4)))
    assert positive.dtype == bool and positive.shape == (4, 50)
    assert np.sum(positive, 1).tolist() == [3, 4, 4, 0]
    assert np.sum(negative, 1).tolist() == [13, 12, 3, 0]
    assert not np.any(positive & (labels != 1)) and not np.any(negative & (labels != 0))


def test_sample_balanced_is_reproducible_and_seed_dependent():
    labels = RNG.choice([-1, 0, 1], size=(2, 200), p=[0.2, 0.6, 0.2]).astype(np.int32)
    first = [np.asarray(m) for m in sample_balanced(labels, 32, 0.5, seed=(7, 1))]
    again = [np.asarray(m) for m in sample_balanced(labels, 32, 0.5, tf.constant([7, 1]))]
    other = [np.asarray(m) for m in sample_balanced(labels, 32, 0.5, seed=(8, 1))]
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0]) and not np.array_equal(first[1], other[1])
    draw = tf.function(lambda seed: sample_balanced(labels, 32, 0.5, seed))
    for a, b in zip(first, draw(tf.constant([7, 1], tf.int64)), strict=True):
        np.testing.assert_array_equal(a, b)


def test_sample_balanced_draws_a_split_batch_as_the_whole():
    # The rows of a batch sampled in slices with `batch_rows` (as replicas do) get the sample
    # of the whole batch drawn at once.
    labels = RNG.choice([-1, 0, 1], size=(3, 150), p=[0.2, 0.6, 0.2]).astype(np.int32)
    whole = [np.asarray(m) for m in sample_balanced(labels, 24, 0.5, seed=(5, 1))]
    parts = [
        sample_balanced(labels[:1], 24, 0.5, seed=(5, 1), batch_rows=(0, 3)),
        sample_balanced(labels[1:], 24, 0.5, seed=(5, 1), batch_rows=(1, 3)),
    ]
    for index in range(2):
        np.testing.assert_array_equal(
            np.concatenate([np.asarray(part[index]) for part in parts]), whole[index]
        )
    alone = np.asarray(sample_balanced(labels[1:], 24, 0.5, seed=(5, 1))[0])
    assert not np.array_equal(alone, whole[0][1:])  # without batch_rows: other numbers
    with pytest.raises(ValueError, match="batch_rows"):
        sample_balanced(labels[1:], 24, 0.5, seed=(5, 1), batch_rows=(2, 3))


def test_sample_balanced_draws_uniformly():
    """2 of 10 positives and 3 of 6 negatives, over 2000 independent rows: each eligible
    index is drawn with frequency 0.2 (positives) and 0.5 (negatives)."""
    row = np.array([1] * 10 + [0] * 6 + [-1] * 4, np.int32)
    positive, negative = sample_balanced(np.tile(row, (2000, 1)), 5, 0.4, seed=(0, 5))
    positive_rate, negative_rate = np.mean(positive, 0), np.mean(negative, 0)
    np.testing.assert_allclose(positive_rate[:10], 0.2, atol=0.05)
    np.testing.assert_allclose(negative_rate[10:16], 0.5, atol=0.06)
    assert not np.any(positive_rate[10:]) and not np.any(negative_rate[16:])


def random_rpn_outputs(rng, anchors, batch):
    objectness = [rng.normal(0, 2, (batch, len(a))).astype(np.float32) for a in anchors]
    deltas = [rng.normal(0, 0.4, (batch, len(a), 4)).astype(np.float32) for a in anchors]
    return objectness, deltas


@pytest.mark.parametrize(
    "pre, post, nms_iou, min_size",
    [(30, 40, 0.5, 3.0), (30, 20, 0.5, 3.0), (4, 20, 0.7, 0.0)],
)
def test_generate_proposals_matches_per_level_top_k_and_greedy_nms(pre, post, nms_iou, min_size):
    image_size = (32, 40)
    # Anchors 4 times the stride: neighbours overlap, and NMS has work to do.
    anchors = fpn_anchors(image_size, ("P2", "P3"), sizes=(16.0, 32.0))
    objectness, deltas = random_rpn_outputs(np.random.default_rng(2), anchors, 2)
    boxes, scores, valid = generate_proposals(
        objectness, deltas, anchors, image_size, pre, post, nms_iou, min_size
    )
    boxes, scores, valid = np.asarray(boxes), np.asarray(scores), np.asarray(valid)
    assert boxes.shape == (2, post, 4) and scores.shape == valid.shape == (2, post)
    changed = []
    for b in range(2):
        outputs = (
            [o[b].astype(np.float64) for o in objectness],
            [d[b].astype(np.float64) for d in deltas],
        )
        want_boxes, want_scores = reference.proposals(
            *outputs, anchors, image_size, pre, post, nms_iou, min_size
        )
        n = len(want_scores)
        _, unsuppressed = reference.proposals(
            *outputs, anchors, image_size, pre, post, 1.0, min_size
        )
        changed.append(len(unsuppressed) > n or not np.array_equal(unsuppressed, want_scores))
        assert valid[b].tolist() == [True] * n + [False] * (post - n)
        np.testing.assert_allclose(boxes[b, :n], want_boxes, atol=1e-4)
        np.testing.assert_allclose(scores[b, :n], want_scores, rtol=1e-6)
        assert not np.any(boxes[b, n:]) and not np.any(scores[b, n:])
        assert 0 < n <= post
    assert any(changed)  # NMS changes the result, so the comparison covers it


def test_generate_proposals_inside_tf_function():
    image_size = (32, 40)
    anchors = fpn_anchors(image_size, ("P2", "P3"), sizes=(8.0, 16.0))
    objectness, deltas = random_rpn_outputs(np.random.default_rng(3), anchors, 2)
    eager = generate_proposals(objectness, deltas, anchors, image_size, 20, 16)
    graph = tf.function(lambda o, d: generate_proposals(o, d, anchors, image_size, 20, 16))(
        objectness, deltas
    )
    np.testing.assert_array_equal(graph[2], eager[2])
    np.testing.assert_allclose(graph[0], eager[0], atol=1e-5)
    np.testing.assert_allclose(graph[1], eager[1], atol=1e-6)
    assert np.asarray(eager[2]).sum() > 0


def roi_case():
    rng = np.random.default_rng(4)
    proposals = np.stack([grid_boxes(rng, 12, (32, 40), 4.0, 18.0) for _ in range(2)])
    proposal_valid = rng.uniform(size=(2, 12)) > 0.25
    gt = ground_truth_batch(np.random.default_rng(5), (32, 40))[:2]
    # Proposals near each real box, so that there are foreground RoIs besides the boxes.
    for b, m in [(0, 0), (0, 1), (1, 1)]:
        proposals[b, m] = gt[b, m, :4] + [0.25, -0.5, 0.75, 0.0]
        proposal_valid[b, m] = True
    return proposals, proposal_valid, gt


def reference_roi_labels(box, gt):
    """Class (0 background, k + 1 for class k) and box target of one RoI, in float64."""
    real = [m for m in range(len(gt)) if gt[m, 4] >= 0]
    overlaps = [reference.iou(box, gt[m, :4]) for m in real]
    best = real[int(np.argmax(overlaps))]
    if max(overlaps) < 0.5:
        return 0, [0.0] * 4
    return int(gt[best, 4]) + 1, reference.encode(gt[best, :4], box, (10, 10, 5, 5))


def test_sample_rois_includes_ground_truth_and_matches_the_targets():
    proposals, proposal_valid, gt = roi_case()
    rois = sample_rois(
        proposals, proposal_valid, gt, num_samples=32, positive_fraction=1.0, seed=(1, 1)
    )
    rois = {name: np.asarray(value) for name, value in rois.items()}
    assert rois["rois"].shape == (2, 32, 4) and rois["classes"].dtype == np.int32
    for b in range(2):
        candidates = np.concatenate([proposals[b][proposal_valid[b]], gt[b, gt[b, :, 4] >= 0, :4]])
        n = len(candidates)
        assert rois["valid"][b].tolist() == [True] * n + [False] * (32 - n)
        # Every valid candidate is sampled, the real ground-truth boxes included.
        got = rois["rois"][b, :n]
        np.testing.assert_array_equal(got[np.lexsort(got.T)], candidates[np.lexsort(candidates.T)])
        classes, targets = rois["classes"][b, :n], rois["box_targets"][b, :n]
        for roi, cls, target in zip(got, classes, targets, strict=True):
            want_class, want_target = reference_roi_labels(roi, gt[b])
            assert cls == want_class
            np.testing.assert_allclose(target, want_target, atol=1e-4)
        foreground = rois["classes"][b, :n] > 0
        assert foreground.sum() >= 2 and np.all(np.diff(foreground.astype(int)) <= 0)  # fg first
        for box, cls in zip(gt[b, :, :4], gt[b, :, 4], strict=True):
            rows = np.flatnonzero(np.all(got == box, axis=1))
            assert len(rows) == (cls >= 0)  # real boxes once, padding rows never
            if cls >= 0:
                assert rois["classes"][b, rows[0]] == cls + 1
                np.testing.assert_allclose(rois["box_targets"][b, rows[0]], 0.0, atol=1e-6)
        assert not np.any(rois["rois"][b, n:]) and not np.any(rois["classes"][b, n:])


def test_sample_rois_balances_and_is_reproducible():
    proposals, proposal_valid, gt = roi_case()
    first = sample_rois(
        proposals, proposal_valid, gt, num_samples=8, positive_fraction=0.25, seed=(2, 9)
    )
    again = sample_rois(
        proposals, proposal_valid, gt, num_samples=8, positive_fraction=0.25, seed=(2, 9)
    )
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
    classes, valid = np.asarray(first["classes"]), np.asarray(first["valid"])
    assert valid.all() and np.sum(classes > 0, axis=1).tolist() == [2, 2]
    for b in range(2):
        for roi, cls in zip(np.asarray(first["rois"])[b], classes[b], strict=True):
            assert cls == reference_roi_labels(roi, gt[b])[0]


def test_rpn_loss_matches_the_formula_and_ignores_unused_targets():
    rng = np.random.default_rng(6)
    logits = rng.normal(0, 2, (2, 40))
    labels = rng.choice([-1, 0, 1], (2, 40), p=[0.2, 0.5, 0.3])
    sampled = (labels >= 0) & (rng.uniform(size=(2, 40)) < 0.7)
    deltas = rng.normal(0, 0.3, (2, 40, 4))
    targets = deltas + rng.uniform(-0.4, 0.4, (2, 40, 4))
    beta = 1 / 9
    used = np.abs(deltas - targets)[(labels == 1) & sampled]
    assert np.any(used < beta) and np.any(used > beta)  # both branches of smooth L1
    want = reference.rpn_loss(logits, deltas, labels, targets, sampled, beta)
    targets[~((labels == 1) & sampled)] = np.nan  # never read
    deltas_variable = tf.Variable(deltas, dtype=tf.float32)
    with tf.GradientTape() as tape:
        got = rpn_loss(logits, deltas_variable, labels, targets, sampled)
    np.testing.assert_allclose([float(v) for v in got], want, rtol=1e-5)
    gradient = np.asarray(tape.gradient(got[1], deltas_variable))
    difference = deltas - np.nan_to_num(targets)
    expected = (
        np.clip(difference / beta, -1, 1) * ((labels == 1) & sampled)[..., None] / sampled.sum()
    )
    np.testing.assert_allclose(gradient, expected, atol=1e-5)


@pytest.mark.parametrize("beta", [1.0, 0.0])
def test_fast_rcnn_loss_matches_the_formula(beta):
    rng = np.random.default_rng(7)
    logits = rng.normal(0, 2, (2, 6, 4))
    deltas = rng.normal(0, 1, (2, 6, 3, 4))
    classes = np.array([[0, 1, 2, 3, 3, 0], [2, 0, 1, 1, 0, 3]])
    valid = np.ones((2, 6), bool)
    valid[1, 4:] = False
    targets = rng.normal(0, 1, (2, 6, 4))
    used = np.abs(
        np.take_along_axis(deltas, np.maximum(classes - 1, 0)[..., None, None], 2)[:, :, 0]
        - targets
    )
    assert np.any(used < 1) and np.any(used > 1)
    got = fast_rcnn_loss(logits, deltas, classes, targets, valid, beta=beta)
    want = reference.fast_rcnn_loss(logits, deltas, classes, targets, valid, beta)
    np.testing.assert_allclose([float(v) for v in got], want, rtol=1e-5)


def test_rpn_targets_and_losses_run_in_a_graph():
    """match -> sample -> encode -> loss inside one tf.function, as in a train_step."""
    anchors = np.concatenate(integer_anchors())
    gt = ground_truth_batch(np.random.default_rng(8), (32, 40)).astype(np.float32)
    logits = np.random.default_rng(9).normal(size=(3, len(anchors))).astype(np.float32)

    def step(seed):
        labels, matched = match_anchors(anchors, gt)
        positive, negative = sample_balanced(labels, 64, 0.5, seed)
        targets = encode_boxes(tf.gather(gt[..., :4], matched, batch_dims=1), anchors)
        return rpn_loss(
            logits, tf.zeros((3, len(anchors), 4)), labels, targets, positive | negative
        )

    graph = tf.function(step)(tf.constant([1, 2]))
    eager = step(tf.constant([1, 2]))
    np.testing.assert_allclose(graph, eager, rtol=1e-6)
    assert all(np.isfinite(graph)) and float(graph[1]) > 0


class Proposals(keras.layers.Layer):
    def __init__(self, anchors, image_size, **kwargs):
        super().__init__(**kwargs)
        self.anchors, self.image_size = anchors, image_size

    def call(self, objectness, deltas):
        boxes, scores, valid = generate_proposals(
            objectness, deltas, self.anchors, self.image_size, 6, 16
        )
        return {"boxes": boxes, "scores": scores, "valid": valid}


def test_generate_proposals_converts_to_builtin_tflite_and_matches(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    image_size = (16, 24)
    anchors = fpn_anchors(image_size, ("P2", "P3"), sizes=(8.0, 16.0))
    objectness_inputs = [
        keras.Input((len(a),), batch_size=2, name=f"objectness_{k}") for k, a in enumerate(anchors)
    ]
    delta_inputs = [
        keras.Input((len(a), 4), batch_size=2, name=f"deltas_{k}") for k, a in enumerate(anchors)
    ]
    outputs = Proposals(anchors, image_size)(objectness_inputs, delta_inputs)
    model = keras.Model(objectness_inputs + delta_inputs, outputs)
    objectness, deltas = random_rpn_outputs(np.random.default_rng(10), anchors, 2)
    expected = model(objectness + deltas)

    path = str(tmp_path / "proposals")
    model.export(path, format="tf_saved_model", verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(path)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    flatbuffer = converter.convert()
    assert b"Flex" not in flatbuffer
    runner = Interpreter(model_content=flatbuffer).get_signature_runner()
    feeds = {
        tensor.name: value for tensor, value in zip(model.inputs, objectness + deltas, strict=True)
    }
    assert set(feeds) == set(runner.get_input_details())
    results = runner(**feeds)
    assert 0 < np.asarray(expected["valid"]).sum() < 32  # proposals and padding rows
    np.testing.assert_array_equal(results["valid"], expected["valid"])
    for name in ("boxes", "scores"):
        np.testing.assert_allclose(results[name], expected[name], atol=1e-5)


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: fpn_anchors(32, levels=("C2",)),
            '`levels` must be a non-empty sequence of level names "Pk"',
        ),
        (
            lambda: fpn_anchors(32, sizes=(32, 64)),
            "`sizes` must be a sequence of 4 positive numbers. Received: sizes=(32, 64)",
        ),
        (lambda: fpn_anchors(32, aspect_ratios=(1.0, -2.0)), "Received: aspect_ratios=(1.0, -2.0)"),
        (
            lambda: encode_boxes(np.zeros((2, 4)), np.ones((2, 4)), (1, 1, 0, 1)),
            "`weights` must be a sequence of 4 positive",
        ),
        (
            lambda: decode_boxes(np.zeros((2, 3)), np.ones((2, 4))),
            "`deltas` must have shape (..., 4). Received: deltas.shape=(2, 3)",
        ),
        (
            lambda: match_anchors(np.ones((3, 4)), np.ones((1, 2, 5)), negative_iou=0.8),
            "`negative_iou` must not exceed `positive_iou`",
        ),
        (
            lambda: match_anchors(np.ones((3, 4)), np.ones((1, 2, 4))),
            "`gt_valid` is required when `gt_boxes` has no class column",
        ),
        (
            lambda: sample_balanced(np.zeros((1, 4), "int32"), 2, 0.5, seed=(1, 2, 3)),
            "`seed` must be an int tensor of shape (2,)",
        ),
        (
            lambda: sample_balanced(np.zeros((1, 4), "int32"), 2, 1.5, seed=(1, 2)),
            "`positive_fraction` must be a number in [0, 1]",
        ),
        (
            lambda: sample_rois(np.zeros((1, 2, 4)), np.ones((1, 2), bool), np.zeros((1, 1, 5))),
            "`seed` is required",
        ),
        (
            lambda: generate_proposals([np.zeros((1, 3))], [], [np.zeros((3, 4))], 16),
            "`objectness`, `deltas` and `anchors` must be non-empty lists with one entry per level",
        ),
        (
            lambda: fast_rcnn_loss(
                np.zeros((1, 2, 3)),
                np.zeros((1, 2, 3, 4)),
                np.zeros((1, 2)),
                np.zeros((1, 2, 4)),
                np.ones((1, 2), bool),
            ),
            "`class_logits` must be (batch, R, K + 1) and `box_deltas` (batch, R, K, 4)",
        ),
        (
            lambda: rpn_loss(
                np.zeros((1, 2)),
                np.zeros((1, 2, 4)),
                np.zeros((1, 2)),
                np.zeros((1, 2, 4)),
                np.ones((1, 2), bool),
                beta=-1,
            ),
            "`beta` must be a non-negative number. Received: beta=-1",
        ),
    ],
)
def test_bad_arguments(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()
