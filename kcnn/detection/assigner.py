"""The task-aligned assigner of TOOD (Feng et al. 2021, arXiv:2108.07755), as in YOLOv8."""

from keras import ops

from kcnn.detection.boxes import box_iou

EPSILON = 1e-9


def task_aligned_assign(
    class_scores,
    predicted_boxes,
    points,
    gt_boxes,
    gt_classes,
    gt_mask=None,
    top_k=10,
    alpha=1.0,
    beta=6.0,
):
    """Assigns ground-truth boxes to anchor points by their task-alignment metric.

    Feng, Zhong, Gao, Scott & Huang, "TOOD: Task-aligned One-stage Object Detection",
    ICCV 2021 (arXiv:2108.07755), section 3.2, as YOLOv8 uses it:

    1. For every ground truth g and point n, the alignment metric
       t = s^alpha * u^beta, with s the predicted score of g's class at n and u the IoU of
       the box predicted at n with g.
    2. Candidates of g are the points whose (x, y) lies strictly inside g; g keeps its
       `top_k` candidates with the largest t (all of them when it has fewer; candidates
       tied with the k-th value are all kept).
    3. A point kept by several ground truths goes to the one its predicted box overlaps
       most (highest IoU).
    4. The target score of a foreground point is t normalised per ground truth so that
       its largest value equals the largest IoU of that ground truth's foreground points:
       t_hat = t / max(t) * max(u) (the paper's eq. 9-10 normalisation); every other class,
       and every background point, has target 0.

    Call it on predictions with the gradient stopped: the assignment is a target, not a
    function of the weights.

    Args:
        class_scores: tensor `(B, N, C)` of predicted class probabilities (after the
            sigmoid) at the N points.
        predicted_boxes: tensor `(B, N, 4)` of predicted xyxy boxes in pixels.
        points: tensor `(N, 2)` of the points' `(x, y)` pixels
            (`kcnn.detection.anchor_points`).
        gt_boxes: tensor `(B, M, 4)` of xyxy ground-truth boxes, padded to M per image.
        gt_classes: int tensor `(B, M)` of classes in `[0, C)`; a negative class marks
            padding.
        gt_mask: None or bool tensor `(B, M)`, True for real boxes; combined with the
            class test. Defaults to None.
        top_k: positive int. Candidates kept per ground truth. Defaults to 10.
        alpha: float. Exponent of the score in t. Defaults to 1.0.
        beta: float. Exponent of the IoU in t. Defaults to 6.0.

    Returns:
        A tuple `(target_scores, target_boxes, foreground)`: `target_scores (B, N, C)`
        float, the normalised alignment t_hat at the assigned class of a foreground point,
        0 elsewhere; `target_boxes (B, N, 4)`, the assigned ground-truth box of each
        point (zeros where not foreground); `foreground (B, N)` bool.

    Example:
    >>> import numpy as np
    >>> points = np.array([[1.0, 1.0], [3.0, 1.0]], "float32")
    >>> boxes = np.array([[[0.0, 0.0, 2.0, 2.0], [2.0, 0.0, 4.0, 2.0]]], "float32")
    >>> scores = np.full((1, 2, 1), 0.5, "float32")
    >>> gt = np.array([[[0.0, 0.0, 2.0, 2.0]]], "float32")
    >>> target_scores, target_boxes, foreground = task_aligned_assign(
    ...     scores, boxes, points, gt, np.array([[0]]))
    >>> np.asarray(foreground).tolist(), np.asarray(target_scores)[0, :, 0].tolist()
    ([[True, False]], [1.0, 0.0])
    """
    class_scores = ops.convert_to_tensor(class_scores)
    dtype = class_scores.dtype
    predicted_boxes = ops.cast(predicted_boxes, dtype)
    points = ops.cast(points, dtype)
    gt_boxes = ops.cast(gt_boxes, dtype)
    gt_classes = ops.cast(gt_classes, "int32")
    num_points, num_classes = class_scores.shape[1], class_scores.shape[2]
    valid = ops.greater_equal(gt_classes, 0)
    if gt_mask is not None:
        valid = ops.logical_and(valid, ops.cast(gt_mask, "bool"))
    gt_one_hot = ops.one_hot(ops.maximum(gt_classes, 0), num_classes, dtype=dtype)

    # (B, M, N): score of each ground truth's class at each point, and IoU with its box.
    score = ops.einsum("bmc,bnc->bmn", gt_one_hot, class_scores)
    overlap = box_iou(gt_boxes, predicted_boxes, pairwise=True)
    alignment = ops.power(score, alpha) * ops.power(overlap, beta)

    candidate = ops.logical_and(_points_inside(points, gt_boxes), ops.expand_dims(valid, -1))
    ranked = ops.where(candidate, alignment, -1.0)
    kth_best = ops.top_k(ranked, min(top_k, num_points), sorted=True)[0][..., -1:]
    positive = ops.logical_and(candidate, ops.greater_equal(ranked, kth_best))

    # A point kept by several ground truths goes to the one with the highest IoU.
    claimed_overlap = ops.where(positive, overlap, -1.0)
    best_gt = ops.argmax(claimed_overlap, axis=1)  # (B, N)
    foreground = ops.any(positive, axis=1)
    num_gt = gt_classes.shape[1]
    chosen = ops.logical_and(
        ops.transpose(ops.one_hot(best_gt, num_gt, dtype="bool"), (0, 2, 1)),
        ops.expand_dims(foreground, 1),
    )  # (B, M, N)

    chosen_float = ops.cast(chosen, dtype)
    alignment = alignment * chosen_float
    overlap = overlap * chosen_float
    max_alignment = ops.max(alignment, axis=-1, keepdims=True)
    max_overlap = ops.max(overlap, axis=-1, keepdims=True)
    normalised = ops.max(alignment * max_overlap / (max_alignment + EPSILON), axis=1)  # (B, N)

    target_one_hot = ops.einsum("bmn,bmc->bnc", chosen_float, gt_one_hot)
    target_scores = target_one_hot * ops.expand_dims(normalised, -1)
    target_boxes = ops.einsum("bmn,bmk->bnk", chosen_float, gt_boxes)
    return target_scores, target_boxes, foreground


def _points_inside(points, boxes):
    """(B, M, N) bool: whether point n lies strictly inside box m."""
    x, y = points[:, 0], points[:, 1]
    x_min, y_min, x_max, y_max = (ops.expand_dims(value, -1) for value in ops.unstack(boxes, 4, -1))
    nearest_side = ops.minimum(ops.minimum(x - x_min, y - y_min), ops.minimum(x_max - x, y_max - y))
    return ops.greater(nearest_side, EPSILON)
