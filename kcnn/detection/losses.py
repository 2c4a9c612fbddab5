"""The training loss of the anchor-free detector: varifocal + CIoU on task-aligned targets."""

import keras
import tensorflow as tf
from keras import ops

from kcnn._serialization import register
from kcnn.detection.assigner import task_aligned_assign
from kcnn.detection.boxes import anchor_points, box_ciou, box_giou, decode_distances

BOX_LOSSES = ("ciou", "giou")


def sigmoid_cross_entropy(logits, targets):
    """Element-wise binary cross-entropy of `sigmoid(logits)` against `targets`, in the
    overflow-free form max(x, 0) − x·t + log(1 + exp(−|x|))."""
    return ops.maximum(logits, 0.0) - logits * targets + ops.log1p(ops.exp(-ops.abs(logits)))


def varifocal_loss(logits, target_scores, alpha=0.75, gamma=2.0):
    """Element-wise varifocal loss (Zhang, Wang, Dayoub & Sünderhauf 2021, "VarifocalNet:
    An IoU-aware Dense Object Detector", CVPR, arXiv:2008.13367, eq. 2):

        VFL(p, q) = −q (q log p + (1 − q) log(1 − p))   if q > 0
                    −α p^γ log(1 − p)                   if q = 0

    with p = sigmoid(logit) and q the IoU-aware target score. Positives are weighted by
    their own target, so high-quality ones count most; negatives are down-weighted as in
    the focal loss, by p^γ, and nothing is held constant in the gradient (as the paper
    writes it).

    Args:
        logits: tensor `(..., C)` of class logits.
        target_scores: tensor of the same shape, targets in [0, 1].
        alpha: float. Weight of the negatives. Defaults to 0.75 (the paper's).
        gamma: float. Focusing exponent of the negatives. Defaults to 2.0 (the paper's).

    Returns:
        A tensor of the shape of `logits`.

    Example:
    >>> import math
    >>> round(float(varifocal_loss([0.0], [0.0])[0]), 5) == round(0.75 * 0.25 * math.log(2), 5)
    True
    """
    logits = ops.convert_to_tensor(logits)
    target_scores = ops.cast(target_scores, logits.dtype)
    probabilities = ops.sigmoid(logits)
    cross_entropy = sigmoid_cross_entropy(logits, target_scores)
    weight = ops.where(
        ops.greater(target_scores, 0.0),
        target_scores,
        alpha * ops.power(probabilities, gamma),
    )
    return weight * cross_entropy


def _global_sum(value):
    """`value` summed over the replicas in sync (itself without a strategy).

    The loss is normalised by the target scores of the *global* batch: each replica then
    returns its own part of the global loss, and the replicas' summed gradients equal one
    device's on the whole batch. (Dividing by the local sum instead would weight each
    replica's images by how many targets that replica happened to get.)
    """
    value = ops.stop_gradient(value)
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        value = context.all_reduce(tf.distribute.ReduceOp.SUM, value)
    return value


