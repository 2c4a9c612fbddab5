"""Custom Keras layers, one public layer per file, registered under the "kcnn" package."""

from kcnn.layers.bed_of_nails_upsampling2d import BedOfNailsUpsampling2D
from kcnn.layers.bottleneck_block import BottleneckBlock
from kcnn.layers.deformable_conv2d import DeformableConv2D
from kcnn.layers.depthwise_separable_conv2d import DepthwiseSeparableConv2D
from kcnn.layers.fractional_max_pooling2d import FractionalMaxPooling2D
from kcnn.layers.inception_module import InceptionModule
from kcnn.layers.local_response_normalization import LocalResponseNormalization
from kcnn.layers.locally_connected2d import LocallyConnected2D
from kcnn.layers.max_pooling_with_argmax2d import MaxPoolingWithArgmax2D
from kcnn.layers.max_unpooling2d import MaxUnpooling2D
from kcnn.layers.mirror_views import AverageMirrorViews, MirrorViews
from kcnn.layers.partial_conv2d import PartialConv2D
from kcnn.layers.residual_block import ResidualBlock
from kcnn.layers.roi_align import RoIAlign
from kcnn.layers.smooth_fill2d import SmoothFill2D
from kcnn.layers.stochastic_pooling2d import StochasticPooling2D
from kcnn.layers.submanifold_conv2d import SubmanifoldConv2D

__all__ = [
    "AverageMirrorViews",
    "BedOfNailsUpsampling2D",
    "BottleneckBlock",
    "DeformableConv2D",
    "DepthwiseSeparableConv2D",
    "FractionalMaxPooling2D",
    "InceptionModule",
    "LocalResponseNormalization",
    "LocallyConnected2D",
    "MaxPoolingWithArgmax2D",
    "MaxUnpooling2D",
    "MirrorViews",
    "PartialConv2D",
    "ResidualBlock",
    "RoIAlign",
    "SmoothFill2D",
    "StochasticPooling2D",
    "SubmanifoldConv2D",
]
