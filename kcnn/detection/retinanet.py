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

from kcnn._serialization import register
from kcnn._validation import check_positive_int
from kcnn.backbones import (
    level_stride,
    pyramid_backbone,
    pyramid_features,
    require_levels,
    sorted_levels,
)
from kcnn.detection.anchor_boxes import (
    RetinaNetDecoder,
    RetinaNetLoss,
    _anchor_generator,
    _anchors,
)
from kcnn.detection.detector import PRIOR_PROBABILITY, DetectionModel
from kcnn.models._blocks import match_size
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


@keras.saving.register_keras_serializable(package="kcnn")
class PyramidEncoder(keras_hub.models.FeaturePyramidBackbone):
    """A kcnn backbone as a keras-hub `FeaturePyramidBackbone`: its `pyramid_outputs` (the
    kcnn backbone's dict output) survive saving, which keras-hub's RetinaNet needs to
    rebuild itself from a `.keras` file. A level a pixel off the `size // stride` grid (a
    "valid"-padded stem) is cropped or padded onto it, where the FPN and the anchors
    expect it."""

    def __init__(self, encoder, **kwargs):
        inputs = keras.Input(shape=encoder.input_shape[1:], name="image")
        features = {
            level: match_size(value, inputs, f"{level}_grid", level_stride(level))
            for level, value in pyramid_features(encoder, inputs).items()
        }
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


@register
@register_model("retinanet", "detection", uses_backbone=True)
class RetinaNet(DetectionModel):
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
    with `RetinaNetDecoder` (`make_loss` and `make_decoder` build them).

    Args:
        backbone: a kcnn backbone (`pyramid_outputs` with the chosen levels) with a fixed
            input size, or a keras-hub `Backbone` or other functional image model (adapted
            by `kcnn.backbones.pyramid_backbone`).
        num_classes: int. Number of classes (no background class).
        levels: consecutive pyramid levels. Defaults to `("P3", "P4", "P5")`.
        head_convs: int >= 0. 3x3 convs (256 channels, keras-hub's fixed width) before
            each head's output conv; the paper has 4. Defaults to `1`.
        anchor_size: float. Anchor base size in units of the level's stride. Defaults
            to `4.0`.
        num_scales: int. Anchor scales per octave. Defaults to `3`.
        aspect_ratios: sequence of floats. Defaults to `(0.5, 1.0, 2.0)`.
        name: str. Defaults to `"retinanet"`.

    Output shape:
        `(B, anchors, 4 + num_classes)`. keras-hub's detector is the model's `detector`
        (its layer `"retinanet_object_detector"`); the model knows its `anchors`, loss
        (`make_loss`) and decoder (`make_decoder`).

    The constructor arguments are the model's config and attributes.

    Raises:
        ValueError: for a bad argument, a level the backbone does not give, or an input
            size not divisible by the coarsest stride.
    """

    CONFIG_KEYS = (
        "backbone",
        "num_classes",
        "levels",
        "head_convs",
        "anchor_size",
        "num_scales",
        "aspect_ratios",
    )

    def __init__(
        self,
        backbone,
        num_classes,
        levels=("P3", "P4", "P5"),
        head_convs=1,
        anchor_size=4.0,
        num_scales=3,
        aspect_ratios=(0.5, 1.0, 2.0),
        name="retinanet",
        **kwargs,
    ):
        backbone = pyramid_backbone(backbone)
        # === Layers and functional graph ===
        inputs, outputs, detector = _retinanet_graph(
            backbone, num_classes, levels, head_convs, anchor_size, num_scales, aspect_ratios
        )
        super().__init__(inputs, outputs, name=name, **kwargs)
        self.detector = detector
        # === Config ===
        self.backbone = backbone
        self.num_classes = num_classes
        self.levels = tuple(sorted_levels(tuple(levels)))
        self.head_convs = head_convs
        self.anchor_size = float(anchor_size)
        self.num_scales = num_scales
        self.aspect_ratios = tuple(aspect_ratios)

    LOSS_CLASS = RetinaNetLoss
    DECODER_CLASS = RetinaNetDecoder

    @property
    def anchor_config(self):
        """The arguments of the model's anchor generator."""
        min_level, max_level = _levels_to_range(self.levels)
        return {
            "min_level": min_level,
            "max_level": max_level,
            "num_scales": self.num_scales,
            "aspect_ratios": self.aspect_ratios,
            "anchor_size": self.anchor_size,
        }

    @property
    def anchors(self):
        """The anchors `(A, 4)`, xyxy pixels, in the order of the model's outputs."""
        return _anchors(self.image_size, self.anchor_config)

    def output_geometry(self):
        """Anchor boxes, given by the arguments of the anchor generator."""
        return {"anchors": self.anchor_config}


def _retinanet_graph(
    backbone, num_classes, levels, head_convs, anchor_size, num_scales, aspect_ratios
):
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
    # A kcnn backbone returns its pyramid dict (also after reloading, when the
    # `pyramid_outputs` attribute set at build time is gone).
    outputs = backbone.output
    require_levels(
        backbone,
        outputs if isinstance(outputs, dict) else [],
        [f"P{k}" for k in range(min_level, max_level + 1)],
        tuple(levels),
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
    return inputs, predictions, detector


def retinanet_detector(model):
    """The keras-hub `RetinaNetObjectDetector` inside a `RetinaNet` model, or None."""
    return model.detector if isinstance(model, RetinaNet) else None


def retinanet_anchors(model):
    """`(anchor_config, anchors)`: the arguments of a `RetinaNet`'s anchor generator and
    its anchors `(A, 4)` xyxy pixels, in the order of the model's outputs."""
    if not isinstance(model, RetinaNet):
        raise ValueError(f"`model` must be a kcnn RetinaNet. Received: model {model.name!r}")
    return model.anchor_config, model.anchors
