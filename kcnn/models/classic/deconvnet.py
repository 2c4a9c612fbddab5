"""DeconvNet (Noh, Hong & Han 2015, arXiv:1505.04366)."""

import keras

from kcnn._validation import check_positive_int
from kcnn.layers import MaxPoolingWithArgmax2D, MaxUnpooling2D
from kcnn.models.classic._common import (
    check_input_shape,
    check_min_size,
    check_num_classes,
    check_width,
    scaled,
)
from kcnn.models.classic.vgg import CONFIGURATIONS, STAGE_FILTERS
from kcnn.models.registry import register_model

FC_UNITS = 4096


def _bn_relu(x, name):
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.Activation("relu", name=f"{name}_relu")(x)


def _conv(x, filters, kernel_size, name, padding="same"):
    x = keras.layers.Conv2D(filters, kernel_size, padding=padding, use_bias=False, name=name)(x)
    return _bn_relu(x, name)


def _deconv(x, filters, kernel_size, name, padding="same"):
    x = keras.layers.Conv2DTranspose(
        filters, kernel_size, padding=padding, use_bias=False, name=name
    )(x)
    return _bn_relu(x, name)


@register_model("deconvnet", "segmentation")
def DeconvNet(  # noqa: N802  (an architecture, named like keras.applications)
    input_shape,
    num_classes,
    width=1.0,
    fc_kernel_size=7,
    name="deconvnet",
):
    """DeconvNet: a VGG-16 encoder and its mirror image of unpooling and deconvolutions.

    Noh, Hong & Han, "Learning Deconvolution Network for Semantic Segmentation", ICCV 2015
    (arXiv:1505.04366), table 1. The encoder is VGG-16's 13 convolutions (3x3, "same")
    whose max-poolings remember where each maximum came from (`MaxPoolingWithArgmax2D`),
    then fc6 and fc7 as convolutions (7x7 "valid" with 4096 filters, giving 1x1 at 224x224,
    and 1x1). The decoder mirrors it: a 7x7 transposed convolution ("deconv-fc6") back to
    the pool5 size, then per stage `MaxUnpooling2D` (the unpooling "switches", restoring
    the exact pre-pooling size also for odd sizes) and 3x3 transposed convolutions
    ("deconvolutions") whose last one halves the channels for the next stage (512, 512,
    256, 128, 64); a 1x1 convolution and a per-pixel float32 softmax give the class map.
    As in the paper every convolution and deconvolution is followed by batch normalization
    (and ReLU); they have no bias, which batch norm would cancel.

    This is Noh et al.'s segmentation network. Zeiler & Fergus's "deconvnet" (2014), the
    visualisation that sends one unit of a trained CNN back to the pixels, is
    `kcnn.viz.deconvnet_projection`; this model borrows its unpooling with switches.

    Parameters at 224x224x3 with the paper's 21 PASCAL VOC classes: 251,822,357, of which
    251,788,949 trainable (the rest are the batch norms' moving statistics); fc6 and
    deconv-fc6 alone hold 102,760,448 each. The paper gives no count; SegNet's comparison
    (Badrinarayanan et al. 2015, arXiv:1511.00561) lists DeconvNet at about 252M.
    `width` multiplies every number of filters and `fc_kernel_size` sets the kernel of
    fc6 and deconv-fc6, to build small versions: the paper's 7 needs a pool5 map of at
    least 7x7, i.e. an input of at least 224x224.

    Args:
        input_shape: tuple `(height, width, channels)`; height and width at least
            `32 * fc_kernel_size`, or None.
        num_classes: int >= 2. Classes including background.
        width: float > 0. Multiplies every number of filters. Defaults to `1.0`.
        fc_kernel_size: int. Kernel of fc6 and deconv-fc6. Defaults to `7`.
        name: str. Defaults to `"deconvnet"`.

    Returns:
        A functional `keras.Model` mapping images `(batch, height, width, channels)` to
        float32 per-pixel class probabilities `(batch, height, width, num_classes)`.

    Raises:
        ValueError: if an argument is out of range or the image is smaller than
            `32 * fc_kernel_size` (the message names the argument and the value).

    Example:

    >>> model = DeconvNet((32, 32, 3), num_classes=4, width=0.0625, fc_kernel_size=1)
    >>> model.output_shape
    (None, 32, 32, 4)
    """
    input_shape = check_input_shape(input_shape)
    num_classes = check_num_classes(num_classes)
    width = check_width(width)
    fc_kernel_size = check_positive_int(fc_kernel_size, "fc_kernel_size")
    check_min_size(
        input_shape,
        32 * fc_kernel_size,
        f"fc6, a {fc_kernel_size}x{fc_kernel_size} 'valid' convolution, runs on the 1/32 "
        "scale pool5 map",
    )
    filters = [scaled(value, width) for value in STAGE_FILTERS]
    convs_per_stage = CONFIGURATIONS["D"]
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    switches = []
    for stage, convs in enumerate(convs_per_stage, start=1):
        for index in range(1, convs + 1):
            x = _conv(x, filters[stage - 1], 3, name=f"conv{stage}_{index}")
        pooled, indices = MaxPoolingWithArgmax2D(name=f"pool{stage}")(x)
        switches.append((x, indices))
        x = pooled
    units = scaled(FC_UNITS, width)
    x = _conv(x, units, fc_kernel_size, name="fc6", padding="valid")
    x = _conv(x, units, 1, name="fc7")
    x = _deconv(x, filters[-1], fc_kernel_size, name="deconv_fc6", padding="valid")
    for stage in reversed(range(1, len(convs_per_stage) + 1)):
        pre_pool, indices = switches[stage - 1]
        x = MaxUnpooling2D(name=f"unpool{stage}")([x, indices, pre_pool])
        convs = convs_per_stage[stage - 1]
        for index in range(1, convs + 1):
            out_filters = filters[stage - 1]
            if index == convs and stage > 1:
                out_filters = filters[stage - 2]
            x = _deconv(x, out_filters, 3, name=f"deconv{stage}_{index}")
    x = keras.layers.Conv2D(num_classes, 1, name="scores")(x)
    outputs = keras.layers.Activation("softmax", dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)
