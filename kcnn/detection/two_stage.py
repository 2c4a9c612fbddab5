"""Anchors, targets, proposals and losses of Faster R-CNN with a feature pyramid, batched.

Ren, He, Girshick & Sun, "Faster R-CNN: Towards Real-Time Object Detection with Region
Proposal Networks", NeurIPS 2015 (arXiv:1506.01497), on the pyramid of Lin, Dollar, Girshick,
He, Hariharan & Belongie, "Feature Pyramid Networks for Object Detection", CVPR 2017
(arXiv:1612.03144), with the choices Detectron2 trains it with:

- `fpn_anchors`: one anchor size per level (32 on P2 to 512 on P6) and three aspect ratios.
- `encode_boxes` / `decode_boxes`: the R-CNN box parametrisation (Faster R-CNN eq. 2).
- `match_anchors`, `rpn_loss`: the region proposal network's targets (IoU >= 0.7 positive,
  < 0.3 negative, and each ground truth's best anchors positive) and its loss, on the 256
  anchors per image that `kcnn.detection.sampling.sample_balanced` draws.
- `generate_proposals`: per-level top-k, decoding, clipping, NMS within each level, then the
  best proposals over all levels.
- `fast_rcnn_loss`: the second stage's loss, on the RoIs that
  `kcnn.detection.sampling.sample_rois` draws.

Conventions: boxes are `(x_min, y_min, x_max, y_max)` in input-image pixels. Ground truth is
kcnn's detection target, rows `(x_min, y_min, x_max, y_max, class)` padded to
`(B, max_boxes, 5)` with class -1; classes are 0-based, and the second stage's classes are
shifted by one so that 0 is background. Every shape is static once the batch is known: a
variable number of boxes is padding plus a boolean mask, so everything runs inside
`tf.function` and a Keras `train_step`. `generate_proposals` converts to TFLite with builtin
ops only (TOPK_V2, GATHER, NON_MAX_SUPPRESSION_V5 inside a WHILE over the batch).
TensorFlow ops are used where Keras has none: top-k with batch gathers, NMS, stateless random
numbers and scatters.
"""

import math

import numpy as np
import tensorflow as tf
from keras import ops

from kcnn._validation import (
    check_fraction,
    check_positive_int,
    check_positive_numbers,
    is_int,
    is_number,
    normalize_image_size,
)
from kcnn.detection.boxes import _float_tensor, box_iou
from kcnn.detection.losses import _global_sum, sigmoid_cross_entropy

# Detectron2 and torchvision clamp dw and dh at log(1000 / 16) before the exponential, so a
# wild prediction early in training makes a large box instead of an overflow.
SCALE_CLAMP = math.log(1000.0 / 16)
# Fast R-CNN's box-target weights, Detectron2's ROI_BOX_HEAD.BBOX_REG_WEIGHTS.
ROI_BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
# Invalid proposals score -inf and NMS keeps scores above the lowest float32, so they never
# enter it, whether a kernel compares with > or >=.
LOWEST_SCORE = float(np.finfo(np.float32).min)


