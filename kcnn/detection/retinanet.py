"""keras-hub's `RetinaNetObjectDetector` behind kcnn's detection contract.

RetinaNet (Lin, Goyal, Girshick, He & Dollár 2017, "Focal Loss for Dense Object Detection",
ICCV, arXiv:1708.02002): an FPN over the backbone, and at every level and every anchor box
(3 scales x 3 aspect ratios per cell) a class head with sigmoid logits and a box head with
deltas to the anchor. `RetinaNet` builds keras-hub's model (its FPN, heads, anchor generator
and label encoder, unchanged) on any kcnn backbone and puts it inside a Keras model whose
output has the layout of kcnn's `Detector`, `(batch, anchors, 4 + num_classes)`: the four
box deltas `(dx, dy, dw, dh)` (keras-hub's "center_xywh" encoding), then the class logits.
So the same data, training loop, COCO evaluation, SavedModel and builtins-only TFLite export
serve both detectors; `RetinaNetLoss` and `RetinaNetDecoder` are the anchor-box
counterparts of `DetectionLoss` and `DetectionDecoder`.

keras-hub 0.32 gives the RetinaNet prior bias log(0.01 / 0.99) to the *box* head and 0 to
the class head, so every class probability starts at 0.5 and the first focal-loss steps
are swamped by the background. `RetinaNet` puts the prior where the paper puts it (class
logits bias), and the box head's bias at 0.
"""

import math
import numbers

import keras
import keras_hub
import numpy as np
import tensorflow as tf
from keras import ops

from kcnn._serialization import register
from kcnn._validation import check_positive_int
from kcnn.backbones import level_stride, pyramid_features, sorted_levels
from kcnn.detection.decode import (
    DetectionDecoder,
    suppress_detections,
)
from kcnn.detection.detector import PRIOR_PROBABILITY
from kcnn.detection.losses import _global_sum, sigmoid_cross_entropy
from kcnn.models.registry import register_model

OBJECT_DETECTOR_NAME = "retinanet_object_detector"


def _levels_to_range(levels):
    levels = sorted_levels(tuple(levels))
    numbers_ = [int(level[1:]) for level in levels]
    if numbers_ != list(range(numbers_[0], numbers_[-1] + 1)):
        raise ValueError(
            f"`levels` must be consecutive pyramid levels (RetinaNet's FPN adds each "
            f"coarser level to the next finer one). Received: levels={levels}"
        )
    return numbers_[0], numbers_[-1]


def _anchor_generator(min_level, max_level, num_scales, aspect_ratios, anchor_size):
    return keras_hub.layers.AnchorGenerator(
        "xyxy",
        min_level=min_level,
        max_level=max_level,
        num_scales=num_scales,
        aspect_ratios=list(aspect_ratios),
        anchor_size=anchor_size,
    )


@keras.saving.register_keras_serializable(package="kcnn")
class PyramidEncoder(keras_hub.models.FeaturePyramidBackbone):
    """A kcnn backbone as a keras-hub `FeaturePyramidBackbone`: its `pyramid_outputs` (the
    kcnn backbone's dict output) survive saving, which keras-hub's RetinaNet needs to
    rebuild itself from a `.keras` file."""

    def __init__(self, encoder, **kwargs):
        inputs = keras.Input(shape=encoder.input_shape[1:], name="image")
        features = pyramid_features(encoder, inputs)
        super().__init__(inputs=inputs, outputs=features, **kwargs)
        self.encoder = encoder
        self.pyramid_outputs = features

    def get_config(self):
        config = super().get_config()
        config["encoder"] = keras.layers.serialize(self.encoder)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.layers.deserialize(config["encoder"])
        return super().from_config(config)


def set_retinanet_prior(detector, prior_probability=PRIOR_PROBABILITY):
    """Puts RetinaNet's prior on the class logits: bias log(π / (1 − π)), box bias 0.

    Lin et al. 2017, section 4.1 ("Initialization"): the final conv of the
    classification subnet gets bias b = −log((1 − π) / π) with π = 0.01, so that at the
    start every anchor is foreground with confidence about π and the loss of the many
    background anchors does not destabilise the first iterations. keras-hub 0.32's
    `RetinaNetObjectDetector` sets this bias on the box head instead and leaves the class
    head's at 0 (probabilities 0.5); this corrects both, in place.

    Args:
        detector: a `keras_hub.models.RetinaNetObjectDetector`.
        prior_probability: float in (0, 1). Defaults to 0.01.
    """
    if not 0 < prior_probability < 1:
        raise ValueError(f"`prior_probability` must be in (0, 1). Received: {prior_probability!r}")
    class_bias = detector.classification_head.weights[-1]
    box_bias = detector.box_head.weights[-1]
    for bias, head in ((class_bias, "classification_head"), (box_bias, "box_head")):
        if not bias.path.endswith("logits_layer/bias"):
            raise ValueError(f"Unexpected keras-hub RetinaNet layout: {head} ends in {bias.path}")
    class_bias.assign(
        np.full(class_bias.shape, math.log(prior_probability / (1 - prior_probability)))
    )
    box_bias.assign(np.zeros(box_bias.shape))