@register
class DetectionLoss(keras.losses.Loss):
    """Loss of `kcnn.detection.Detector`: task-aligned targets, varifocal and CIoU terms.

    For a batch, the task-aligned assigner (`task_aligned_assign`, TOOD, Feng et al. 2021,
    arXiv:2108.07755) turns the padded ground truth into per-point target scores
    `q (B, N, C)`, target boxes and a foreground mask, from the predictions with their
    gradient stopped. With S = max(1, sum of q over the batch), as YOLOv8 and PP-YOLOE
    (Xu et al. 2022, arXiv:2203.16250) normalise:

        classification = sum over points and classes of VFL(logit, q) / S
        box            = sum over foreground points of w (1 − CIoU(box, target)) / S
        loss = classification_weight * classification + box_weight * box

    where w = sum over classes of q at the point (its normalised alignment), VFL is
    `varifocal_loss` (Zhang et al. 2021, arXiv:2008.13367) and CIoU is `box_ciou`
    (Zheng et al. 2020, arXiv:1911.08287; GIoU with `box_loss="giou"`). The default
    weights 1.0 and 2.5 are PP-YOLOE's, the detector that pairs these two terms with the
    same assigner.

    Anchor points: the loss computes them once, from `image_size` and `strides`, with
    `kcnn.detection.anchor_points` (the order in which `Detector` flattens its levels), so
    they must be the detector's fixed input size and its levels' strides
    (`2**k` for level `"Pk"`). A prediction with another number of points is an error.

    Targets and predictions:
        y_true: `(B, max_boxes, 5)` = `(x_min, y_min, x_max, y_max, class)` per box, in
            pixels, padded with rows of class -1.
        y_pred: `(B, num_points, 4 + num_classes)`, the `Detector` output: distances
            `(left, top, right, bottom)` in stride units, then class logits.

    Args:
        num_classes: positive int.
        image_size: int or tuple `(height, width)`, the detector's input size.
        strides: sequence of ints, the strides of the detector's levels from the finest.
            Defaults to `(8, 16, 32)` (levels P3-P5).
        top_k: positive int. Candidates per ground truth in the assigner. Defaults to 10.
        alignment_alpha: float. Score exponent of the alignment metric. Defaults to 1.0.
        alignment_beta: float. IoU exponent of the alignment metric. Defaults to 6.0.
        focal_alpha: float. Varifocal weight of negatives. Defaults to 0.75.
        focal_gamma: float. Varifocal exponent of negatives. Defaults to 2.0.
        classification_weight: float. Defaults to 1.0.
        box_weight: float. Defaults to 2.5.
        box_loss: `"ciou"` or `"giou"`. Defaults to `"ciou"`.
        name: str. Defaults to `"detection_loss"`.

    Raises:
        ValueError: for a bad argument (named, with the value received), or a prediction
            whose shape does not fit `image_size`, `strides` and `num_classes`.

    Example:
    >>> import numpy as np
    >>> loss = DetectionLoss(num_classes=2, image_size=16, strides=(8,))
    >>> y_true = np.array([[[0.0, 0.0, 16.0, 16.0, 1.0], [0.0, 0.0, 0.0, 0.0, -1.0]]])
    >>> y_pred = np.zeros((1, 4, 6), "float32")
    >>> bool(loss(y_true, y_pred) > 0)
    True
    """

    def __init__(
        self,
        num_classes,
        image_size,
        strides=(8, 16, 32),
        top_k=10,
        alignment_alpha=1.0,
        alignment_beta=6.0,
        focal_alpha=0.75,
        focal_gamma=2.0,
        classification_weight=1.0,
        box_weight=2.5,
        box_loss="ciou",
        name="detection_loss",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(
                f"`num_classes` must be a positive int. Received: num_classes={num_classes}"
            )
        if not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"`top_k` must be a positive int. Received: top_k={top_k}")
        if box_loss not in BOX_LOSSES:
            raise ValueError(f"`box_loss` must be one of {BOX_LOSSES}. Received: {box_loss!r}")
        self.num_classes = num_classes
        self.image_size = (
            (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        )
        self.strides = tuple(strides)
        self.points, self.point_strides = anchor_points(self.image_size, self.strides)
        self.top_k = top_k
        self.alignment_alpha = float(alignment_alpha)
        self.alignment_beta = float(alignment_beta)
        self.focal_alpha = float(focal_alpha)
        self.focal_gamma = float(focal_gamma)
        self.classification_weight = float(classification_weight)
        self.box_weight = float(box_weight)
        self.box_loss = box_loss

    def call(self, y_true, y_pred):
        terms = self.loss_terms(y_true, y_pred)
        total = (
            self.classification_weight * terms["classification"] + self.box_weight * terms["box"]
        )
        return total

    def loss_terms(self, y_true, y_pred):
        """Returns `{"classification": ..., "box": ...}`, the two unweighted scalar terms."""
        y_pred = ops.cast(y_pred, "float32")
        y_true = ops.cast(y_true, "float32")
        expected = (len(self.points), 4 + self.num_classes)
        if tuple(y_pred.shape[1:]) != expected:
            raise ValueError(
                f"`y_pred` must have shape (batch, {expected[0]}, {expected[1]}) for "
                f"image_size={self.image_size}, strides={self.strides} and "
                f"num_classes={self.num_classes}. Received: y_pred.shape={tuple(y_pred.shape)}"
            )
        logits = y_pred[..., 4:]
        predicted_boxes = decode_distances(y_pred[..., :4], self.points, self.point_strides)
        target_scores, target_boxes, foreground = task_aligned_assign(
            ops.stop_gradient(ops.sigmoid(logits)),
            ops.stop_gradient(predicted_boxes),
            self.points,
            y_true[..., :4],
            ops.cast(ops.round(y_true[..., 4]), "int32"),
            top_k=self.top_k,
            alpha=self.alignment_alpha,
            beta=self.alignment_beta,
        )
        normaliser = ops.maximum(_global_sum(ops.sum(target_scores)), 1.0)
        classification = ops.sum(
            varifocal_loss(logits, target_scores, self.focal_alpha, self.focal_gamma)
        )
        # Background points get their own (stopped) prediction as a stand-in target, so the
        # overlap has no degenerate box; their weight is 0 in any case.
        target_boxes = ops.where(
            ops.expand_dims(foreground, -1), target_boxes, ops.stop_gradient(predicted_boxes)
        )
        overlap_fn = box_ciou if self.box_loss == "ciou" else box_giou
        overlap = overlap_fn(predicted_boxes, target_boxes)
        weight = ops.sum(target_scores, axis=-1) * ops.cast(foreground, "float32")
        box = ops.sum((1.0 - overlap) * weight)
        return {"classification": classification / normaliser, "box": box / normaliser}

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "image_size": self.image_size,
                "strides": self.strides,
                "top_k": self.top_k,
                "alignment_alpha": self.alignment_alpha,
                "alignment_beta": self.alignment_beta,
                "focal_alpha": self.focal_alpha,
                "focal_gamma": self.focal_gamma,
                "classification_weight": self.classification_weight,
                "box_weight": self.box_weight,
                "box_loss": self.box_loss,
            }
        )
        return config