def fpn_anchors(
    image_size, levels=("P2", "P3", "P4", "P5"), sizes=None, aspect_ratios=(0.5, 1.0, 2.0)
):
    """The anchor boxes of every pyramid level, as Faster R-CNN with FPN places them.

    Ren et al. 2015 (arXiv:1506.01497) section 3.1.1 and Lin et al. 2017 (arXiv:1612.03144)
    section 4.1: level P_k (stride 2**k) has one anchor size, by default 32 * 2**(k - 2)
    (32, 64, 128, 256, 512 pixels on P2..P6), and one anchor per aspect ratio r = h / w at
    every cell, of area size**2: w = size / sqrt(r), h = size * sqrt(r). A level of an
    image of height H and width W has ceil(H / 2**k) x ceil(W / 2**k) cells, and the anchors
    of cell (y, x) are centred at `((x + 0.5) * 2**k, (y + 0.5) * 2**k)`, the centre of the
    cell (as `kcnn.detection.anchor_points`; Detectron2's default offset is 0, the cell's
    top-left corner). Anchors are not clipped to the image.

    Args:
        image_size: int or tuple `(height, width)` in pixels.
        levels: sequence of level names `"Pk"` (or ints k). Defaults to
            `("P2", "P3", "P4", "P5")`.
        sizes: None or a sequence of positive numbers, the anchor size of each level.
            Defaults to None (32 * 2**(k - 2)).
        aspect_ratios: sequence of positive numbers, height over width. Defaults to
            `(0.5, 1.0, 2.0)`.

    Returns:
        A list with one float32 NumPy array `(H_l * W_l * len(aspect_ratios), 4)` per level,
        xyxy boxes in the order (y, x, ratio): the anchor of cell (y, x) and ratio index r is
        row `(y * W_l + x) * len(aspect_ratios) + r`.

    Raises:
        ValueError: for a bad `image_size`, `levels`, `sizes` or `aspect_ratios`, named with
            the value received.

    Example:
    >>> anchors = fpn_anchors((64, 64), levels=("P2",))
    >>> anchors[0].shape
    (768, 4)
    >>> anchors[0][1].tolist()  # cell (0, 0), ratio 1: 32 x 32 centred at (2, 2)
    [-14.0, -14.0, 18.0, 18.0]
    """
    height, width = normalize_image_size(image_size)
    levels = _level_numbers(levels)
    if sizes is None:
        sizes = tuple(32.0 * 2.0 ** (k - 2) for k in levels)
    sizes = check_positive_numbers(sizes, "sizes", len(levels))
    ratios = np.asarray(check_positive_numbers(aspect_ratios, "aspect_ratios"), np.float64)
    anchors = []
    for k, size in zip(levels, sizes, strict=True):
        stride = 2**k
        half_widths, half_heights = size / np.sqrt(ratios) / 2, size * np.sqrt(ratios) / 2
        cell = np.stack([-half_widths, -half_heights, half_widths, half_heights], axis=-1)
        ys = (np.arange(math.ceil(height / stride)) + 0.5) * stride
        xs = (np.arange(math.ceil(width / stride)) + 0.5) * stride
        centre_y, centre_x = np.meshgrid(ys, xs, indexing="ij")
        centres = np.stack([centre_x, centre_y, centre_x, centre_y], axis=-1).reshape(-1, 1, 4)
        anchors.append((centres + cell).reshape(-1, 4).astype(np.float32))
    return anchors


def encode_boxes(boxes, anchors, weights=(1.0, 1.0, 1.0, 1.0)):
    """Encodes boxes as R-CNN deltas to anchors (or proposals).

    The parametrisation of Girshick, Donahue, Darrell & Malik 2014 (R-CNN, arXiv:1311.2524,
    appendix C) and Faster R-CNN eq. 2, with Detectron2's weights: for a box of centre
    (x, y) and size (w, h) and an anchor of centre (xa, ya) and size (wa, ha),

        tx = wx (x - xa) / wa,  ty = wy (y - ya) / ha,  tw = ww log(w / wa),  th = wh log(h / ha)

    with widths `x_max - x_min` (no "+ 1").

    Args:
        boxes: tensor `(..., 4)` of xyxy boxes.
        anchors: tensor `(..., 4)` of xyxy anchors, broadcastable against `boxes`.
        weights: 4 positive numbers `(wx, wy, ww, wh)`. Defaults to `(1.0, 1.0, 1.0, 1.0)`
            (the region proposal network's); Fast R-CNN's are `(10.0, 10.0, 5.0, 5.0)`.

    Returns:
        A tensor `(..., 4)` of `(tx, ty, tw, th)`, in the boxes' float dtype.

    Example:
    >>> deltas = encode_boxes([[0.0, 0.0, 20.0, 10.0]], [[0.0, 0.0, 10.0, 10.0]])
    >>> np.asarray(deltas).astype("float64").round(4).tolist()
    [[0.5, 0.0, 0.6931, 0.0]]
    """
    weight_x, weight_y, weight_w, weight_h = check_positive_numbers(weights, "weights", 4)
    boxes = _boxes_tensor(boxes, "boxes")
    anchors = ops.cast(_boxes_tensor(anchors, "anchors"), boxes.dtype)
    x, y, w, h = _centre_and_size(boxes)
    anchor_x, anchor_y, anchor_w, anchor_h = _centre_and_size(anchors)
    return ops.stack(
        [
            weight_x * (x - anchor_x) / anchor_w,
            weight_y * (y - anchor_y) / anchor_h,
            weight_w * ops.log(w / anchor_w),
            weight_h * ops.log(h / anchor_h),
        ],
        axis=-1,
    )


