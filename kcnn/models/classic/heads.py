"""Classification heads of the classic networks: fully connected, or fully convolutional."""

import keras


def fully_convolutional_head(
    x, num_classes, hidden_units=(), activation="relu", dropout=0.0, window=1, name="head"
):
    """Convolutions to `num_classes` score maps, global average pooling and a softmax.

    The fully connected layers of a classifier rewritten as convolutions, as in OverFeat
    (Sermanet et al. 2014, arXiv:1312.6229), the dense evaluation of VGG (Simonyan &
    Zisserman 2015, arXiv:1409.1556, section 3.2) and FCN (Long et al. 2015,
    arXiv:1411.4038): a dense layer on a flattened `window x window x C` map is a `window x
    window` "valid" convolution with the same weights, and each following dense layer a 1x1
    convolution. On a larger image the head yields a map of class scores, one per window
    position, which is averaged (as VGG does) before the softmax. The classifier therefore
    runs on any input at least as large as the one it was designed for, and on that input it
    computes exactly the function of its dense counterpart (a `Flatten` and `Dense` layers
    whose kernels are these kernels reshaped).

    Args:
        x: 4D Keras tensor `(batch, height, width, channels)`, the last feature map.
        num_classes: int. Number of classes.
        hidden_units: sequence of ints. Filters of the hidden convolutions (the hidden
            dense layers), each followed by `activation` and `dropout`. Defaults to `()`.
        activation: str or callable. Activation of the hidden layers. Defaults to `"relu"`.
        dropout: float in [0, 1). Dropout rate after each hidden layer. Defaults to `0.0`.
        window: int. Kernel size of the first convolution (the window a first dense layer
            would flatten); the others are 1x1. Defaults to `1`.
        name: str. Prefix of the layer names; the softmax is named `"predictions"`.
            Defaults to `"head"`.

    Returns:
        Keras tensor `(batch, num_classes)` of float32 probabilities.

    Example:

    >>> inputs = keras.Input((None, None, 16))
    >>> outputs = fully_convolutional_head(inputs, 10, hidden_units=(32,), window=3)
    >>> model = keras.Model(inputs, outputs)
    >>> model.output_shape, model.count_params()  # 3*3*16*32 + 32 + 32*10 + 10
    ((None, 10), 4970)
    """
    for index, units in enumerate(hidden_units, start=1):
        x = keras.layers.Conv2D(
            units,
            window if index == 1 else 1,
            activation=activation,
            name=f"{name}_fc{index}",
        )(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"{name}_dropout{index}")(x)
    x = keras.layers.Conv2D(num_classes, 1 if hidden_units else window, name=f"{name}_scores")(x)
    x = keras.layers.GlobalAveragePooling2D(name=f"{name}_average")(x)
    return keras.layers.Activation("softmax", dtype="float32", name="predictions")(x)


def dense_head(x, num_classes, hidden_units=(), activation="relu", dropout=0.0, name="head"):
    """`Flatten`, hidden `Dense` layers with dropout, and a float32 softmax `Dense` layer.

    The classifier of LeNet, AlexNet and VGG; `fully_convolutional_head` is its
    convolutional form, with the same parameters.

    Args:
        x: Keras tensor, the last feature map.
        num_classes: int. Number of classes.
        hidden_units: sequence of ints. Units of the hidden layers. Defaults to `()`.
        activation: str or callable. Activation of the hidden layers. Defaults to `"relu"`.
        dropout: float in [0, 1). Dropout rate after each hidden layer. Defaults to `0.0`.
        name: str. Prefix of the layer names; the softmax is named `"predictions"`.
            Defaults to `"head"`.

    Returns:
        Keras tensor `(batch, num_classes)` of float32 probabilities.

    Example:

    >>> inputs = keras.Input((3, 3, 16))
    >>> keras.Model(inputs, dense_head(inputs, 10, hidden_units=(32,))).count_params()
    4970
    """
    x = keras.layers.Flatten(name=f"{name}_flatten")(x)
    for index, units in enumerate(hidden_units, start=1):
        x = keras.layers.Dense(units, activation=activation, name=f"{name}_fc{index}")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"{name}_dropout{index}")(x)
    return keras.layers.Dense(
        num_classes, activation="softmax", dtype="float32", name="predictions"
    )(x)


def classifier_head(x, num_classes, hidden_units, activation, dropout, fully_convolutional, window):
    """`fully_convolutional_head` with a `window` kernel, or `dense_head`."""
    if fully_convolutional:
        return fully_convolutional_head(
            x, num_classes, hidden_units, activation=activation, dropout=dropout, window=window
        )
    return dense_head(x, num_classes, hidden_units, activation=activation, dropout=dropout)
