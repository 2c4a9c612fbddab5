"""Anchor-box detection heads' loss and decoding: `RetinaNetLoss` (the focal loss of Lin et al.
2017 with keras-hub's anchor matching, and smooth L1) and `RetinaNetDecoder`, the anchor-box
counterparts of `DetectionLoss` and `DetectionDecoder` (see `kcnn.detection.RetinaNet`)."""

import keras
import keras_hub
import numpy as np
import tensorflow as tf
from keras import ops

from kcnn._serialization import register
from kcnn._validation import check_positive_int
from kcnn.detection.decode import DetectionDecoder, suppress_detections
from kcnn.detection.losses import _global_sum, sigmoid_cross_entropy


def _anchor_generator(min_level, max_level, num_scales, aspect_ratios, anchor_size):
    return keras_hub.layers.AnchorGenerator(
        "xyxy",
        min_level=min_level,
        max_level=max_level,
        num_scales=num_scales,
        aspect_ratios=list(aspect_ratios),
        anchor_size=anchor_size,
    )


def _anchors(image_size, config):
    generator = _anchor_generator(**config)
    image = np.zeros((1, *image_size, 3), np.float32)
    per_level = generator(image)
    return np.concatenate(
        [
            np.asarray(per_level[f"P{k}"])
            for k in range(config["min_level"], config["max_level"] + 1)
        ]
    ).astype(np.float32)


def decode_anchor_deltas(anchors, deltas):
    """Boxes from "center_xywh" deltas to anchors (variance 1), the RetinaNet / Faster R-CNN
    parametrisation (Ren et al. 2015, eq. 2): for an anchor with centre `(xa, ya)` and size
    `(wa, ha)`, `x = xa + dx * wa`, `y = ya + dy * ha`, `w = wa * exp(dw)`,
    `h = ha * exp(dh)`. Returns xyxy boxes of the shape of `deltas`."""
    anchors = tf.cast(anchors, tf.float32)
    deltas = tf.cast(deltas, tf.float32)
    size = anchors[:, 2:] - anchors[:, :2]
    centre = anchors[:, :2] + 0.5 * size
    box_centre = centre + deltas[..., :2] * size
    box_size = size * tf.exp(deltas[..., 2:])
    return tf.concat([box_centre - 0.5 * box_size, box_centre + 0.5 * box_size], axis=-1)


@register
class RetinaNetDecoder(DetectionDecoder):
    """Turns a `RetinaNet`'s outputs into final detections: the anchor boxes moved by the
    predicted deltas (`decode_anchor_deltas`), then what `DetectionDecoder` does (best
    class per anchor, score threshold, per-class NMS, padded outputs; TFLite builtins).

    Args:
        num_classes: int.
        image_size: int or `(height, width)`, the model input size.
        anchors: dict, the anchor generator's arguments (`retinanet_anchors(model)[0]`).
        score_threshold, iou_threshold, max_detections: see `DetectionDecoder`.

    Input shape: `(batch, anchors, 4 + num_classes)`. Output: as `DetectionDecoder`.
    """

    def __init__(self, num_classes, image_size, anchors, **kwargs):
        anchors = dict(anchors)
        anchors["aspect_ratios"] = tuple(anchors["aspect_ratios"])
        strides = tuple(2**k for k in range(anchors["min_level"], anchors["max_level"] + 1))
        super().__init__(num_classes, image_size, strides=strides, **kwargs)
        self.anchors = anchors
        self._anchors = _anchors(self.image_size, anchors)

    def _candidate_count(self):
        return len(self._anchors)

    def call(self, inputs):
        inputs = tf.cast(inputs, tf.float32)
        boxes, scores, classes, count = suppress_detections(
            decode_anchor_deltas(self._anchors, inputs[..., :4]),
            inputs[..., 4:],
            self.score_threshold,
            self.iou_threshold,
            self.max_detections,
            self.image_size,
        )
        return {"boxes": boxes, "scores": scores, "classes": classes, "count": count}

    def get_config(self):
        config = super().get_config()
        config.pop("strides")
        config["anchors"] = dict(self.anchors)
        return config


def focal_loss(logits, targets, alpha=0.25, gamma=2.0):
    """Element-wise sigmoid focal loss (Lin et al. 2017, eq. 5):
    FL(p_t) = −α_t (1 − p_t)^γ log(p_t), with p_t = p for a target 1 and 1 − p for 0,
    α_t = α for a target 1 and 1 − α for 0."""
    logits = ops.convert_to_tensor(logits, "float32")
    targets = ops.cast(targets, "float32")
    probabilities = ops.sigmoid(logits)
    cross_entropy = sigmoid_cross_entropy(logits, targets)
    p_t = targets * probabilities + (1 - targets) * (1 - probabilities)
    alpha_t = targets * alpha + (1 - targets) * (1 - alpha)
    return alpha_t * ops.power(1.0 - p_t, gamma) * cross_entropy


