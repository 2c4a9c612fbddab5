"""ResNet-18, -34, -50, -101 and -152 (He et al. 2016, arXiv:1512.03385)."""

import keras

from kcnn.layers import BottleneckBlock, ResidualBlock
from kcnn.layers._residual_base import DEFAULT_KERNEL_INITIALIZER
from kcnn.models.classic._common import (
    check_input_shape,
    check_num_classes,
    check_width,
    scaled,
)
from kcnn.models.registry import register_model

STAGE_FILTERS = (64, 128, 256, 512)
# Blocks per stage (conv2_x .. conv5_x) of table 1 of the paper.
BLOCKS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
# (trainable, total) parameters at 224x224x3 and 1000 classes; the total adds the moving
# mean and variance of every batch norm, which Keras counts and PyTorch keeps as buffers.
PARAMETERS = {
    18: (11_689_512, 11_699_112),
    34: (21_797_672, 21_814_696),
    50: (25_557_032, 25_610_152),
    101: (44_549_160, 44_654_504),
    152: (60_192_808, 60_344_232),
}


def _resnet(depth, input_shape, num_classes, width, name):
    input_shape = check_input_shape(input_shape)
    num_classes = check_num_classes(num_classes)
    width = check_width(width)
    kind, blocks = BLOCKS[depth]
    inputs = keras.Input(shape=input_shape, name="image")
    # torchvision pads 3 and 1 pixels symmetrically; ReLU outputs are >= 0, so zero
    # padding before the max-pooling equals its -inf padding.
    x = keras.layers.ZeroPadding2D(3, name="conv1_pad")(inputs)
    x = keras.layers.Conv2D(
        scaled(64, width),
        7,
        strides=2,
        use_bias=False,
        kernel_initializer=DEFAULT_KERNEL_INITIALIZER,
        name="conv1",
    )(x)
    x = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name="conv1_bn")(x)
    x = keras.layers.Activation("relu", name="conv1_relu")(x)
    x = keras.layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool1")(x)
    for stage, (filters, count) in enumerate(zip(STAGE_FILTERS, blocks, strict=True), start=2):
        for index in range(1, count + 1):
            strides = 2 if index == 1 and stage > 2 else 1
            block = ResidualBlock if kind == "basic" else BottleneckBlock
            x = block(scaled(filters, width), strides=strides, name=f"conv{stage}_block{index}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="average_pool")(x)
    outputs = keras.layers.Dense(
        num_classes, activation="softmax", dtype="float32", name="predictions"
    )(x)
    return keras.Model(inputs, outputs, name=name)


_DOCSTRING = """ResNet-{depth}: a 7x7 stem, {blocks} {kind} residual blocks and a dense softmax.

    He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition", CVPR 2016
    (arXiv:1512.03385), table 1, built as torchvision's `resnet{depth}` (same layers,
    padding and parameter count, so its weights map onto this model layer by layer):

        conv 7x7/2, 64 -> BN -> ReLU -> max-pool 3x3/2
        -> conv2_x .. conv5_x: {stages} `{block}`s,
           {unit} 64, 128, 256 and 512
        -> global average pooling -> dense softmax

    The first block of conv3_x, conv4_x and conv5_x has stride 2. Shortcuts are
    identities, or 1x1 convolutions with batch norm where the shape changes (option B).
    {stride_note}Convolutions have no bias and pad symmetrically, batch norm uses epsilon
    1e-5 and momentum 0.1 (Keras 0.9), and kernels torchvision's He-normal initialization
    with the fan-out. Global average pooling makes the model accept any input size (the
    dense layer after it is a 1x1 convolution before it).

    Parameters at 224x224x3 and 1000 classes: {trainable} trainable, torchvision's
    `resnet{depth}` figure; `count_params()` gives {total}, which adds the moving mean and
    variance of every batch norm (non-trainable; PyTorch keeps them as buffers, outside its
    parameter count).

    Args:
        input_shape: tuple `(height, width, channels)`; height and width may be None.
        num_classes: int >= 2.
        width: float > 0. Multiplies every number of filters, to build small versions.
            Defaults to `1.0`.
        name: str. Defaults to `"classic_resnet{depth}"`.

    Returns:
        A functional `keras.Model` mapping images to float32 class probabilities
        `(batch, num_classes)`.

    Raises:
        ValueError: if an argument is out of range (the message names the argument and
            the value).

    Example:

    >>> model = {function}((32, 32, 3), num_classes=10, width=0.125)
    >>> model.output_shape
    (None, 10)
    """

_STRIDE_NOTE = """The stride of a downsampling block sits on its 3x3 convolution (torchvision's
    "v1.5"; the paper puts it on the first 1x1 convolution, with the same parameters).
    """


def _document(function, depth):
    kind, blocks = BLOCKS[depth]
    trainable, total = PARAMETERS[depth]
    function.__doc__ = _DOCSTRING.format(
        depth=depth,
        blocks=sum(blocks),
        kind=kind,
        stages=", ".join(str(count) for count in blocks),
        block="ResidualBlock" if kind == "basic" else "BottleneckBlock",
        unit="filters" if kind == "basic" else "bottleneck widths (4x as many outputs)",
        stride_note="" if kind == "basic" else _STRIDE_NOTE,
        trainable=f"{trainable:,}",
        total=f"{total:,}",
        function=function.__name__,
    )
    return function


@register_model("classic_resnet18", "classification")
def ResNet18(input_shape, num_classes, width=1.0, name="classic_resnet18"):  # noqa: N802
    return _resnet(18, input_shape, num_classes, width, name)


@register_model("classic_resnet34", "classification")
def ResNet34(input_shape, num_classes, width=1.0, name="classic_resnet34"):  # noqa: N802
    return _resnet(34, input_shape, num_classes, width, name)


@register_model("classic_resnet50", "classification")
def ResNet50(input_shape, num_classes, width=1.0, name="classic_resnet50"):  # noqa: N802
    return _resnet(50, input_shape, num_classes, width, name)


@register_model("classic_resnet101", "classification")
def ResNet101(input_shape, num_classes, width=1.0, name="classic_resnet101"):  # noqa: N802
    return _resnet(101, input_shape, num_classes, width, name)


@register_model("classic_resnet152", "classification")
def ResNet152(input_shape, num_classes, width=1.0, name="classic_resnet152"):  # noqa: N802
    return _resnet(152, input_shape, num_classes, width, name)


for _function, _depth in (
    (ResNet18, 18),
    (ResNet34, 34),
    (ResNet50, 50),
    (ResNet101, 101),
    (ResNet152, 152),
):
    _document(_function, _depth)
