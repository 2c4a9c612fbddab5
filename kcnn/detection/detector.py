"""A single-stage anchor-free detector (FCOS / YOLOv8 style) on any kcnn backbone."""

import math

import keras

from kcnn._serialization import register
from kcnn.backbones import level_stride, pyramid_backbone, pyramid_features, sorted_levels
from kcnn.detection.decode import DetectionDecoder
from kcnn.detection.losses import DetectionLoss
from kcnn.layers import DeformableConv2D
from kcnn.models._blocks import match_size
from kcnn.models._task_model import TaskModel
from kcnn.models.registry import register_model

PRIOR_PROBABILITY = 0.01
BATCH_NORM_MOMENTUM = 0.9


def _conv_bn_silu(x, filters, name, kernel_size=3, strides=1):
    x = keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding="same", use_bias=False, name=name
    )(x)
    x = keras.layers.BatchNormalization(momentum=BATCH_NORM_MOMENTUM, name=f"{name}_bn")(x)
    return keras.layers.Activation("silu", name=f"{name}_silu")(x)


def _fuse(inputs, filters, name):
    """Concatenates same-size maps and mixes them with a 3x3 conv + BN + SiLU."""
    x = keras.layers.Concatenate(name=f"{name}_concat")(inputs)
    return _conv_bn_silu(x, filters, name)


def _head_branch(x, convs, level):
    """Runs shared head convs on one level, each followed by that level's own BN + SiLU."""
    for conv in convs:
        x = conv(x)
        x = keras.layers.BatchNormalization(
            momentum=BATCH_NORM_MOMENTUM, name=f"{conv.name}_{level}_bn"
        )(x)
        x = keras.layers.Activation("silu", name=f"{conv.name}_{level}_silu")(x)
    return x


class DetectionModel(TaskModel):
    """What every kcnn detector knows about itself: its classes, levels and strides, input
    size, and the loss and decoder that fit its output layout `(B, points, 4 + classes)`.

    Subclasses (`Detector`, `RetinaNet`) set `num_classes` and `levels`, name their
    `LOSS_CLASS` (whose keyword arguments a config's `train.loss` may set) and
    `DECODER_CLASS`, and say where their outputs sit (`output_geometry`: anchor points by
    strides, or anchor boxes); `make_loss` and `make_decoder` build both from these facts.
    """

    LOSS_CLASS = None
    DECODER_CLASS = None

    @property
    def strides(self):
        """The strides of the model's levels, finest first (8, 16, 32 for P3-P5)."""
        return tuple(level_stride(level) for level in self.levels)

    @property
    def image_size(self):
        """`(height, width)` of the model's input.

        Raises:
            ValueError: if the input size is not fixed (anchors depend on it).
        """
        height, width = self.input_shape[1:3]
        if height is None or width is None:
            raise ValueError(
                "Decoding needs the detector's input size (its anchor points depend on it). "
                f"Received: a model with input_shape={self.input_shape}"
            )
        return int(height), int(width)

    def output_geometry(self):
        """Where the output rows sit, as the loss and decoder keyword argument that says it:
        `{"strides": ...}` (anchor points) or `{"anchors": ...}` (anchor boxes)."""
        raise NotImplementedError

    def make_loss(self, **options):
        """`LOSS_CLASS` for this model's classes, input size and output geometry, with the
        loss's own `options`."""
        return self.LOSS_CLASS(
            num_classes=self.num_classes,
            image_size=self.image_size,
            **self.output_geometry(),
            **options,
        )

    def make_decoder(self, **decoder_args):
        """`DECODER_CLASS` for this model's classes, input size and output geometry: the
        layer turning the output into boxes, scores, classes and counts after per-class NMS
        (`score_threshold`, `iou_threshold`, `max_detections`, `name`)."""
        return self.DECODER_CLASS(
            num_classes=self.num_classes,
            image_size=self.image_size,
            **self.output_geometry(),
            **decoder_args,
        )


