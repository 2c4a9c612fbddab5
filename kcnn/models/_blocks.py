"""Small building blocks shared by the segmentation decoders."""

import keras

from kcnn._serialization import register
from kcnn.layers import DepthwiseSeparableConv2D


def conv_block(x, filters, convs=2, separable=False, name="block"):
    """`convs` x (3x3 conv -> batch norm -> ReLU), or depthwise-separable convs."""
    for index in range(convs):
        prefix = f"{name}_conv{index + 1}"
        if separable:
            x = DepthwiseSeparableConv2D(filters, 3, name=prefix)(x)
            continue
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=prefix)(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"{prefix}_bn")(x)
        x = keras.layers.Activation("relu", name=f"{prefix}_relu")(x)
    return x


def softmax_head(x, num_classes, name="predictions"):
    """1x1 conv to class scores and a float32 softmax (stable under mixed precision)."""
    x = keras.layers.Conv2D(num_classes, 1, name=f"{name}_scores")(x)
    return keras.layers.Activation("softmax", dtype="float32", name=name)(x)


@register
class MatchSpatialSize(keras.layers.Layer):
    """Crops or zero-pads `x` (bottom / right) to the height and width of `reference`.

    FCN (Long et al. 2015) crops upsampled score maps to the skip layer they are fused with;
    this does that for any input size, also when sizes are only known at run time.

    Input shape:
        A list `[x, reference]` of 4D tensors.

    Output shape:
        `x`'s batch and channels with `reference`'s height and width.
    """

    def call(self, inputs):
        x, reference = inputs
        height = keras.ops.shape(reference)[1]
        width = keras.ops.shape(reference)[2]
        pad_height = keras.ops.maximum(height - keras.ops.shape(x)[1], 0)
        pad_width = keras.ops.maximum(width - keras.ops.shape(x)[2], 0)
        x = keras.ops.pad(x, [[0, 0], [0, pad_height], [0, pad_width], [0, 0]])
        return x[:, :height, :width, :]

    def compute_output_shape(self, input_shape):
        x_shape, reference_shape = input_shape
        return (x_shape[0], reference_shape[1], reference_shape[2], x_shape[3])
