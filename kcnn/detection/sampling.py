"""Faster R-CNN's sampling: the region proposal network's anchors and the second stage's RoIs.

Ren, He, Girshick & Sun 2015 (arXiv:1506.01497) section 3.1.3 and Fast R-CNN (Girshick 2015,
arXiv:1504.08083) section 2.3, with Detectron2's choices:

- `sample_balanced`: a fixed-size uniform sample of positives and negatives per image (256
  anchors at most half positive for the region proposal network; 512 RoIs at most a quarter
  foreground for the head), from stateless random numbers.
- `sample_rois`: the ground truth added to the proposals, each candidate matched to its best
  ground truth, a balanced sample and its class and box targets (and the matched row, which
  Mask R-CNN's mask targets read).

Conventions are `kcnn.detection.two_stage`'s.
"""

import tensorflow as tf
from keras import ops

from kcnn._validation import check_fraction, check_positive_int, is_int
from kcnn.detection.two_stage import (
    ROI_BOX_WEIGHTS,
    _boxes_tensor,
    _ground_truth,
    _match,
    encode_boxes,
)

__all__ = ["sample_balanced", "sample_rois"]


def sample_balanced(labels, num_samples, positive_fraction, seed, batch_rows=None):
    """Draws a fixed-size sample of positives and negatives per image, uniformly.

    Faster R-CNN section 3.1.3: up to `round(num_samples * positive_fraction)` positives
    (labels == 1) are drawn uniformly without replacement, and negatives (labels == 0) fill
    the sample up to `num_samples` (256 anchors at 1:1 for the region proposal network; 512
    RoIs at 1:3 for the Fast R-CNN head). Detectron2 truncates `num_samples *
    positive_fraction` where this rounds; both give 128 for those two settings. Labels -1
    are never drawn. Each row draws with stateless random numbers of `seed`: the same seed
    gives the same sample, and a caller varies it per step (e.g. from the optimizer's
    iteration counter) to get fresh samples. With `batch_rows=(first, total)` the `labels`
    are rows `first` to `first + B - 1` of a batch of `total` images: the random numbers are
    drawn for the whole batch and those rows kept, so an image's sample is the same wherever
    the batch is split (how `FasterRCNN`'s replicas sample as one device).

    Args:
        labels: int tensor `(B, N)` in {1, 0, -1}, N static.
        num_samples: positive int, the sample size per image.
        positive_fraction: float in [0, 1].
        seed: int tensor or sequence of shape `(2,)`.
        batch_rows: None, or `(first, total)`, ints or int scalar tensors with
            `0 <= first` and `first + B <= total`. Defaults to None: `(0, B)`.

    Returns:
        A tuple `(positive_mask, negative_mask)` of bool tensors `(B, N)`. Row b has
        `min(#positives, round(num_samples * positive_fraction))` positives and
        `min(#negatives, num_samples - that)` negatives.

    Raises:
        ValueError: for a bad argument, named with the value received.

    Example:
    >>> import numpy as np
    >>> labels = np.array([[1, 1, 1, 0, 0, -1]])
    >>> positive, negative = sample_balanced(labels, 4, 0.5, seed=(1, 2))
    >>> int(np.sum(positive)), int(np.sum(negative)), bool(np.asarray(negative)[0, 5])
    (2, 2, False)
    """
    num_samples = check_positive_int(num_samples, "num_samples")
    positive_fraction = check_fraction(
        positive_fraction, "positive_fraction", low_open=False, high_open=False
    )
    seed = _check_seed(seed)
    labels = ops.convert_to_tensor(labels)
    if len(labels.shape) != 2 or labels.shape[1] is None or "int" not in labels.dtype.name:
        raise ValueError(
            "`labels` must be an int tensor of shape (batch, N) with N known. Received: "
            f"labels.shape={tuple(labels.shape)}, labels.dtype={labels.dtype.name}"
        )
    size = labels.shape[1]
    max_positives = round(num_samples * positive_fraction)
    _check_batch_rows(batch_rows, labels.shape[0])
    if batch_rows is None:
        keys = tf.random.stateless_uniform(tf.shape(labels), seed)  # in [0, 1)
    else:
        first, total = (tf.cast(value, tf.int32) for value in batch_rows)
        keys = tf.random.stateless_uniform([total, size], seed)
        keys = keys[first : first + tf.shape(labels)[0]]
    positive, negative = ops.equal(labels, 1), ops.equal(labels, 0)
    num_positive = ops.minimum(ops.sum(ops.cast(positive, "int32"), axis=1), max_positives)
    num_negative = ops.minimum(
        ops.sum(ops.cast(negative, "int32"), axis=1), num_samples - num_positive
    )
    return (
        _draw(keys, positive, num_positive, min(max_positives, size)),
        _draw(keys, negative, num_negative, min(num_samples, size)),
    )


