"""A classifier on any kcnn backbone: global average pooling and a dense softmax."""

import keras

from kcnn.backbones import pyramid_backbone, pyramid_features, sorted_levels
from kcnn.layers import AverageMirrorViews, MirrorViews
from kcnn.models.registry import register_model


@register_model("classifier", "classification", uses_backbone=True)
def build_classifier(
    backbone,
    num_classes,
    dropout=0.0,
    level=None,
    name="classifier",
    input_shape=None,
    test_time_flip=False,
):
    """Puts a global-average-pooling classification head on a backbone.

    The head is the one of Network in Network (Lin et al. 2013, arXiv:1312.4400) and of
    ResNet: global average pooling over the deepest (or chosen) pyramid level, optional
    dropout, and a dense softmax layer, so the model runs on any input size the backbone
    accepts. The softmax is computed in float32 so mixed precision stays stable.

    Args:
        backbone: a kcnn backbone (see `kcnn.backbones.build_backbone`), or a keras-hub
            `Backbone` or other functional image model (adapted by
            `kcnn.backbones.pyramid_backbone`).
        num_classes: int >= 2. Number of classes.
        dropout: float in [0, 1). Dropout rate before the dense layer. Defaults to 0.
        level: str or None. Pyramid key to classify from, e.g. `"P3"`. Defaults to the
            coarsest level the backbone gives.
        name: str. Model name. Defaults to `"classifier"`.
        input_shape: ignored (the backbone fixes it); accepted so every registry builder
            takes the same keyword arguments.
        test_time_flip: bool. If True, inference (evaluation, `predict`, every export)
            averages the class probabilities of each image and of its left-right mirror
            (`kcnn.layers.MirrorViews`, AlexNet's test-time averaging over reflections):
            twice the inference cost, no training cost, for a model trained with random
            flips. The dense layer keeps its name `"predictions"`; the output is the
            layer `"flip_average"`. Defaults to False.

    Returns:
        A functional `keras.Model` mapping images (floats in [0, 1]) to class
        probabilities of shape `(batch, num_classes)`.

    Raises:
        ValueError: if `num_classes` < 2, `dropout` is outside [0, 1), `level` is not a
            key of the backbone's pyramid or `test_time_flip` is not a bool.

    Example:
    >>> from kcnn.backbones import build_backbone
    >>> backbone = build_backbone("plain_cnn", input_shape=(28, 28, 1), filters=(8, 16))
    >>> build_classifier(backbone, num_classes=10).output_shape
    (None, 10)
    """
    del input_shape
    if not isinstance(test_time_flip, bool):
        raise ValueError(
            f"`test_time_flip` must be True or False. Received: test_time_flip={test_time_flip!r}"
        )
    inputs, feature = classifier_input(backbone, num_classes, dropout, level, test_time_flip)
    outputs = pooled_softmax_head(feature, num_classes, dropout)
    if test_time_flip:
        outputs = AverageMirrorViews(dtype="float32", name="flip_average")(outputs)
    return keras.Model(inputs, outputs, name=name)


def classifier_input(backbone, num_classes, dropout, level, test_time_flip=False):
    """Checks a classifier's arguments and wires the backbone: `(inputs, feature map)`, the
    feature map being the pyramid level `level` (the coarsest when None). With
    `test_time_flip`, the backbone reads `MirrorViews` of the inputs.

    Raises:
        ValueError: as `build_classifier`.
    """
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"`num_classes` must be an int >= 2. Received: num_classes={num_classes}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"`dropout` must be in [0, 1). Received: dropout={dropout}")
    backbone = pyramid_backbone(backbone)
    inputs = keras.Input(shape=backbone.input_shape[1:], name="image")
    images = MirrorViews(name="test_time_flip")(inputs) if test_time_flip else inputs
    features = pyramid_features(backbone, images)
    if level is None:
        level = sorted_levels(features)[-1]
    if level not in features:
        raise ValueError(
            f"`level` must be one of the backbone's levels {sorted_levels(features)}. "
            f"Received: level={level!r}"
        )
    return inputs, features[level]


def pooled_softmax_head(feature, num_classes, dropout, prefix="", name="predictions"):
    """Global average pooling, optional dropout and a float32 dense softmax, named
    `{prefix}pool`, `{prefix}dropout` and `name`."""
    x = keras.layers.GlobalAveragePooling2D(name=f"{prefix}pool")(feature)
    if dropout:
        x = keras.layers.Dropout(dropout, name=f"{prefix}dropout")(x)
    return keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name=name)(x)
