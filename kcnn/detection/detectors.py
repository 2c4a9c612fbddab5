"""The detector families behind one set of functions: each model's loss, its decoder, and
the model with its decoder appended (what the TFLite files hold).

Each detector (`Detector`: distances to anchor points; `RetinaNet`: deltas to anchor boxes)
is a `DetectionModel` that knows its own loss and decoder (`make_loss`, `make_decoder`);
these functions check the model and the options, so callers never ask which family a
model is.
"""

import inspect

import keras

from kcnn._validation import check_loss_keys
from kcnn.detection.anchor_boxes import RetinaNetLoss
from kcnn.detection.detector import DetectionModel
from kcnn.detection.losses import DetectionLoss


def loss_keys(loss_class):
    """The keyword arguments of a detection loss that the model does not fix: what a
    config's `train.loss` may set."""
    return tuple(
        name
        for name in inspect.signature(loss_class).parameters
        if name not in ("num_classes", "image_size", "strides", "anchors", "name", "kwargs")
    )


# `train.loss` keys of each family.
LOSS_KEYS = loss_keys(DetectionLoss)
RETINANET_LOSS_KEYS = loss_keys(RetinaNetLoss)


def _detection_model(model):
    if not isinstance(model, DetectionModel):
        raise ValueError(
            "`model` must be a kcnn detector (`Detector`, `RetinaNet` or `FasterRCNN`). "
            f"Received: {type(model).__name__} {model.name!r}"
        )
    return model


def detection_loss(model, **options):
    """The loss of a detector (`model.make_loss`: `DetectionLoss` for a `Detector`,
    `RetinaNetLoss` for a `RetinaNet`, `FasterRCNNLoss`'s weights for a `FasterRCNN`) with
    `options`, the loss's own keyword arguments (`LOSS_KEYS` / `RETINANET_LOSS_KEYS` /
    `loss_keys(FasterRCNNLoss)`).

    Raises:
        ValueError: for an option the model's loss does not take (named), or a model that
            is not a kcnn detector.
    """
    known = loss_keys(_detection_model(model).LOSS_CLASS)
    return model.make_loss(**check_loss_keys(options, known, "detection"))


def detection_decoder(model, **decoder_args):
    """The decoder of a detector (`model.make_decoder`): `DetectionDecoder` for a
    `Detector`, `RetinaNetDecoder` for a `RetinaNet`.

    Args:
        model: a `Detector` or `RetinaNet` with a fixed input size.
        **decoder_args: `score_threshold`, `iou_threshold`, `max_detections`, `name`.

    Raises:
        ValueError: if `model` is not a kcnn detector or its input size is not fixed.
    """
    return _detection_model(model).make_decoder(**decoder_args)


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