def sample_rois(
    proposals,
    proposal_valid,
    gt_boxes,
    num_samples=512,
    positive_fraction=0.25,
    foreground_iou=0.5,
    seed=None,
    weights=ROI_BOX_WEIGHTS,
    batch_rows=None,
):
    """Samples the RoIs of the Fast R-CNN head and their class and box targets.

    As Detectron2's `label_and_sample_proposals` (Faster R-CNN section 3.4, Fast R-CNN of
    Girshick 2015, arXiv:1504.08083, section 2.3): the valid ground-truth boxes are added to
    the proposals (`add_ground_truth_to_proposals`), every candidate is matched to the
    ground truth of highest IoU, foreground when that IoU is >= `foreground_iou` and
    background otherwise (Fast R-CNN's lower bound of 0.1 for background is not used), and
    `sample_balanced` draws at most `num_samples` of them, a `positive_fraction` at most
    foreground. The proposals carry no gradient.

    Args:
        proposals: float tensor `(B, P, 4)` of xyxy boxes (`generate_proposals`).
        proposal_valid: bool tensor `(B, P)`.
        gt_boxes: kcnn's padded ground truth `(B, M, 5)`, class -1 for padding.
        num_samples: positive int, RoIs per image. Defaults to 512.
        positive_fraction: float in [0, 1]. Defaults to `0.25`.
        foreground_iou: float in [0, 1]. Defaults to `0.5`.
        seed: int tensor `(2,)`, the `sample_balanced` seed; required.
        weights: the box targets' `encode_boxes` weights. Defaults to
            `(10.0, 10.0, 5.0, 5.0)`.
        batch_rows: None or `(first, total)`, `sample_balanced`'s: the images' rows in a
            larger batch. Defaults to None.

    Returns:
        A dict of `"rois"` float32 `(B, num_samples, 4)`; `"classes"` int32
        `(B, num_samples)`, 0 for background and k + 1 for ground-truth class k;
        `"box_targets"` float32 `(B, num_samples, 4)`, `encode_boxes(matched ground truth,
        roi, weights)` for foreground RoIs and 0 elsewhere; and `"valid"` bool
        `(B, num_samples)`, False on the padding rows that an image with fewer candidates
        than `num_samples` has (RoIs and targets 0, class 0); `"matched"` int32
        `(B, num_samples)`, the ground-truth row of each foreground RoI (0 elsewhere), which
        Mask R-CNN's mask targets read. The foreground RoIs come first.

    Raises:
        ValueError: for a bad argument, named with the value received.

    Example:
    >>> import numpy as np
    >>> proposals = np.array([[[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]]], "float32")
    >>> gt = np.array([[[0.0, 0.0, 10.0, 10.0, 2.0]]], "float32")
    >>> rois = sample_rois(
    ...     proposals, [[True, False]], gt, num_samples=4, positive_fraction=0.5, seed=(0, 1))
    >>> np.asarray(rois["classes"]).tolist(), np.asarray(rois["valid"]).tolist()
    ([[3, 3, 0, 0]], [[True, True, False, False]])
    """
    if seed is None:
        raise ValueError("`seed` is required: an int tensor of shape (2,). Received: seed=None")
    num_samples = check_positive_int(num_samples, "num_samples")
    foreground_iou = check_fraction(
        foreground_iou, "foreground_iou", low_open=False, high_open=False
    )
    proposals = ops.stop_gradient(ops.cast(_boxes_tensor(proposals, "proposals", 3), "float32"))
    gt_boxes = ops.cast(ops.convert_to_tensor(gt_boxes), "float32")
    if len(gt_boxes.shape) != 3 or gt_boxes.shape[2] != 5:
        raise ValueError(
            "`gt_boxes` must be the padded rows (batch, max_boxes, 5) of (x_min, y_min, x_max, "
            f"y_max, class). Received: gt_boxes.shape={tuple(gt_boxes.shape)}"
        )
    gt_boxes, gt_valid = _ground_truth(gt_boxes, None)
    candidates = [proposals, gt_boxes[..., :4]]
    candidate_valid = [ops.cast(proposal_valid, "bool"), gt_valid]
    # Fewer candidates than samples: empty invalid ones make up the number, never drawn.
    missing = num_samples - proposals.shape[1] - gt_boxes.shape[1]
    if missing > 0:
        candidates.append(ops.repeat(ops.zeros_like(proposals[:, :1]), missing, axis=1))
        candidate_valid.append(ops.zeros_like(candidates[-1][..., 0], "bool"))
    candidates = ops.concatenate(candidates, axis=1)
    candidate_valid = ops.concatenate(candidate_valid, axis=1)
    _, max_iou, matched = _match(candidates, gt_boxes, gt_valid)
    foreground = ops.logical_and(candidate_valid, max_iou >= foreground_iou)
    labels = ops.where(foreground, 1, ops.where(candidate_valid, 0, -1))
    positive, negative = sample_balanced(labels, num_samples, positive_fraction, seed, batch_rows)

    # The sampled candidates to the front, foreground first, each in candidate order:
    # top-k puts equal values in index order.
    priority = 2.0 * ops.cast(positive, "float32") + ops.cast(negative, "float32")
    chosen_priority, order = tf.math.top_k(priority, k=num_samples)
    valid, chosen_foreground = chosen_priority > 0.0, chosen_priority > 1.0
    rois = tf.gather(candidates, order, batch_dims=1)
    matched = tf.gather(matched, order, batch_dims=1)
    targets = tf.gather(gt_boxes, matched, batch_dims=1)
    classes = ops.cast(ops.round(targets[..., 4]), "int32") + 1
    box_targets = encode_boxes(targets[..., :4], rois, weights)
    return {
        "rois": ops.where(valid[..., None], rois, 0.0),
        "classes": ops.where(chosen_foreground, classes, 0),
        # Background rows may encode against an empty box (log 0); their target is 0.
        "box_targets": ops.where(chosen_foreground[..., None], box_targets, 0.0),
        "valid": valid,
        "matched": ops.where(chosen_foreground, matched, 0),
    }


