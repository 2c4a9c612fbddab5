"""`BottleneckBlock`: the 1x1-3x3-1x1 block of ResNet-50, -101 and -152."""

from kcnn._serialization import register
from kcnn._validation import check_positive_int
from kcnn.layers._residual_base import ResidualBase


@register
class BottleneckBlock(ResidualBase):
    """A 1x1 reduction, a 3x3 convolution and a 1x1 expansion, added to a shortcut.

    The "bottleneck" block of He, Zhang, Ren & Sun, "Deep Residual Learning for Image
    Recognition", CVPR 2016 (arXiv:1512.03385), figure 5 right, as in torchvision's
    `Bottleneck`:

        conv 1x1 (filters) -> BN -> ReLU -> conv 3x3 (filters, stride s) -> BN -> ReLU
        -> conv 1x1 (filters * expansion) -> BN -> (+ shortcut) -> ReLU

    The stride sits on the 3x3 convolution ("ResNet v1.5", torchvision and most later
    implementations); the paper's Torch models put it on the first 1x1 convolution, which
    reads only a quarter of the pixels. Parameter counts are the same. The shortcut is the
    identity when the block keeps the shape, otherwise a strided 1x1 convolution with batch
    norm (option B). Convolutions have no bias and pad `k // 2` pixels on every side;
    batch norm and initialization follow torchvision (see `ResidualBlock`).

    Args:
        filters: int. Channels of the two inner convolutions (the bottleneck width).
        strides: int or tuple of 2 ints. Stride of the 3x3 convolution and of the
            projection. Defaults to `1`.
        expansion: int. The block outputs `filters * expansion` channels. Defaults to `4`.
        kernel_initializer: initializer of the convolution kernels, or None for
            `VarianceScaling(2.0, "fan_out", "untruncated_normal")`. Defaults to `None`.
        kernel_regularizer: regularizer of the convolution kernels. Defaults to `None`.
        momentum: float in [0, 1). Batch norm momentum. Defaults to `0.9`.
        epsilon: float > 0. Batch norm epsilon. Defaults to `1e-5`.
        **kwargs: base layer arguments such as `name` and `dtype`.

    Input shape:
        4D tensor `(batch_size, height, width, channels)` with known channels.

    Output shape:
        4D tensor `(batch_size, ceil(height / s_h), ceil(width / s_w), filters * expansion)`.

    Raises:
        ValueError: if `filters` or `expansion` is not a positive int, `strides` not a
            positive int or a tuple of 2 positive ints, `momentum` not in [0, 1) or
            `epsilon` not positive; when built, if the number of input channels is unknown.

    Example:

    >>> import numpy as np
    >>> block = BottleneckBlock(4)
    >>> block(np.random.rand(2, 8, 8, 16).astype("float32")).shape
    TensorShape([2, 8, 8, 16])
    >>> block.count_params()  # 16*4 + 9*4*4 + 4*16, norms 4*(4 + 4 + 16), no projection
    368
    """

    def __init__(
        self,
        filters,
        strides=1,
        expansion=4,
        kernel_initializer=None,
        kernel_regularizer=None,
        momentum=0.9,
        epsilon=1e-5,
        **kwargs,
    ):
        super().__init__(
            filters,
            strides=strides,
            kernel_initializer=kernel_initializer,
            kernel_regularizer=kernel_regularizer,
            momentum=momentum,
            epsilon=epsilon,
            **kwargs,
        )
        self.expansion = check_positive_int(expansion, "expansion")
        self.output_channels = self.filters * self.expansion
        self.conv1 = self.conv(self.filters, 1, 1, "conv1")
        self.norm1 = self.batch_norm("conv1_bn")
        self.conv2 = self.conv(self.filters, 3, self.strides, "conv2")
        self.norm2 = self.batch_norm("conv2_bn")
        self.conv3 = self.conv(self.output_channels, 1, 1, "conv3")
        self.norm3 = self.batch_norm("conv3_bn")

    @property
    def branch(self):
        return [(self.conv1, self.norm1), (self.conv2, self.norm2), (self.conv3, self.norm3)]

    def get_config(self):
        config = super().get_config()
        config["expansion"] = self.expansion
        return config