@register
class RetinaNetLoss(keras.losses.Loss):
    """RetinaNet's loss on kcnn's padded box targets, with keras-hub's anchor matching.

    keras-hub's `RetinaNetLabelEncoder` matches anchors to ground truth (IoU >= 0.5
    foreground, < 0.4 background, in between ignored) and encodes the matched boxes as
    "center_xywh" deltas. Then, as in Lin et al. 2017 (section 4.1), the focal loss
    (`focal_loss`, α = 0.25, γ = 2) is summed over all non-ignored anchors and classes
    and the box loss (Huber with δ = 1, i.e. smooth L1) over the foreground anchors, both
    divided by the number of foreground anchors in the *global* batch (summed over the
    replicas, so a mirrored step equals one device's).

    Args:
        num_classes: int.
        image_size: int or `(height, width)`.
        anchors: dict, the anchor generator's arguments (`retinanet_anchors(model)[0]`).
        focal_alpha: float. Defaults to `0.25`.
        focal_gamma: float. Defaults to `2.0`.
        classification_weight: float. Defaults to `1.0`.
        box_weight: float. Defaults to `1.0`.

    `y_true`: `(batch, max_boxes, 5)` = `(x_min, y_min, x_max, y_max, class)`, class -1 for
    padding rows; `y_pred`: the `RetinaNet` outputs `(batch, anchors, 4 + num_classes)`.
    """

    def __init__(
        self,
        num_classes,
        image_size,
        anchors,
        focal_alpha=0.25,
        focal_gamma=2.0,
        classification_weight=1.0,
        box_weight=1.0,
        name="retinanet_loss",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.num_classes = check_positive_int(num_classes, "num_classes")
        self.image_size = (
            (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        )
        self.anchors = dict(anchors)
        self.anchors["aspect_ratios"] = tuple(self.anchors["aspect_ratios"])
        self.focal_alpha = float(focal_alpha)
        self.focal_gamma = float(focal_gamma)
        self.classification_weight = float(classification_weight)
        self.box_weight = float(box_weight)
        self._num_anchors = len(_anchors(self.image_size, self.anchors))
        # Not in keras-hub's public API (0.32); the detector's own default encoder.
        from keras_hub.src.models.retinanet.retinanet_label_encoder import (
            RetinaNetLabelEncoder,
        )

        self._encoder = RetinaNetLabelEncoder(
            _anchor_generator(**self.anchors),
            bounding_box_format="xyxy",
            encoding_format="center_xywh",
        )

    def call(self, y_true, y_pred):
        terms = self.loss_terms(y_true, y_pred)
        return self.classification_weight * terms["classification"] + self.box_weight * terms["box"]

    def loss_terms(self, y_true, y_pred):
        """`{"classification": ..., "box": ...}`, the two unweighted scalar terms."""
        y_pred = ops.cast(y_pred, "float32")
        y_true = ops.cast(y_true, "float32")
        expected = (self._num_anchors, 4 + self.num_classes)
        if tuple(y_pred.shape[1:]) != expected:
            raise ValueError(
                f"`y_pred` must have shape (batch, {expected[0]}, {expected[1]}) for "
                f"image_size={self.image_size} and anchors={self.anchors}. "
                f"Received: y_pred.shape={tuple(y_pred.shape)}"
            )
        images = ops.zeros((ops.shape(y_true)[0], *self.image_size, 1))
        box_targets, class_targets = self._encoder(
            images=images, gt_boxes=y_true[..., :4], gt_classes=y_true[..., 4]
        )
        box_targets = ops.stop_gradient(box_targets)
        class_targets = ops.stop_gradient(ops.reshape(class_targets, ops.shape(y_pred)[:2]))
        foreground = ops.cast(ops.greater(class_targets, -1.0), "float32")
        counted = ops.cast(ops.not_equal(class_targets, -2.0), "float32")
        normaliser = ops.maximum(_global_sum(ops.sum(foreground)), 1.0)
        one_hot = ops.one_hot(
            ops.cast(ops.maximum(class_targets, 0.0), "int32"), self.num_classes
        ) * ops.expand_dims(foreground, -1)
        classification = ops.sum(
            focal_loss(y_pred[..., 4:], one_hot, self.focal_alpha, self.focal_gamma)
            * ops.expand_dims(counted, -1)
        )
        error = ops.abs(y_pred[..., :4] - box_targets)
        huber = ops.where(error < 1.0, 0.5 * ops.square(error), error - 0.5)
        box = ops.sum(ops.sum(huber, axis=-1) * foreground)
        return {"classification": classification / normaliser, "box": box / normaliser}

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "image_size": self.image_size,
                "anchors": dict(self.anchors),
                "focal_alpha": self.focal_alpha,
                "focal_gamma": self.focal_gamma,
                "classification_weight": self.classification_weight,
                "box_weight": self.box_weight,
            }
        )
        return config