def decode_boxes(deltas, anchors, weights=(1.0, 1.0, 1.0, 1.0), clip=SCALE_CLAMP):
    """Decodes R-CNN deltas into xyxy boxes, the inverse of `encode_boxes`.

    x = xa + wa tx / wx, y = ya + ha ty / wy, w = wa exp(min(tw / ww, clip)),
    h = ha exp(min(th / wh, clip)) (Faster R-CNN eq. 2; the clamp is Detectron2's and
    torchvision's `scale_clamp`).

    Args:
        deltas: tensor `(..., 4)` of `(tx, ty, tw, th)`.
        anchors: tensor `(..., 4)` of xyxy anchors, broadcastable against `deltas`.
        weights: 4 positive numbers, those the deltas were encoded with. Defaults to
            `(1.0, 1.0, 1.0, 1.0)`.
        clip: None or a number, the largest `tw / ww` and `th / wh` used. Defaults to
            `log(1000 / 16)`.

    Returns:
        A tensor `(..., 4)` of xyxy boxes in the deltas' float dtype.

    Example:
    >>> np.asarray(decode_boxes([[1.0, 0.0, 0.0, 0.0]], [[0.0, 0.0, 10.0, 10.0]])).tolist()
    [[10.0, 0.0, 20.0, 10.0]]
    """
    weight_x, weight_y, weight_w, weight_h = check_positive_numbers(weights, "weights", 4)
    if clip is not None and not is_number(clip):
        raise ValueError(f"`clip` must be None or a number. Received: clip={clip!r}")
    deltas = _boxes_tensor(deltas, "deltas")
    anchors = ops.cast(_boxes_tensor(anchors, "anchors"), deltas.dtype)
    anchor_x, anchor_y, anchor_w, anchor_h = _centre_and_size(anchors)
    dx, dy, dw, dh = ops.unstack(deltas, 4, axis=-1)
    dw, dh = dw / weight_w, dh / weight_h
    if clip is not None:
        dw, dh = ops.minimum(dw, clip), ops.minimum(dh, clip)
    x, y = anchor_x + dx / weight_x * anchor_w, anchor_y + dy / weight_y * anchor_h
    half_w, half_h = 0.5 * anchor_w * ops.exp(dw), 0.5 * anchor_h * ops.exp(dh)
    return ops.stack([x - half_w, y - half_h, x + half_w, y + half_h], axis=-1)


