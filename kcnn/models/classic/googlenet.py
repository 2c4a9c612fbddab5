"""GoogLeNet, or Inception v1 (Szegedy et al. 2015, arXiv:1409.4842)."""

import keras

from kcnn.layers import InceptionModule, LocalResponseNormalization
from kcnn.models.classic._common import (
    check_input_shape,
    check_min_size,
    check_num_classes,
    check_rate,
    check_width,
    scaled,
)
from kcnn.models.registry import register_model

# Table 1 of the paper: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj.
INCEPTION_FILTERS = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}
# Max-pooling 3x3/2 after these modules.
POOL_AFTER = ("3b", "4e")
# The auxiliary classifiers sit on inception (4a) and (4d); their losses are weighted by 0.3.
AUX_AFTER = ("4a", "4d")
AUX_LOSS_WEIGHT = 0.3
# Inception (4a) is 16 times smaller than the image and the auxiliary heads pool it 5x5/3.
AUX_MIN_INPUT_SIZE = 65


def _conv(x, filters, kernel_size, strides=1, name=None):
    return keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding="same", activation="relu", name=name
    )(x)


def _lrn(x, name):
    # Caffe's bvlc_googlenet: local_size 5, alpha 1e-4 (divided by the size), beta 0.75, k 1.
    return LocalResponseNormalization(2, bias=1.0, alpha=1e-4 / 5, beta=0.75, name=name)(x)


def _aux_head(x, num_classes, width, name):
    """Average-pool 5x5/3, 1x1 conv 128, dense 1024, dropout 0.7, dense softmax."""
    x = keras.layers.AveragePooling2D(5, strides=3, name=f"{name}_pool")(x)
    x = _conv(x, scaled(128, width), 1, name=f"{name}_conv")
    x = keras.layers.Flatten(name=f"{name}_flatten")(x)
    x = keras.layers.Dense(scaled(1024, width), activation="relu", name=f"{name}_fc")(x)
    x = keras.layers.Dropout(0.7, name=f"{name}_dropout")(x)
    return keras.layers.Dense(
        num_classes, activation="softmax", dtype="float32", name=f"{name}_predictions"
    )(x)


