"""AlexNet (Krizhevsky, Sutskever & Hinton 2012)."""

import keras

from kcnn.analysis import conv_output_size
from kcnn.layers import LocalResponseNormalization
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

# (filters, kernel size, stride, split across the two GPUs) of conv1..conv5.
CONVOLUTIONS = (
    (96, 11, 4, False),
    (256, 5, 1, True),
    (384, 3, 1, False),
    (384, 3, 1, True),
    (256, 3, 1, True),
)
FC_UNITS = 4096


def _pool5_size(size):
    """Side of pool5 for an input side `size` (2 pixels of padding, as `AlexNet` does)."""
    size = conv_output_size(size + 4, 11, 4, "valid")
    for _ in range(3):
        size = conv_output_size(size, 3, 2, "valid")
    return size


@register_model("alexnet", "classification")
def AlexNet(  # noqa: N802  (an architecture, named like keras.applications)
    input_shape,
    num_classes,
    lrn=True,
    dropout=0.5,
    single_stream=False,
    width=1.0,
    fully_convolutional=False,
    name="alexnet",
):
    """AlexNet: five convolutions (three of them split in two groups) and three dense layers.

    Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep Convolutional Neural
    Networks", NeurIPS 2012, figure 2 and section 3:

        conv1 11x11/4, 96 -> ReLU -> LRN -> max-pool 3x3/2
        conv2 5x5, 256, 2 groups -> ReLU -> LRN -> max-pool 3x3/2
        conv3 3x3, 384 -> ReLU
        conv4 3x3, 384, 2 groups -> ReLU
        conv5 3x3, 256, 2 groups -> ReLU -> max-pool 3x3/2
        fc6 4096 -> ReLU -> dropout -> fc7 4096 -> ReLU -> dropout -> fc8 softmax

    The network was split across two GPUs that exchange activations only at conv3 and the
    dense layers; conv2, conv4 and conv5 see only the half of the previous maps on their
    own GPU, which is a grouped convolution with `groups=2` (as in Caffe's reference
    model). `single_stream=True` removes the groups (one GPU, every map connected).
    Local response normalization uses the paper's k=2, n=5, alpha=1e-4, beta=0.75
    (`LocalResponseNormalization`); the max-pooling windows overlap (3x3, stride 2). The
    paper's 224x224 input does not give its 55x55 conv1 maps without padding (227 does):
    conv1 pads 2 pixels on each side, as torchvision does, so 224 -> 55 -> 27 -> 13 -> 6.
    Kernels use Keras's default initialization, not the paper's N(0, 0.01) with biases of 1.

    Parameters at 224x224x3 and 1000 classes: 60,965,224, the figure of Caffe's
    `bvlc_alexnet` (the paper's "60 million"): conv1 34,944, conv2 307,456 (256 x 5 x 5 x
    48 + 256), conv3 885,120, conv4 663,936 (384 x 3 x 3 x 192 + 384), conv5 442,624,
    fc6 37,752,832 (6 x 6 x 256 x 4096 + 4096), fc7 16,781,312, fc8 4,097,000. With
    `single_stream=True` conv2, conv4 and conv5 see all maps: 62,378,344.

    Args:
        input_shape: tuple `(height, width, channels)`; height and width at least 63 (the
            stride-4 stem and three 3x3/2 poolings), or None.
        num_classes: int >= 2.
        lrn: bool. Local response normalization after conv1 and conv2. Defaults to `True`.
        dropout: float in [0, 1). Dropout rate after fc6 and fc7. Defaults to `0.5`.
        single_stream: bool. Ungrouped conv2, conv4 and conv5. Defaults to `False`.
        width: float > 0. Multiplies every number of filters and dense units (rounded to
            an even number when grouped), to build small versions. Defaults to `1.0`.
        fully_convolutional: bool. fc6 becomes a "valid" convolution whose kernel covers
            the pool5 map of an `input_shape` image (6x6 for 224x224, and for unknown
            sizes), fc7 and fc8 1x1 convolutions, and the score map is averaged before the
            softmax (`fully_convolutional_head`): same weights, any image at least that
            large. Defaults to `False`.
        name: str. Defaults to `"alexnet"`.

    Returns:
        A functional `keras.Model` mapping images to float32 class probabilities
        `(batch, num_classes)`; its input has unknown height and width when
        `fully_convolutional=True`.

    Raises:
        ValueError: if an argument is out of range or the image is smaller than 63x63
            (the message names the argument and the value).

    Example:

    >>> model = AlexNet((64, 64, 3), num_classes=10, width=0.125)
    >>> model.output_shape
    (None, 10)
    """
    input_shape = check_input_shape(input_shape)
    num_classes = check_num_classes(num_classes)
    dropout = check_rate(dropout, "dropout")
    width = check_width(width)
    check_min_size(input_shape, 63, "AlexNet's stride-4 stem and three 3x3/2 poolings")
    window = tuple(_pool5_size(224 if size is None else size) for size in input_shape[:2])
    if fully_convolutional:
        input_shape = (None, None, input_shape[2])
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.ZeroPadding2D(2, name="conv1_pad")(inputs)
    for index, (filters, kernel_size, strides, split) in enumerate(CONVOLUTIONS, start=1):
        groups = 1 if single_stream or not split else 2
        x = keras.layers.Conv2D(
            scaled(filters, width, divisor=2),
            kernel_size,
            strides=strides,
            padding="valid" if index == 1 else "same",
            groups=groups,
            activation="relu",
            name=f"conv{index}",
        )(x)
        if index in (1, 2) and lrn:
            x = LocalResponseNormalization(2, 2.0, 1e-4, 0.75, name=f"conv{index}_lrn")(x)
        if index in (1, 2, 5):
            x = keras.layers.MaxPooling2D(3, strides=2, name=f"pool{index}")(x)
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