def match_anchors(
    anchors, gt_boxes, gt_valid=None, positive_iou=0.7, negative_iou=0.3, allow_low_quality=True
):
    """Labels every anchor positive, negative or ignored by its IoU with the ground truth.

    Faster R-CNN section 3.1.2 (Ren et al. 2015, arXiv:1506.01497): an anchor is positive
    when its highest IoU with a ground-truth box is >= `positive_iou`, negative when it is
    < `negative_iou`, and ignored (label -1) in between. With `allow_low_quality`, every
    anchor whose IoU with some ground truth equals that ground truth's highest IoU over all
    anchors (when it is > 0) is positive too, ties included, so that every box has an anchor
    (Detectron2's `allow_low_quality_matches`). Padding rows never match; an image without
    ground truth has only negatives.

    Args:
        anchors: tensor `(A, 4)` of xyxy anchors (e.g. the levels of `fpn_anchors`
            concatenated).
        gt_boxes: tensor `(B, M, 4)` or kcnn's padded rows `(B, M, 5)`; only the first 4
            columns are read.
        gt_valid: None or bool tensor `(B, M)`, True for real boxes. None: the rows whose
            fifth column (the class) is >= 0. Defaults to None.
        positive_iou: float in [0, 1]. Defaults to `0.7`.
        negative_iou: float in [0, positive_iou]. Defaults to `0.3`.
        allow_low_quality: bool. Defaults to True.

    Returns:
        A tuple `(labels, matched)` of int32 tensors `(B, A)`: labels in {1, 0, -1}, and the
        index in `[0, M)` of the valid ground truth with the highest IoU (the first on ties;
        a low-quality positive keeps this index too, as in Detectron2). `matched` is 0 in an
        image without ground truth; read it where `labels == 1`.

    Raises:
        ValueError: for bad thresholds or shapes, named with the value received.

    Example:
    >>> anchors = [[0.0, 0.0, 10.0, 10.0], [10.0, 0.0, 20.0, 10.0], [30.0, 30.0, 40.0, 40.0]]
    >>> gt = [[[0.0, 0.0, 10.0, 8.0, 0.0], [12.0, 0.0, 20.0, 4.0, 1.0], [0, 0, 0, 0, -1.0]]]
    >>> labels, matched = match_anchors(anchors, gt)  # IoUs 0.8 and 0.32 (the best for box 1)
    >>> np.asarray(labels).tolist(), np.asarray(matched).tolist()
    ([[1, 1, 0]], [[0, 1, 0]])
    >>> np.asarray(match_anchors(anchors, gt, allow_low_quality=False)[0]).tolist()
    [[1, -1, 0]]
    """
    negative_iou = check_fraction(negative_iou, "negative_iou", low_open=False, high_open=False)
    positive_iou = check_fraction(positive_iou, "positive_iou", low_open=False, high_open=False)
    if negative_iou > positive_iou:
        raise ValueError(
            "`negative_iou` must not exceed `positive_iou`. Received: "
            f"negative_iou={negative_iou}, positive_iou={positive_iou}"
        )
    if not isinstance(allow_low_quality, bool):
        raise ValueError(
            f"`allow_low_quality` must be a bool. Received: allow_low_quality={allow_low_quality!r}"
        )
    gt_boxes, gt_valid = _ground_truth(gt_boxes, gt_valid)
    anchors = ops.cast(_boxes_tensor(anchors, "anchors", rank=2), gt_boxes.dtype)
    iou, max_iou, matched = _match(ops.expand_dims(anchors, 0), gt_boxes, gt_valid)
    labels = ops.where(max_iou >= positive_iou, 1, ops.where(max_iou < negative_iou, 0, -1))
    if allow_low_quality:
        best = ops.max(iou, axis=1, keepdims=True)  # each ground truth's best IoU, (B, 1, M)
        is_best = ops.logical_and(ops.equal(iou, best), best > 0.0)
        labels = ops.where(ops.any(is_best, axis=2), 1, labels)
    return ops.cast(labels, "int32"), matched


