"""LeNet-5 (LeCun, Bottou, Bengio & Haffner 1998)."""

import keras

from kcnn.models.classic._common import (
    check_choice,
    check_input_shape,
    check_min_size,
    check_num_classes,
)
from kcnn.models.classic.heads import classifier_head
from kcnn.models.registry import register_model

ACTIVATIONS = ("tanh", "relu")
POOLINGS = ("average", "max")


@register_model("lenet5", "classification")
def LeNet5(  # noqa: N802  (an architecture, named like keras.applications)
    input_shape,
    num_classes,
    activation="tanh",
    pooling="average",
    fully_convolutional=False,
    name="lenet5",
):
    """LeNet-5: two 5x5 convolution + subsampling stages, a 5x5 convolution and two dense layers.

    LeCun, Bottou, Bengio & Haffner, "Gradient-Based Learning Applied to Document
    Recognition", Proceedings of the IEEE, 1998, figure 2, in its usual modern form:

        C1 conv 5x5, 6 maps -> S2 pool 2x2 -> C3 conv 5x5, 16 maps -> S4 pool 2x2
        -> C5 conv 5x5, 120 maps -> F6 dense 84 -> output dense num_classes, softmax

    All convolutions are "valid", so a 32x32 image gives 28, 14, 10, 5 and 1 pixels (the
    paper pads 28x28 MNIST digits to 32x32; do the same, e.g. `image_size=32` in kcnn's
    data loaders). Differences from the paper, as in most modern versions: C3 connects
    every S2 map to every C3 map (the paper's table I connects each of the 16 maps to 3, 4
    or 6 of the 6 maps, 1,516 parameters instead of 2,416, to break symmetry); S2 and S4
    are plain average (or max) pooling without the paper's trainable coefficient and bias
    per map; the activation is `tanh` (the paper's is `1.7159 tanh(2a / 3)`) or ReLU; and
    the output layer is a softmax instead of Euclidean RBF units. With 32x32x1 inputs and
    10 classes this gives 61,706 parameters: C1 156, C3 2,416, C5 48,120, F6 10,164,
    output 850 (the paper's "60,000 trainable parameters" has the sparse C3, the trainable
    subsampling and fixed RBF weights instead).

    Args:
        input_shape: tuple `(height, width, channels)`; height and width at least 32, or
            None (with `fully_convolutional=True`).
        num_classes: int >= 2.
        activation: `"tanh"` or `"relu"`. Defaults to `"tanh"`.
        pooling: `"average"` or `"max"`, for S2 and S4. Defaults to `"average"`.
        fully_convolutional: bool. F6 and the output as 1x1 convolutions followed by global
            average pooling (`fully_convolutional_head`), so the model takes any image of at
            least 32x32 and has the same weights. Defaults to `False`.
        name: str. Defaults to `"lenet5"`.

    Returns:
        A functional `keras.Model` mapping images to float32 class probabilities
        `(batch, num_classes)`; its input has unknown height and width when
        `fully_convolutional=True`.

    Raises:
        ValueError: if an argument is not one of the values above, or the image is smaller
            than 32x32 (the message names the argument and the value).

    Example:

    >>> model = LeNet5((32, 32, 1), num_classes=10)
    >>> model.output_shape, model.count_params()
    ((None, 10), 61706)
    """
    input_shape = check_input_shape(input_shape)
    num_classes = check_num_classes(num_classes)
    check_choice(activation, "activation", ACTIVATIONS)
    check_choice(pooling, "pooling", POOLINGS)
    check_min_size(input_shape, 32, "C5, a 5x5 convolution, needs the 5x5 maps of S4")
    pool = keras.layers.AveragePooling2D if pooling == "average" else keras.layers.MaxPooling2D
    if fully_convolutional:
        input_shape = (None, None, input_shape[2])
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Conv2D(6, 5, activation=activation, name="c1")(inputs)
    x = pool(2, name="s2")(x)
    x = keras.layers.Conv2D(16, 5, activation=activation, name="c3")(x)
    x = pool(2, name="s4")(x)
    x = keras.layers.Conv2D(120, 5, activation=activation, name="c5")(x)
    outputs = classifier_head(
        x,
        num_classes,
        hidden_units=(84,),
        activation=activation,
        dropout=0.0,
        fully_convolutional=fully_convolutional,
        window=1,
    )
    return keras.Model(inputs, outputs, name=name)
