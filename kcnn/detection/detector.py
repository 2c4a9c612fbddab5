"""A single-stage anchor-free detector (FCOS / YOLOv8 style) on any kcnn backbone."""

import math

import keras

from kcnn.backbones import level_stride, pyramid_features, sorted_levels
from kcnn.detection.decode import DetectionDecoder
from kcnn.layers import DeformableConv2D
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


@register_model("detector", "detection", uses_backbone=True)
def Detector(  # noqa: N802  (a model family, named like keras-hub's task models)
    backbone,
    num_classes,
    levels=("P3", "P4", "P5"),
    neck_filters=64,
    head_filters=64,
    head_convs=2,
    deformable=False,
    name="detector",
):
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
            free input size.
        num_classes: positive int. Object classes (no background class).
        levels: sequence of pyramid keys the detector predicts on, e.g. `("P3", "P4",
            "P5")` (strides 8, 16, 32); all must be in the backbone's pyramid. Defaults to
            `("P3", "P4", "P5")`.
        neck_filters: positive int. Width of every neck map. Defaults to 64.
        head_filters: positive int. Width of the head convs. Defaults to 64.
        head_convs: positive int. 3x3 convs per head branch. Defaults to 2.
        deformable: bool. Deformable 3x3 convs in the head. Defaults to False.
        name: str. Defaults to `"detector"`.

    Returns:
        A functional `keras.Model` from images `(B, H, W, C)` to `(B, num_points,
        4 + num_classes)`. It holds only Keras and `kcnn.layers` layers, so its `.keras`
        file reloads with no `custom_objects` once `kcnn` is imported.

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
    features = pyramid_features(backbone, inputs)
    missing = [level for level in levels if level not in features]
    if missing:
        raise ValueError(
            f"`levels` must be pyramid levels of '{backbone.name}', which gives "
            f"{sorted_levels(features)}. Received: levels={levels}"
        )
    coarsest = level_stride(levels[-1])
    for axis, size in zip(("height", "width"), image_shape[:2], strict=True):
        if size is not None and size % coarsest:
            raise ValueError(
                f"The detector needs an input {axis} divisible by the coarsest stride "
                f"{coarsest}. Received: input_shape={image_shape}"
            )

    laterals = [
        _conv_bn_silu(features[level], neck_filters, f"neck_{level}_lateral", kernel_size=1)
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
    return keras.Model(inputs, predictions, name=name)


def detector_strides(model):
    """The strides of a `Detector`'s levels, finest first (8, 16, 32 for P3-P5).

    Read from the model's per-level head layers (`head_P<k>_flatten`), so a detector
    reloaded from a `.keras` file needs no separate record of its levels.

    Raises:
        ValueError: if `model` has no such layer (it is not a `Detector`).
    """
    levels = [
        layer.name[len("head_") : -len("_flatten")]
        for layer in model.layers
        if layer.name.startswith("head_P") and layer.name.endswith("_flatten")
    ]
    if not levels:
        raise ValueError(
            f"`model` must be a kcnn Detector (per-level `head_P<k>_flatten` layers). "
            f"Received: model {model.name!r}"
        )
    return tuple(level_stride(level) for level in sorted_levels(levels))


def detection_decoder(model, **decoder_args):
    """The decoder of a detector: for a `Detector`, the `DetectionDecoder` of its class
    count, input size and strides; for a `RetinaNet`, the `RetinaNetDecoder` of its anchors.

    Args:
        model: a `Detector` or `RetinaNet` with a fixed input size.
        **decoder_args: `score_threshold`, `iou_threshold`, `max_detections`, `name`.

    Raises:
        ValueError: if `model` is not a `Detector` or its input size is not fixed.
    """
    height, width = model.input_shape[1:3]
    if height is None or width is None:
        raise ValueError(
            "Decoding needs the detector's input size (its anchor points depend on it). "
            f"Received: a model with input_shape={model.input_shape}"
        )
    from kcnn.detection.retinanet import RetinaNetDecoder, retinanet_anchors, retinanet_detector

    if retinanet_detector(model) is not None:
        return RetinaNetDecoder(
            num_classes=model.output_shape[-1] - 4,
            image_size=(height, width),
            anchors=retinanet_anchors(model)[0],
            **decoder_args,
        )
    return DetectionDecoder(
        num_classes=model.output_shape[-1] - 4,
        image_size=(height, width),
        strides=detector_strides(model),
        **decoder_args,
    )


SOFTPLUS = keras.activations.softplus


def detector_with_decoder(model, **decoder_args):
    """`image -> model -> DetectionDecoder`: a model that returns final detections.

    Its output is the dict of `DetectionDecoder` (`boxes`, `scores`, `classes`, `count`);
    it converts to TFLite with builtin ops only, so the file takes an image and returns
    detections after NMS. Shares `model`'s layers (and weights); the box head's softplus
    activations are switched to `softplus_for_int8`, the same function in a form int8
    quantizes well.

    Args:
        model: a `Detector` or `RetinaNet` with a fixed input size.
        **decoder_args: see `detection_decoder`.
    """
    decoder = detection_decoder(model, **decoder_args)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Activation) and layer.activation is SOFTPLUS:
            layer.activation = softplus_for_int8
    return keras.Model(model.inputs, decoder(model.outputs[0]), name=f"{model.name}_with_decoder")


@keras.saving.register_keras_serializable(package="kcnn")
def softplus_for_int8(x):
    """softplus(x) written as max(x, 0) + log(1 + exp(−|x|)): equal in float (to 1e-6), but
    an int8 TFLite file quantizes each part over a bounded range (the exp in (0, 1], the
    log in (0, log 2]), where `keras.activations.softplus` becomes EXP, ADD and LOG over
    the whole input range and its int8 box distances are off by several strides."""
    return keras.ops.relu(x) + keras.ops.log1p(keras.ops.exp(-keras.ops.abs(x)))