@register_model("retinanet", "detection", uses_backbone=True)
def RetinaNet(  # noqa: N802  (a model family, named like keras-hub's task models)
    backbone,
    num_classes,
    levels=("P3", "P4", "P5"),
    head_convs=1,
    anchor_size=4.0,
    num_scales=3,
    aspect_ratios=(0.5, 1.0, 2.0),
    name="retinanet",
):
    """keras-hub's RetinaNet on a kcnn backbone, with kcnn's detector output layout.

    Builds `keras_hub.models.RetinaNetBackbone` (FPN with 256 channels on `levels`) over
    `backbone`'s `pyramid_outputs` and `keras_hub.models.RetinaNetObjectDetector` on it
    (box format xyxy), sets the class prior (`set_retinanet_prior`), and returns a model
    `image -> (batch, anchors, 4 + num_classes)`: keras-hub's `bbox_regression` (deltas
    `(dx, dy, dw, dh)` to each anchor, "center_xywh", variance 1) and `cls_logits`,
    concatenated. The anchors are keras-hub's `AnchorGenerator`'s: at level l, sizes
    `anchor_size * 2**l * 2**(i / num_scales)` for i < `num_scales` (truncated to whole
    pixels, half-sides rounded), each at every aspect ratio, centred on multiples of the
    stride as torchvision's are (the paper's 32 px at P3 is `anchor_size=4`; smaller images
    want smaller anchors). Train it with `RetinaNetLoss` and decode it
    with `RetinaNetDecoder` (`kcnn.detection.detector.detection_decoder` picks them).

    Args:
        backbone: a kcnn backbone (`pyramid_outputs` with the chosen levels) with a fixed
            input size.
        num_classes: int. Number of classes (no background class).
        levels: consecutive pyramid levels. Defaults to `("P3", "P4", "P5")`.
        head_convs: int >= 0. 3x3 convs (256 channels, keras-hub's fixed width) before
            each head's output conv; the paper has 4. Defaults to `1`.
        anchor_size: float. Anchor base size in units of the level's stride. Defaults
            to `4.0`.
        num_scales: int. Anchor scales per octave. Defaults to `3`.
        aspect_ratios: sequence of floats. Defaults to `(0.5, 1.0, 2.0)`.
        name: str. Defaults to `"retinanet"`.

    Returns:
        A functional `keras.Model`; keras-hub's detector is its layer
        `"retinanet_object_detector"`.

    Raises:
        ValueError: for a bad argument, a level the backbone does not give, or an input
            size not divisible by the coarsest stride.
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(
            f"`num_classes` must be a positive int. Received: num_classes={num_classes}"
        )
    if not isinstance(head_convs, int) or head_convs < 0:
        raise ValueError(f"`head_convs` must be an int >= 0. Received: head_convs={head_convs}")
    check_positive_int(num_scales, "num_scales")
    if not isinstance(anchor_size, numbers.Real) or anchor_size <= 0:
        raise ValueError(f"`anchor_size` must be a positive number. Received: {anchor_size!r}")
    min_level, max_level = _levels_to_range(levels)
    image_shape = tuple(backbone.input_shape[1:])
    available = sorted_levels(getattr(backbone, "pyramid_outputs", {}) or {})
    missing = [f"P{k}" for k in range(min_level, max_level + 1) if f"P{k}" not in available]
    if missing:
        raise ValueError(
            f"`levels` must be pyramid levels of '{backbone.name}', which gives {available}. "
            f"Received: levels={tuple(levels)}"
        )
    coarsest = level_stride(f"P{max_level}")
    for axis, size in zip(("height", "width"), image_shape[:2], strict=True):
        if size is None or size % coarsest:
            raise ValueError(
                f"RetinaNet needs a fixed input {axis} divisible by the coarsest stride "
                f"{coarsest}. Received: input_shape={image_shape}"
            )
    feature_pyramid = keras_hub.models.RetinaNetBackbone(
        image_encoder=PyramidEncoder(backbone, name=f"{backbone.name}_pyramid"),
        min_level=min_level,
        max_level=max_level,
        use_p5=False,
        image_shape=image_shape,
    )
    detector = keras_hub.models.RetinaNetObjectDetector(
        feature_pyramid,
        num_classes=num_classes,
        bounding_box_format="xyxy",
        anchor_generator=_anchor_generator(
            min_level, max_level, num_scales, aspect_ratios, float(anchor_size)
        ),
        pre_logits_num_conv_layers=head_convs,
        name=OBJECT_DETECTOR_NAME,
    )
    set_retinanet_prior(detector)
    inputs = keras.Input(shape=image_shape, name="image")
    raw = detector(inputs)
    predictions = keras.layers.Concatenate(name="retinanet_concat")(
        [raw["bbox_regression"], raw["cls_logits"]]
    )
    predictions = keras.layers.Activation("linear", dtype="float32", name="predictions")(
        predictions
    )
    return keras.Model(inputs, predictions, name=name)


def retinanet_detector(model):
    """The keras-hub `RetinaNetObjectDetector` inside a `RetinaNet` model, or None."""
    for layer in model.layers:
        if isinstance(layer, keras_hub.models.RetinaNetObjectDetector):
            return layer
    return None


def retinanet_anchors(model):
    """`(anchor_config, anchors)`: the arguments of a `RetinaNet`'s anchor generator and
    its anchors `(A, 4)` xyxy pixels, in the order of the model's outputs."""
    detector = retinanet_detector(model)
    if detector is None:
        raise ValueError(f"`model` must be a kcnn RetinaNet. Received: model {model.name!r}")
    generator = detector.anchor_generator
    config = {
        "min_level": generator.min_level,
        "max_level": generator.max_level,
        "num_scales": generator.num_scales,
        "aspect_ratios": tuple(generator.aspect_ratios),
        "anchor_size": float(generator.anchor_size),
    }
    return config, _anchors(tuple(model.input_shape[1:3]), config)


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