@register
@register_model("detector", "detection", uses_backbone=True)
class Detector(DetectionModel):
    """Anchor-free one-stage detector: backbone pyramid, PAN neck, decoupled shared head.

    The design of FCOS (Tian et al. 2019, arXiv:1904.01355) and YOLOv8, at small widths:

    - Neck (PANet, Liu et al. 2018, arXiv:1803.01534): a 1x1 conv + BN + SiLU brings each
      chosen level to `neck_filters`; a top-down path upsamples (nearest) the coarser map,
      concatenates it with the next finer one and fuses them with a 3x3 conv; a bottom-up
      path then downsamples with a strided 3x3 conv, concatenates with the top-down map of
      that level and fuses again.
    - Head (decoupled, as YOLOX / YOLOv8): a class branch and a box branch, each
      `head_convs` x (3x3 conv + BN + SiLU), then a 1x1 conv to `num_classes` logits or 4
      distances. The conv weights are shared across levels (as FCOS); each level has its
      own batch norms, because the levels' statistics differ (as EfficientDet's shared
      head does). With `deformable=True` the 3x3 convs are `kcnn.layers.DeformableConv2D`
      (DCNv2 with its own zero-initialised offset predictor).
    - The class bias starts at log(0.01 / 0.99), so every class probability starts near
      0.01 and the many background points do not swamp the first steps (RetinaNet,
      Lin et al. 2017, arXiv:1708.02002).
    - Box distances go through softplus, log(1 + e^x): positive, smooth, linear for large
      x, and with no exponential to overflow.

    Output layout: one float32 tensor `(B, num_points, 4 + num_classes)`. The points are
    the cell centres of the levels, row-major, finest level first, as
    `kcnn.detection.anchor_points(image_size, strides)` lists them; channels 0-3 are the
    `(left, top, right, bottom)` distances from the point to the box sides in units of
    the level's stride (`kcnn.detection.decode_distances` turns them into pixel boxes),
    channels 4: the class logits (sigmoid, one per class; no background class).
    Train it with `kcnn.detection.DetectionLoss(num_classes, image_size, strides)`.

    Args:
        backbone: a kcnn backbone (`kcnn.backbones.build_backbone(...)`) with a fixed or
            free input size, or a keras-hub `Backbone` or other functional image model
            (adapted by `kcnn.backbones.pyramid_backbone`). A level a pixel off its grid
            (a "valid"-padded stem) is cropped or padded to `size // stride`, the grid of
            the anchor points.
        num_classes: positive int. Object classes (no background class).
        levels: sequence of pyramid keys the detector predicts on, e.g. `("P3", "P4",
            "P5")` (strides 8, 16, 32); all must be in the backbone's pyramid. Defaults to
            `("P3", "P4", "P5")`.
        neck_filters: positive int. Width of every neck map. Defaults to 64.
        head_filters: positive int. Width of the head convs. Defaults to 64.
        head_convs: positive int. 3x3 convs per head branch. Defaults to 2.
        deformable: bool. Deformable 3x3 convs in the head. Defaults to False.
        name: str. Defaults to `"detector"`.

    Output shape:
        `(B, num_points, 4 + num_classes)` from images `(B, H, W, C)`. The model knows
        its `strides`, `image_size`, loss (`make_loss`) and decoder (`make_decoder`); its
        `.keras` file reloads with no `custom_objects` once `kcnn` is imported.

    The constructor arguments are the model's config and attributes.

    Raises:
        ValueError: for a bad argument (named, with the value received), a level the
            backbone does not give, or a fixed input size not divisible by the coarsest
            level's stride.

    Example:
    >>> from kcnn.backbones import build_backbone
    >>> backbone = build_backbone(
    ...     "plain_cnn", input_shape=(64, 64, 3), filters=(8, 8, 8, 8, 8, 8))
    >>> Detector(backbone, num_classes=3, neck_filters=8, head_filters=8).output_shape
    (None, 84, 7)
    """

    CONFIG_KEYS = (
        "backbone",
        "num_classes",
        "levels",
        "neck_filters",
        "head_filters",
        "head_convs",
        "deformable",
    )

    def __init__(
        self,
        backbone,
        num_classes,
        levels=("P3", "P4", "P5"),
        neck_filters=64,
        head_filters=64,
        head_convs=2,
        deformable=False,
        name="detector",
        **kwargs,
    ):
        backbone = pyramid_backbone(backbone)
        # === Layers and functional graph ===
        inputs, outputs = _detector_graph(
            backbone, num_classes, levels, neck_filters, head_filters, head_convs, deformable
        )
        super().__init__(inputs, outputs, name=name, **kwargs)
        # === Config ===
        self.backbone = backbone
        self.num_classes = num_classes
        self.levels = tuple(sorted_levels(tuple(levels)))
        self.neck_filters = neck_filters
        self.head_filters = head_filters
        self.head_convs = head_convs
        self.deformable = deformable

    LOSS_CLASS = DetectionLoss
    DECODER_CLASS = DetectionDecoder

    def output_geometry(self):
        """Anchor points: one per cell of each level, by the levels' strides."""
        return {"strides": self.strides}