def generate_proposals(
    objectness,
    deltas,
    anchors,
    image_size,
    pre_nms_top_k=1000,
    post_nms_top_k=1000,
    nms_iou=0.7,
    min_size=0.0,
    weights=(1.0, 1.0, 1.0, 1.0),
):
    """Region proposals from the region proposal network's outputs, per image.

    Faster R-CNN section 3.3 on a pyramid, as Detectron2's `find_top_rpn_proposals`: on
    each level, the `min(pre_nms_top_k, A_l)` anchors with the highest objectness are decoded
    (`decode_boxes`), clipped to the image, and dropped unless both their width and height
    exceed `min_size` (so empty boxes are dropped even with `min_size=0`).
    Greedy NMS then runs within each level (a box is suppressed by a higher-scoring kept
    box of its level whose IoU with it is above `nms_iou`), and the `post_nms_top_k` best
    boxes over all levels are kept. NMS is one `NonMaxSuppressionV5` per image over all
    levels at once, each level moved to its own region of the plane so that levels never
    overlap (the class offset of torchvision's `batched_nms`), looped over the batch by
    `tf.map_fn`; everything converts to TFLite builtins.

    Args:
        objectness: list with one float tensor `(B, A_l)` of logits per level.
        deltas: list with one float tensor `(B, A_l, 4)` per level.
        anchors: list with one array `(A_l, 4)` per level (`fpn_anchors`).
        image_size: int or `(height, width)`; boxes are clipped to `[0, W] x [0, H]`.
        pre_nms_top_k: positive int, candidates per level and image. Defaults to 1000.
        post_nms_top_k: positive int, proposals per image. Defaults to 1000.
        nms_iou: float in [0, 1]. Defaults to `0.7`.
        min_size: non-negative number, in pixels. Defaults to `0.0`.
        weights: the deltas' `encode_boxes` weights. Defaults to `(1.0, 1.0, 1.0, 1.0)`.

    Returns:
        A tuple `(boxes, scores, valid)`: float32 `boxes (B, post_nms_top_k, 4)`, the
        objectness logits `scores (B, post_nms_top_k)` sorted in decreasing order, and bool
        `valid (B, post_nms_top_k)`. Rows past the number of proposals are padding: valid
        False, boxes and scores 0.

    Raises:
        ValueError: for a bad argument or inconsistent per-level shapes.

    Example:
    >>> anchors = fpn_anchors(16, levels=("P2",), sizes=(4.0,), aspect_ratios=(1.0,))
    >>> objectness = [np.arange(16, dtype="float32")[None]]
    >>> deltas = [np.zeros((1, 16, 4), "float32")]
    >>> boxes, scores, valid = generate_proposals(
    ...     objectness, deltas, anchors, 16, post_nms_top_k=3)
    >>> np.asarray(boxes)[0].tolist()
    [[12.0, 12.0, 16.0, 16.0], [8.0, 12.0, 12.0, 16.0], [4.0, 12.0, 8.0, 16.0]]
    >>> np.asarray(scores)[0].tolist(), np.asarray(valid)[0].tolist()
    ([15.0, 14.0, 13.0], [True, True, True])
    """
    height, width = normalize_image_size(image_size)
    pre_nms_top_k = check_positive_int(pre_nms_top_k, "pre_nms_top_k")
    post_nms_top_k = check_positive_int(post_nms_top_k, "post_nms_top_k")
    nms_iou = check_fraction(nms_iou, "nms_iou", low_open=False, high_open=False)
    if not is_number(min_size) or not min_size >= 0:
        raise ValueError(
            f"`min_size` must be a non-negative number. Received: min_size={min_size!r}"
        )
    lists = {"objectness": objectness, "deltas": deltas, "anchors": anchors}
    if not all(isinstance(value, list | tuple) for value in lists.values()) or (
        len({len(value) for value in lists.values()}) != 1 or not anchors
    ):
        counts = {
            name: len(value) if isinstance(value, list | tuple) else type(value).__name__
            for name, value in lists.items()
        }
        raise ValueError(
            "`objectness`, `deltas` and `anchors` must be non-empty lists with one entry per "
            f"level each. Received lengths: {counts}"
        )
    boxes, scores, levels = [], [], []
    for level, (logits, level_deltas, level_anchors) in enumerate(
        zip(objectness, deltas, anchors, strict=True)
    ):
        logits = tf.cast(logits, tf.float32)
        level_deltas = tf.cast(level_deltas, tf.float32)
        level_anchors = tf.cast(level_anchors, tf.float32)
        count = level_anchors.shape[0]
        if (
            level_anchors.shape.rank != 2
            or level_anchors.shape[1] != 4
            or logits.shape.rank != 2
            or logits.shape[1] != count
            or level_deltas.shape[1:] != (count, 4)
        ):
            raise ValueError(
                f"Level {level}: `anchors` must be (A, 4), `objectness` (batch, A) and `deltas` "
                f"(batch, A, 4). Received: anchors.shape={tuple(level_anchors.shape)}, "
                f"objectness.shape={tuple(logits.shape)}, deltas.shape={tuple(level_deltas.shape)}"
            )
        top_scores, indices = tf.math.top_k(logits, k=min(pre_nms_top_k, count))
        level_boxes = decode_boxes(
            tf.gather(level_deltas, indices, batch_dims=1),
            tf.gather(level_anchors, indices),
            weights,
        )
        boxes.append(level_boxes)
        scores.append(top_scores)
        levels.append(np.full(indices.shape[1], level, np.float32))
    boxes = tf.minimum(
        tf.maximum(tf.concat(boxes, axis=1), 0.0),
        tf.constant([width, height, width, height], tf.float32),
    )
    scores = tf.concat(scores, axis=1)
    # Level l moves by l * span pixels: its clipped boxes never overlap another level's.
    offsets = np.concatenate(levels)[:, None] * float(max(height, width) + 1)
    shifted = boxes + tf.constant(offsets)
    keep = tf.logical_and(
        boxes[..., 2] - boxes[..., 0] > min_size, boxes[..., 3] - boxes[..., 1] > min_size
    )
    # A box that the offset rounds to zero width is dropped too: LiteRT's NMS kernel would
    # select a zero-area box again and again (see `kcnn.detection.decode`).
    keep = tf.logical_and(keep, tf.reduce_all(shifted[..., 2:] > shifted[..., :2], axis=-1))
    scores = tf.where(keep, scores, -np.inf)

    def suppress(image):
        image_boxes, image_scores = image
        indices, _, count = tf.raw_ops.NonMaxSuppressionV5(
            boxes=image_boxes,  # (y1, x1, y2, x2) expected: IoU is the same with x, y swapped
            scores=image_scores,
            max_output_size=post_nms_top_k,
            iou_threshold=nms_iou,
            score_threshold=LOWEST_SCORE,
            soft_nms_sigma=0.0,
            pad_to_max_output_size=True,
        )
        return indices, count

    indices, count = tf.map_fn(
        suppress,
        (shifted, scores),
        fn_output_signature=(
            tf.TensorSpec([post_nms_top_k], tf.int32),
            tf.TensorSpec([], tf.int32),
        ),
    )
    valid = tf.range(post_nms_top_k)[tf.newaxis, :] < count[:, tf.newaxis]
    return (
        tf.where(valid[..., tf.newaxis], tf.gather(boxes, indices, batch_dims=1), 0.0),
        tf.where(valid, tf.gather(scores, indices, batch_dims=1), 0.0),
        valid,
    )