def _draw(keys, eligible, count, size):
    """Mask of the `count[b]` eligible entries of row b with the largest keys."""
    if size == 0:
        return ops.zeros_like(eligible)
    _, indices = tf.math.top_k(tf.where(eligible, keys, -1.0), k=size)
    chosen = tf.range(size)[tf.newaxis, :] < count[:, tf.newaxis]
    rows = tf.broadcast_to(tf.range(tf.shape(indices)[0])[:, tf.newaxis], tf.shape(indices))
    positions = tf.stack([rows, indices], axis=-1)
    drawn = tf.scatter_nd(positions, tf.cast(chosen, tf.int32), tf.shape(keys))
    return drawn > 0


def _check_batch_rows(batch_rows, count):
    """Checks `(first, total)` where they are Python ints and the batch size is known."""
    if batch_rows is None:
        return
    if len(batch_rows) != 2:
        raise ValueError(f"`batch_rows` must be (first, total). Received: {batch_rows!r}")
    first, total = batch_rows
    if is_int(first) and is_int(total) and count is not None and not 0 <= first <= total - count:
        raise ValueError(
            f"`batch_rows` (first, total) must hold the {count} images: 0 <= first and "
            f"first + {count} <= total. Received: batch_rows={tuple(batch_rows)}"
        )


def _check_seed(seed):
    tensor = tf.convert_to_tensor(seed)
    if not tensor.dtype.is_integer or tensor.shape != (2,):
        raise ValueError(
            f"`seed` must be an int tensor of shape (2,), e.g. (step, 0). Received: seed={seed!r}"
        )
    return tf.cast(tensor, tf.int64)