@register_model("googlenet", "classification")
def GoogLeNet(  # noqa: N802  (an architecture, named like keras.applications)
    input_shape,
    num_classes,
    aux_heads=False,
    lrn=True,
    dropout=0.4,
    width=1.0,
    name="googlenet",
):
    """GoogLeNet: a convolutional stem, nine Inception modules and global average pooling.

    Szegedy, Liu, Jia, Sermanet, Reed, Anguelov, Erhan, Vanhoucke & Rabinovich, "Going
    Deeper with Convolutions", CVPR 2015 (arXiv:1409.4842), table 1 and figure 3:

        conv 7x7/2, 64 -> max-pool 3x3/2 -> LRN -> conv 1x1, 64 -> conv 3x3, 192 -> LRN
        -> max-pool 3x3/2 -> inception 3a, 3b -> max-pool 3x3/2
        -> inception 4a, 4b, 4c, 4d, 4e -> max-pool 3x3/2 -> inception 5a, 5b
        -> global average pooling -> dropout 40% -> dense softmax

    Every convolution has a bias and a ReLU; every pooling uses "same" padding, so 224 ->
    112 -> 56 -> 28 -> 14 -> 7 (and any size works). The final 7x7 average pooling is a
    global average pooling, equal at 224x224 and size-independent, so the model is fully
    convolutional up to its last dense layer (a dense layer after global pooling equals a
    1x1 convolution before it). LRN uses the values of Caffe's `bvlc_googlenet`
    (`depth_radius=2`, `bias=1`, `alpha=2e-5`, `beta=0.75`), since the paper gives none.

    Parameters at 224x224x3 and 1000 classes, without auxiliary heads: 6,998,552 =
    6,990,272 weights + 8,280 biases, computed from the filter columns of the paper's
    table 1. Its "params" column (weights in units of 1,024, biases left out) sums to
    6,797.7K, the "6.8M" usually quoted; the weights here are 6,826.4K in those units. The
    difference is in the column itself: a few rows disagree with the filter columns of the
    same table (conv1 2.7K for 7 x 7 x 3 x 64 = 9.2K, inception 4c 463K for 497.5K, 5a
    1,072K for 1,018K); the other rows agree to rounding. The auxiliary heads add 3,188,840
    (on 4a) + 3,190,888 (on 4d) parameters, 13,378,280 in all.

    Auxiliary heads (`aux_heads=True`): two extra classifiers on inception (4a) and (4d),
    each average-pool 5x5/3 -> 1x1 conv 128 -> dense 1024 -> dropout 70% -> dense softmax,
    become extra model outputs `[predictions, aux1_predictions, aux2_predictions]`. The
    paper adds their losses with weight 0.3 during training and discards them at
    inference:

        model.compile(optimizer, loss=["sparse_categorical_crossentropy"] * 3,
                      loss_weights=[1.0, AUX_LOSS_WEIGHT, AUX_LOSS_WEIGHT])
        model.fit(images, (labels, labels, labels))
        classifier = without_aux_heads(model)  # shares the weights; one output

    They flatten a 4x4 map at 224x224 (in general `floor((s / 16 - 5) / 3) + 1` for a side
    `s`), so they need a known input size of at least 65.

    Args:
        input_shape: tuple `(height, width, channels)`; height and width may be None
            unless `aux_heads=True`.
        num_classes: int >= 2.
        aux_heads: bool. Add the two auxiliary classifiers as extra outputs. Defaults to
            `False`.
        lrn: bool. Local response normalization in the stem. Defaults to `True`.
        dropout: float in [0, 1). Dropout rate before the last dense layer. Defaults to
            `0.4`.
        width: float > 0. Multiplies every number of filters and dense units, to build
            small versions. Defaults to `1.0`.
        name: str. Defaults to `"googlenet"`.

    Returns:
        A functional `keras.Model` mapping images to float32 class probabilities
        `(batch, num_classes)`, or to a list of three such outputs with `aux_heads=True`.

    Raises:
        ValueError: if an argument is out of range, or with `aux_heads=True` if the input
            size is unknown or smaller than 65 (the message names the argument and the
            value).

    Example:

    >>> model = GoogLeNet((32, 32, 3), num_classes=10, width=0.125)
    >>> model.output_shape
    (None, 10)
    >>> with_aux = GoogLeNet((96, 96, 3), num_classes=10, aux_heads=True, width=0.125)
    >>> with_aux.output_names
    ['predictions', 'aux1_predictions', 'aux2_predictions']
    """
    input_shape = check_input_shape(input_shape)
    num_classes = check_num_classes(num_classes)
    dropout = check_rate(dropout, "dropout")
    width = check_width(width)
    if aux_heads:
        if None in input_shape[:2]:
            raise ValueError(
                "`input_shape` must have a known height and width with `aux_heads=True`: "
                f"the auxiliary heads flatten a feature map. Received: input_shape={input_shape}"
            )
        check_min_size(
            input_shape,
            AUX_MIN_INPUT_SIZE,
            "the auxiliary heads pool the 1/16 scale map of inception (4a) 5x5",
        )
    inputs = keras.Input(shape=input_shape, name="image")
    x = _conv(inputs, scaled(64, width), 7, strides=2, name="conv1")
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    if lrn:
        x = _lrn(x, "pool1_lrn")
    x = _conv(x, scaled(64, width), 1, name="conv2_reduce")
    x = _conv(x, scaled(192, width), 3, name="conv2")
    if lrn:
        x = _lrn(x, "conv2_lrn")
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool2")(x)
    aux_outputs = []
    for block, filters in INCEPTION_FILTERS.items():
        scaled_filters = [scaled(value, width) for value in filters]
        x = InceptionModule(*scaled_filters, name=f"inception_{block}")(x)
        if aux_heads and block in AUX_AFTER:
            head_name = f"aux{len(aux_outputs) + 1}"
            aux_outputs.append(_aux_head(x, num_classes, width, head_name))
        if block in POOL_AFTER:
            x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name=f"pool_{block}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="average_pool")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(
        num_classes, activation="softmax", dtype="float32", name="predictions"
    )(x)
    return keras.Model(inputs, [outputs, *aux_outputs] if aux_heads else outputs, name=name)


def without_aux_heads(model):
    """The main classifier of a GoogLeNet built with `aux_heads=True`, for inference.

    Args:
        model: a model from `GoogLeNet(..., aux_heads=True)` (or without: it is returned
            as a one-output model all the same).

    Returns:
        A functional `keras.Model` from the same input to the `"predictions"` output,
        sharing the weights (training one trains the other).

    Example:

    >>> model = GoogLeNet((96, 96, 3), num_classes=10, aux_heads=True, width=0.125)
    >>> without_aux_heads(model).output_shape
    (None, 10)
    """
    return keras.Model(model.input, model.get_layer("predictions").output, name=model.name)