def rpn_loss(objectness_logits, deltas, labels, box_targets, sample_mask, beta=1.0 / 9.0):
    """The region proposal network's loss: objectness and box regression on sampled anchors.

    Faster R-CNN eq. 1 with Detectron2's normalisation: over the anchors in `sample_mask`
    (`sample_balanced`), binary cross-entropy of `sigmoid(objectness)` against
    `labels == 1`, and, over the sampled positives, the smooth L1 loss of Fast R-CNN
    (Girshick 2015, arXiv:1504.08083, eq. 3) with Detectron2's `beta`:
    0.5 d**2 / beta where |d| < beta, |d| - 0.5 beta elsewhere (L1 for beta 0), summed over
    the 4 deltas. Both terms are divided by the number of sampled anchors S (at least 1),
    summed over the replicas in sync. Detectron2 divides by `num_samples * B`, which equals
    S whenever every image has enough anchors to fill its sample; the paper's 1 / N_reg of
    eq. 1 differs only by the weight lambda.

    Args:
        objectness_logits: float tensor `(B, A)`.
        deltas: float tensor `(B, A, 4)`, the predicted deltas.
        labels: int tensor `(B, A)` in {1, 0, -1} (`match_anchors`).
        box_targets: float tensor `(B, A, 4)`, e.g. `encode_boxes(tf.gather(gt[..., :4],
            matched, batch_dims=1), anchors)`; read only at sampled positives, so values
            elsewhere (non-finite ones included) do not matter.
        sample_mask: bool tensor `(B, A)`, the sampled anchors.
        beta: non-negative number. Defaults to `1 / 9` (the original Faster R-CNN's sigma 3).

    Returns:
        A tuple `(classification, regression)` of float32 scalars.

    Example:
    >>> labels = np.array([[1, 0, -1]])
    >>> classification, regression = rpn_loss(
    ...     np.zeros((1, 3)), np.zeros((1, 3, 4)), labels, np.zeros((1, 3, 4)),
    ...     labels >= 0)
    >>> round(float(classification), 4), float(regression)  # log 2, and exact deltas
    (0.6931, 0.0)
    """
    beta = _check_beta(beta)
    logits = ops.cast(objectness_logits, "float32")
    sampled = ops.cast(sample_mask, "bool")
    positive = ops.logical_and(sampled, ops.equal(labels, 1))
    count = ops.maximum(_global_sum(ops.sum(ops.cast(sampled, "float32"))), 1.0)
    cross_entropy = sigmoid_cross_entropy(logits, ops.cast(positive, "float32"))
    classification = ops.sum(ops.where(sampled, cross_entropy, 0.0)) / count
    regression = _box_regression(deltas, box_targets, positive, beta) / count
    return classification, regression


