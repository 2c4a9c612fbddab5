"""VGG-11, -13, -16 and -19 (Simonyan & Zisserman 2015, arXiv:1409.1556)."""

import keras

from kcnn.models.classic._common import (
    check_input_shape,
    check_min_size,
    check_num_classes,
    check_rate,
    check_width,
    scaled,
)
from kcnn.models.classic.heads import classifier_head
from kcnn.models.registry import register_model

# Convolutions per stage of the configurations of table 1; stages have 64, 128, 256, 512
# and 512 filters and end with 2x2 max-pooling.
STAGE_FILTERS = (64, 128, 256, 512, 512)
CONFIGURATIONS = {
    "A": (1, 1, 2, 2, 2),
    "B": (2, 2, 2, 2, 2),
    "D": (2, 2, 3, 3, 3),
    "E": (2, 2, 4, 4, 4),
}
FC_UNITS = 4096


def vgg_features(x, convs_per_stage, width=1.0, name="block"):
    """The convolutional part of VGG: stages of 3x3 conv + ReLU, each ending in 2x2 pooling.

    Args:
        x: 4D Keras tensor.
        convs_per_stage: sequence of 5 ints, from `CONFIGURATIONS`.
        width: float. Multiplies the number of filters. Defaults to `1.0`.
        name: str. Prefix of the layer names, as in `keras.applications`. Defaults to
            `"block"`.

    Returns:
        The pool5 Keras tensor, 32 times smaller than `x` (rounded down).
    """
    for stage, (filters, convs) in enumerate(
        zip(STAGE_FILTERS, convs_per_stage, strict=True), start=1
    ):
        for index in range(1, convs + 1):
            x = keras.layers.Conv2D(
                scaled(filters, width),
                3,
                padding="same",
                activation="relu",
                name=f"{name}{stage}_conv{index}",
            )(x)
        x = keras.layers.MaxPooling2D(2, name=f"{name}{stage}_pool")(x)
    return x


def _vgg(configuration, input_shape, num_classes, width, dropout, fully_convolutional, name):
    input_shape = check_input_shape(input_shape)
    num_classes = check_num_classes(num_classes)
    width = check_width(width)
    dropout = check_rate(dropout, "dropout")
    check_min_size(input_shape, 32, "VGG halves the image five times")
    window = tuple(7 if size is None else size // 32 for size in input_shape[:2])
    if fully_convolutional:
        input_shape = (None, None, input_shape[2])
    inputs = keras.Input(shape=input_shape, name="image")
    x = vgg_features(inputs, CONFIGURATIONS[configuration], width)
    units = scaled(FC_UNITS, width)
    outputs = classifier_head(
        x,
        num_classes,
        hidden_units=(units, units),
        activation="relu",
        dropout=dropout,
        fully_convolutional=fully_convolutional,
        window=window,
    )
    return keras.Model(inputs, outputs, name=name)


_DOCSTRING = """VGG-{depth} (configuration {configuration}): {convs} 3x3 convs and 3 dense layers.

    Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
    Recognition", ICLR 2015 (arXiv:1409.1556), table 1, configuration {configuration}:
    five stages of 3x3 "same" convolutions with ReLU ({stages} per stage; 64, 128, 256,
    512 and 512 filters), each followed by 2x2 max-pooling, then fc6 4096 -> ReLU ->
    dropout -> fc7 4096 -> ReLU -> dropout -> fc8 softmax. Dropout (0.5) is the paper's
    regularization of the first two dense layers. Layer names follow `keras.applications`
    (`block1_conv1` ...). Parameters at 224x224x3 and 1000 classes: {params} (table 2 of
    the paper rounds it to {rounded} million).

    Args:
        input_shape: tuple `(height, width, channels)`; height and width at least 32, or
            None.
        num_classes: int >= 2.
        width: float > 0. Multiplies every number of filters and dense units, to build
            small versions. Defaults to `1.0`.
        dropout: float in [0, 1). Dropout rate after fc6 and fc7. Defaults to `0.5`.
        fully_convolutional: bool. The paper's dense evaluation (section 3.2): fc6 becomes
            a 7x7 "valid" convolution (in general, one covering the pool5 map of an
            `input_shape` image; 7x7 for unknown sizes), fc7 and fc8 1x1 convolutions, and
            the class score map is averaged before the softmax
            (`fully_convolutional_head`). Same weights, any image at least that large.
            Defaults to `False`.
        name: str. Defaults to `"{name}"`.

    Returns:
        A functional `keras.Model` mapping images to float32 class probabilities
        `(batch, num_classes)`; its input has unknown height and width when
        `fully_convolutional=True`.

    Raises:
        ValueError: if an argument is out of range or the image is smaller than 32x32
            (the message names the argument and the value).

    Example:

    >>> model = {function}((32, 32, 3), num_classes=10, width=0.125)
    >>> model.output_shape
    (None, 10)
    """


def _document(function, depth, configuration, params, rounded):
    convs = CONFIGURATIONS[configuration]
    function.__doc__ = _DOCSTRING.format(
        depth=depth,
        configuration=configuration,
        convs=sum(convs),
        stages=", ".join(str(count) for count in convs),
        params=f"{params:,}",
        rounded=rounded,
        name=f"vgg{depth}",
        function=function.__name__,
    )
    return function


@register_model("vgg11", "classification")
def VGG11(  # noqa: N802  (an architecture, named like keras.applications)
    input_shape, num_classes, width=1.0, dropout=0.5, fully_convolutional=False, name="vgg11"
):
    return _vgg("A", input_shape, num_classes, width, dropout, fully_convolutional, name)


@register_model("vgg13", "classification")
def VGG13(  # noqa: N802
    input_shape, num_classes, width=1.0, dropout=0.5, fully_convolutional=False, name="vgg13"
):
    return _vgg("B", input_shape, num_classes, width, dropout, fully_convolutional, name)


@register_model("vgg16", "classification")
def VGG16(  # noqa: N802
    input_shape, num_classes, width=1.0, dropout=0.5, fully_convolutional=False, name="vgg16"
):
    return _vgg("D", input_shape, num_classes, width, dropout, fully_convolutional, name)


@register_model("vgg19", "classification")
def VGG19(  # noqa: N802
    input_shape, num_classes, width=1.0, dropout=0.5, fully_convolutional=False, name="vgg19"
):
    return _vgg("E", input_shape, num_classes, width, dropout, fully_convolutional, name)


_document(VGG11, 11, "A", 132_863_336, 133)
_document(VGG13, 13, "B", 133_047_848, 133)
_document(VGG16, 16, "D", 138_357_544, 138)
_document(VGG19, 19, "E", 143_667_240, 144)
