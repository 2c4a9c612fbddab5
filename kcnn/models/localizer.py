"""Classification with localization: a class head and a box head on any kcnn backbone."""

import keras

from kcnn._serialization import register
from kcnn._validation import check_positive_int
from kcnn.models.classifier import classifier_input, pooled_softmax_head
from kcnn.models.registry import register_model


@register
class CenterSizeToCorners(keras.layers.Layer):
    """`(cx, cy, w, h)` in `[0, 1]` -> `(x_min, y_min, x_max, y_max)`, clipped to `[0, 1]`.

    Regressing the centre and size, each through a sigmoid, keeps every predicted box a box
    (`x_min <= x_max`) inside the image, which corner outputs would not.

    Input shape:
        `(..., 4)`.

    Output shape:
        `(..., 4)`.

    Example:

    >>> corners = CenterSizeToCorners()(keras.ops.convert_to_tensor([[0.5, 0.5, 0.2, 0.4]]))
    >>> [round(float(value), 3) for value in corners[0]]
    [0.4, 0.3, 0.6, 0.7]
    """

    def call(self, inputs):
        center, size = inputs[..., :2], inputs[..., 2:]
        corners = keras.ops.concatenate([center - size / 2, center + size / 2], axis=-1)
        return keras.ops.clip(corners, 0.0, 1.0)

    def compute_output_shape(self, input_shape):
        return input_shape


@register_model("localizer", "localization", uses_backbone=True)
def build_localizer(
    backbone,
    num_classes,
    dropout=0.0,
    level=None,
    box_filters=32,
    box_units=128,
    name="localizer",
    input_shape=None,
):
    """A classifier that also says where its object is: a class head and a box head.

    Classification with localization as in OverFeat (Sermanet et al. 2014,
    arXiv:1312.6229, section 4) and the course's treatment of it: one network, two heads on
    the same features, trained with a classification loss plus a box regression loss
    (`kcnn.tasks.localization.LocalizationLoss`).

    - Class head: global average pooling of the deepest (or chosen) level, dropout, a dense
      softmax (as `build_classifier`).
    - Box head: a 1x1 convolution to `box_filters` channels, flattened (position is what
      this head needs, which global pooling would discard), a dense layer of `box_units`
      with ReLU, and four sigmoid outputs read as the box centre and size as fractions of
      the image (`CenterSizeToCorners`).

    Args:
        backbone: a kcnn backbone with a fixed input size (the box head flattens its map),
            or a keras-hub `Backbone` (adapted by `kcnn.backbones.pyramid_backbone`).
        num_classes: int >= 2.
        dropout: float in [0, 1). Dropout before both heads' last dense layers. Defaults
            to 0.
        level: str or None. Pyramid key both heads read. Defaults to the coarsest level.
        box_filters: positive int. Channels of the box head's 1x1 convolution. Defaults
            to 32.
        box_units: positive int. Units of the box head's hidden dense layer. Defaults
            to 128.
        name: str. Defaults to `"localizer"`.
        input_shape: ignored (the backbone fixes it).

    Returns:
        A functional `keras.Model` mapping images in [0, 1] to float32
        `(batch, 4 + num_classes)`: the box `(x_min, y_min, x_max, y_max)` as fractions of
        the image width and height, then the class probabilities.

    Raises:
        ValueError: if an argument is out of range or the backbone's level has an unknown
            size (the message names it).

    Example:
    >>> from kcnn.backbones import build_backbone
    >>> backbone = build_backbone("plain_cnn", input_shape=(32, 32, 1), filters=(8, 16))
    >>> build_localizer(backbone, num_classes=10, box_units=16).output_shape
    (None, 14)
    """
    del input_shape
    box_filters = check_positive_int(box_filters, "box_filters")
    box_units = check_positive_int(box_units, "box_units")
    # --- layers and functional graph ---
    inputs, feature = classifier_input(backbone, num_classes, dropout, level)
    if None in feature.shape[1:3]:
        raise ValueError(
            "The box head flattens the feature map, so the backbone needs a fixed input "
            f"size. Received: a feature map of shape {feature.shape}"
        )
    classes = pooled_softmax_head(feature, num_classes, dropout, prefix="class_", name="class")
    box = keras.layers.Conv2D(box_filters, 1, activation="relu", name="box_reduce")(feature)
    box = keras.layers.Flatten(name="box_flatten")(box)
    box = keras.layers.Dense(box_units, activation="relu", name="box_hidden")(box)
    if dropout:
        box = keras.layers.Dropout(dropout, name="box_dropout")(box)
    box = keras.layers.Dense(4, activation="sigmoid", dtype="float32", name="box_center_size")(box)
    box = CenterSizeToCorners(dtype="float32", name="box")(box)
    outputs = keras.layers.Concatenate(dtype="float32", name="predictions")([box, classes])
    return keras.Model(inputs, outputs, name=name)