def fast_rcnn_loss(class_logits, box_deltas, classes, box_targets, valid, beta=1.0):
    """The Fast R-CNN head's loss: softmax classification and class-specific box regression.

    Fast R-CNN (Girshick 2015, arXiv:1504.08083) eq. 1, normalised as Detectron2's
    `FastRCNNOutputLayers.losses`: the softmax cross-entropy of every valid RoI, and the
    smooth L1 loss (see `rpn_loss`) between a foreground RoI's deltas for its own class and
    its `box_targets`, summed over the 4 deltas; both are divided by the number of valid
    RoIs (at least 1, summed over the replicas in sync).

    Args:
        class_logits: float tensor `(B, R, K + 1)`, index 0 background.
        box_deltas: float tensor `(B, R, K, 4)`, the deltas of class k + 1 at `[..., k, :]`.
        classes: int tensor `(B, R)` in [0, K] (`sample_rois`).
        box_targets: float tensor `(B, R, 4)`.
        valid: bool tensor `(B, R)`.
        beta: non-negative number. Defaults to `1.0` (Fast R-CNN's; Detectron2 uses 0,
            the L1 loss).

    Returns:
        A tuple `(classification, regression)` of float32 scalars.

    Raises:
        ValueError: if `box_deltas` does not have K = `class_logits.shape[-1] - 1` slots.

    Example:
    >>> classification, regression = fast_rcnn_loss(
    ...     np.zeros((1, 2, 3)), np.zeros((1, 2, 2, 4)), np.array([[2, 0]]),
    ...     np.ones((1, 2, 4)), np.array([[True, True]]))
    >>> round(float(classification), 4), float(regression)  # log 3; 4 * 0.5 over 2 RoIs
    (1.0986, 1.0)
    """
    beta = _check_beta(beta)
    logits = ops.cast(class_logits, "float32")
    box_deltas = ops.cast(box_deltas, "float32")
    num_classes = logits.shape[-1] - 1
    if len(logits.shape) != 3 or tuple(box_deltas.shape[2:]) != (num_classes, 4):
        raise ValueError(
            "`class_logits` must be (batch, R, K + 1) and `box_deltas` (batch, R, K, 4). "
            f"Received: class_logits.shape={tuple(logits.shape)}, "
            f"box_deltas.shape={tuple(box_deltas.shape)}"
        )
    valid = ops.cast(valid, "bool")
    classes = ops.where(valid, ops.cast(classes, "int32"), 0)
    count = ops.maximum(_global_sum(ops.sum(ops.cast(valid, "float32"))), 1.0)
    log_probabilities = ops.log_softmax(logits, axis=-1)
    cross_entropy = -tf.gather(log_probabilities, classes, batch_dims=2)
    classification = ops.sum(ops.where(valid, cross_entropy, 0.0)) / count
    foreground = ops.logical_and(valid, classes > 0)
    predicted = tf.gather(box_deltas, ops.maximum(classes - 1, 0), batch_dims=2)
    regression = _box_regression(predicted, box_targets, foreground, beta) / count
    return classification, regression


