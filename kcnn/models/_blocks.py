"""Small building blocks shared by the segmentation decoders."""

import keras

from kcnn._serialization import register
from kcnn._validation import check_positive_int
from kcnn.layers import DepthwiseSeparableConv2D

# Momentum of the decoders' batch norms (as `kcnn.backbones.plain_cnn`'s, PyTorch's 0.1).
BATCH_NORM_MOMENTUM = 0.9


def conv_bn_relu(x, filters, kernel_size, name, dilation_rate=1):
    """A "same" conv without bias -> batch norm -> ReLU, named `name`, `name_bn`,
    `name_relu`."""
    x = keras.layers.Conv2D(
        filters,
        kernel_size,
        padding="same",
        dilation_rate=dilation_rate,
        use_bias=False,
        name=name,
    )(x)
    x = keras.layers.BatchNormalization(momentum=BATCH_NORM_MOMENTUM, name=f"{name}_bn")(x)
    return keras.layers.Activation("relu", name=f"{name}_relu")(x)


def conv_block(x, filters, convs=2, separable=False, name="block"):
    """`convs` x (3x3 conv -> batch norm -> ReLU), or depthwise-separable convs."""
    for index in range(convs):
        prefix = f"{name}_conv{index + 1}"
        if separable:
            x = DepthwiseSeparableConv2D(filters, 3, name=prefix)(x)
        else:
            x = conv_bn_relu(x, filters, 3, prefix)
    return x


def softmax_head(x, num_classes, name="predictions"):
    """1x1 conv to class scores and a float32 softmax (stable under mixed precision)."""
    x = keras.layers.Conv2D(num_classes, 1, name=f"{name}_scores")(x)
    return keras.layers.Activation("softmax", dtype="float32", name=name)(x)


@register
class MatchSpatialSize(keras.layers.Layer):
    """Crops or zero-pads `x` (bottom / right) to the height and width of `reference`
    divided by `stride`.

    FCN (Long et al. 2015) crops upsampled score maps to the skip layer they are fused with;
    this does that for any input size, also when sizes are only known at run time. Decoders
    use it wherever a level is not exactly half the next finer one (odd input sizes, the
    "valid"-padded stems of CSPDarkNet and Xception); detectors use `stride` to bring a
    backbone level to the `size // stride` grid their anchors are laid on.

    Args:
        stride: positive int. The output has `reference`'s size floor-divided by it.
            Defaults to 1.

    Input shape:
        A list `[x, reference]` of 4D tensors.

    Output shape:
        `x`'s batch and channels with `reference`'s height and width (divided by `stride`).
    """

    def __init__(self, stride=1, **kwargs):
        super().__init__(**kwargs)
        self.stride = check_positive_int(stride, "stride")

    def call(self, inputs):
        x, reference = inputs
        height = keras.ops.shape(reference)[1] // self.stride
        width = keras.ops.shape(reference)[2] // self.stride
        pad_height = keras.ops.maximum(height - keras.ops.shape(x)[1], 0)
        pad_width = keras.ops.maximum(width - keras.ops.shape(x)[2], 0)
        x = keras.ops.pad(x, [[0, 0], [0, pad_height], [0, pad_width], [0, 0]])
        return x[:, :height, :width, :]

    def compute_output_shape(self, input_shape):
        x_shape, reference_shape = input_shape
        size = [None if side is None else side // self.stride for side in reference_shape[1:3]]
        return (x_shape[0], *size, x_shape[3])

    def get_config(self):
        return {**super().get_config(), "stride": self.stride}


def match_size(x, reference, name, stride=1):
    """`x` cropped or padded to `reference`'s height and width // `stride`; `x` itself when
    both sizes are known and already equal (no layer is added)."""
    target = [None if side is None else side // stride for side in reference.shape[1:3]]
    if None not in target and list(x.shape[1:3]) == target:
        return x
    return MatchSpatialSize(stride, name=name)([x, reference])
