"""Custom Keras layers, one public layer per file, registered under the "kcnn" package."""

from kcnn.layers.depthwise_separable_conv2d import DepthwiseSeparableConv2D
from kcnn.layers.max_pooling_with_argmax2d import MaxPoolingWithArgmax2D
from kcnn.layers.max_unpooling2d import MaxUnpooling2D
from kcnn.layers.partial_conv2d import PartialConv2D

__all__ = [
    "DepthwiseSeparableConv2D",
    "MaxPoolingWithArgmax2D",
    "MaxUnpooling2D",
    "PartialConv2D",
]