def _box_regression(deltas, targets, mask, beta):
    """Smooth L1 summed over the 4 deltas and the boxes in `mask`."""
    deltas = ops.cast(deltas, "float32")
    # The targets are cleaned first: a non-finite target outside the mask would otherwise
    # make the gradient NaN through the masked-out branch of `where`.
    targets = ops.where(mask[..., None], ops.cast(targets, "float32"), deltas)
    difference = ops.abs(deltas - ops.stop_gradient(targets))
    if beta < 1e-5:  # Detectron2: beta 0 is the L1 loss
        smooth = difference
    else:
        smooth = ops.where(difference < beta, 0.5 * difference**2 / beta, difference - 0.5 * beta)
    return ops.sum(ops.where(mask, ops.sum(smooth, axis=-1), 0.0))


def _match(boxes, gt_boxes, gt_valid):
    """IoU `(B, N, M)` of `boxes (B or 1, N, 4)` with the valid ground truth (padding -1),
    each box's highest IoU and the index of its ground truth."""
    iou = box_iou(boxes, gt_boxes[..., :4], pairwise=True)
    iou = ops.where(ops.expand_dims(gt_valid, 1), iou, -1.0)
    # tf.math.argmax: the first index on ties, as NumPy.
    return iou, ops.max(iou, axis=2), tf.math.argmax(iou, axis=2, output_type=tf.int32)


def _ground_truth(gt_boxes, gt_valid):
    gt_boxes = _float_tensor(gt_boxes)
    if len(gt_boxes.shape) != 3 or gt_boxes.shape[2] not in (4, 5) or gt_boxes.shape[1] == 0:
        raise ValueError(
            "`gt_boxes` must have shape (batch, max_boxes, 4) or kcnn's padded rows (batch, "
            f"max_boxes, 5), max_boxes >= 1. Received: gt_boxes.shape={tuple(gt_boxes.shape)}"
        )
    if gt_valid is None:
        if gt_boxes.shape[2] != 5:
            raise ValueError(
                "`gt_valid` is required when `gt_boxes` has no class column. Received: "
                f"gt_boxes.shape={tuple(gt_boxes.shape)}, gt_valid=None"
            )
        gt_valid = gt_boxes[..., 4] >= 0.0
    return gt_boxes, ops.cast(gt_valid, "bool")


def _centre_and_size(boxes):
    x_min, y_min, x_max, y_max = ops.unstack(boxes, 4, axis=-1)
    width, height = x_max - x_min, y_max - y_min
    return x_min + 0.5 * width, y_min + 0.5 * height, width, height


def _boxes_tensor(boxes, name, rank=None):
    boxes = _float_tensor(boxes)
    if boxes.shape[-1] != 4 or (rank is not None and len(boxes.shape) != rank):
        shape = f"({'N, ' if rank == 2 else 'batch, N, ' if rank == 3 else '..., '}4)"
        raise ValueError(
            f"`{name}` must have shape {shape}. Received: {name}.shape={tuple(boxes.shape)}"
        )
    return boxes


def _check_beta(beta):
    if not is_number(beta) or not beta >= 0:
        raise ValueError(f"`beta` must be a non-negative number. Received: beta={beta!r}")
    return float(beta)


def _level_numbers(levels):
    values = tuple(levels) if isinstance(levels, list | tuple) else ()
    numbers = []
    for level in values:
        if isinstance(level, str) and level[:1] == "P" and level[1:].isdigit():
            numbers.append(int(level[1:]))
        elif is_int(level) and level >= 0:
            numbers.append(int(level))
    if not values or len(numbers) != len(values):
        raise ValueError(
            '`levels` must be a non-empty sequence of level names "Pk" (stride 2**k), e.g. '
            f'("P2", "P3", "P4", "P5"). Received: levels={levels!r}'
        )
    return tuple(numbers)