def _detector_graph(
    backbone, num_classes, levels, neck_filters, head_filters, head_convs, deformable
):
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(
            f"`num_classes` must be a positive int. Received: num_classes={num_classes}"
        )
    for argument, value in (
        ("neck_filters", neck_filters),
        ("head_filters", head_filters),
        ("head_convs", head_convs),
    ):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"`{argument}` must be a positive int. Received: {argument}={value}")
    levels = tuple(levels)
    if not levels:
        raise ValueError(f"`levels` must name at least one pyramid level. Received: {levels}")
    levels = sorted_levels(levels)

    image_shape = backbone.input_shape[1:]
    inputs = keras.Input(shape=image_shape, name="image")
    features = pyramid_features(backbone, inputs, levels)
    coarsest = level_stride(levels[-1])
    for axis, size in zip(("height", "width"), image_shape[:2], strict=True):
        if size is not None and size % coarsest:
            raise ValueError(
                f"The detector needs an input {axis} divisible by the coarsest stride "
                f"{coarsest}. Received: input_shape={image_shape}"
            )

    on_grid = {
        level: match_size(features[level], inputs, f"neck_{level}_grid", level_stride(level))
        for level in levels
    }
    laterals = [
        _conv_bn_silu(on_grid[level], neck_filters, f"neck_{level}_lateral", kernel_size=1)
        for level in levels
    ]
    top_down = [laterals[-1]]
    for index in range(len(levels) - 2, -1, -1):
        factor = level_stride(levels[index + 1]) // level_stride(levels[index])
        upsampled = keras.layers.UpSampling2D(factor, name=f"neck_{levels[index]}_up")(top_down[0])
        top_down.insert(
            0, _fuse([upsampled, laterals[index]], neck_filters, f"neck_{levels[index]}_td")
        )
    outputs = [top_down[0]]
    for index in range(1, len(levels)):
        factor = level_stride(levels[index]) // level_stride(levels[index - 1])
        downsampled = _conv_bn_silu(
            outputs[-1], neck_filters, f"neck_{levels[index]}_down", strides=factor
        )
        outputs.append(
            _fuse([downsampled, top_down[index]], neck_filters, f"neck_{levels[index]}_bu")
        )

    def branch_convs(prefix):
        if deformable:
            return [
                DeformableConv2D(head_filters, 3, use_bias=False, name=f"{prefix}{i + 1}")
                for i in range(head_convs)
            ]
        return [
            keras.layers.Conv2D(
                head_filters, 3, padding="same", use_bias=False, name=f"{prefix}{i + 1}"
            )
            for i in range(head_convs)
        ]

    class_convs = branch_convs("head_class_conv")
    box_convs = branch_convs("head_box_conv")
    class_logits = keras.layers.Conv2D(
        num_classes,
        1,
        bias_initializer=keras.initializers.Constant(
            math.log(PRIOR_PROBABILITY / (1 - PRIOR_PROBABILITY))
        ),
        name="head_class_logits",
    )
    box_distances = keras.layers.Conv2D(4, 1, name="head_box_distances")

    flattened = []
    for level, x in zip(levels, outputs, strict=True):
        logits = class_logits(_head_branch(x, class_convs, level))
        box = box_distances(_head_branch(x, box_convs, level))
        box = keras.layers.Activation("softplus", name=f"head_box_{level}_softplus")(box)
        level_output = keras.layers.Concatenate(name=f"head_{level}_concat")([box, logits])
        flattened.append(
            keras.layers.Reshape((-1, 4 + num_classes), name=f"head_{level}_flatten")(level_output)
        )
    if len(flattened) > 1:
        predictions = keras.layers.Concatenate(axis=1, name="head_concat_levels")(flattened)
    else:
        predictions = flattened[0]
    predictions = keras.layers.Activation("linear", dtype="float32", name="predictions")(
        predictions
    )
    return inputs, predictions


def detector_strides(model):
    """The strides of a detector's levels, finest first (8, 16, 32 for P3-P5): the model's
    own `strides`.

    Raises:
        ValueError: if `model` is not a kcnn detector.
    """
    if not isinstance(model, DetectionModel):
        raise ValueError(
            "`model` must be a kcnn Detector or RetinaNet. "
            f"Received: {type(model).__name__} {model.name!r}"
        )
    return model.strides
