"""`ResidualBlock`: the basic two-convolution block of ResNet-18 and ResNet-34."""

from kcnn._serialization import register
from kcnn.layers._residual_base import ResidualBase


@register
class ResidualBlock(ResidualBase):
    """Two 3x3 convolutions with batch norm, added to a shortcut: `relu(F(x) + x)`.

    The "basic block" of He, Zhang, Ren & Sun, "Deep Residual Learning for Image
    Recognition", CVPR 2016 (arXiv:1512.03385), figure 5 left, as in torchvision's
    `BasicBlock`:

        conv 3x3 (stride s) -> BN -> ReLU -> conv 3x3 -> BN -> (+ shortcut) -> ReLU

    The shortcut is the identity when the block keeps the shape; when it downsamples
    (`strides` > 1) or changes the number of channels it is a strided 1x1 convolution with
    batch norm (the paper's option B). Convolutions have no bias (batch norm follows) and
    pad `k // 2` pixels on every side, as torchvision does, so a stride-2 block samples the
    same pixels as the reference models and weights transfer. Batch norm uses
    torchvision's `epsilon=1e-5` and momentum 0.1 (Keras `momentum=0.9`), and kernels
    torchvision's He-normal initialization with the fan-out. A block with `c` input
    channels has `9 * c * filters + 9 * filters ** 2` convolution weights, `4 * filters`
    batch-norm weights per norm (2 trainable), plus the projection when there is one.

    Args:
        filters: int. Output channels of both convolutions and of the block.
        strides: int or tuple of 2 ints. Stride of the first convolution and of the
            projection. Defaults to `1`.
        kernel_initializer: initializer of the convolution kernels, or None for
            `VarianceScaling(2.0, "fan_out", "untruncated_normal")`. Defaults to `None`.
        kernel_regularizer: regularizer of the convolution kernels. Defaults to `None`.
        momentum: float in [0, 1). Batch norm momentum. Defaults to `0.9`.
        epsilon: float > 0. Batch norm epsilon. Defaults to `1e-5`.
        **kwargs: base layer arguments such as `name` and `dtype`.

    Input shape:
        4D tensor `(batch_size, height, width, channels)` with known channels.

    Output shape:
        4D tensor `(batch_size, ceil(height / s_h), ceil(width / s_w), filters)`.

    Raises:
        ValueError: if `filters` is not a positive int, `strides` not a positive int or a
            tuple of 2 positive ints, `momentum` not in [0, 1) or `epsilon` not positive;
            when built, if the number of input channels is unknown.

    Example:

    >>> import numpy as np
    >>> block = ResidualBlock(8, strides=2)
    >>> block(np.random.rand(2, 9, 9, 4).astype("float32")).shape
    TensorShape([2, 5, 5, 8])
    >>> block.count_params()  # 9*4*8 + 9*8*8 + 1x1 projection 4*8 + 3 batch norms of 4*8
    992
    """

    def __init__(
        self,
        filters,
        strides=1,
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
        self.output_channels = self.filters
        self.conv1 = self.conv(self.filters, 3, self.strides, "conv1")
        self.norm1 = self.batch_norm("conv1_bn")
        self.conv2 = self.conv(self.filters, 3, 1, "conv2")
        self.norm2 = self.batch_norm("conv2_bn")

    @property
    def branch(self):
        return [(self.conv1, self.norm1), (self.conv2, self.norm2)]
