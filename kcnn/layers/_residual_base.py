"""Private base class of the ResNet blocks: convolutions, batch norm and the shortcut."""

import math
import numbers

import keras
from keras import ops

from kcnn._validation import check_positive_int, normalize_tuple
from kcnn.analysis import LayerGeometry, register_layer_analyzer

# torchvision's ResNet initialization: He et al. (2015, arXiv:1502.01852) normal with the
# fan-out, not truncated.
DEFAULT_KERNEL_INITIALIZER = {
    "class_name": "VarianceScaling",
    "config": {"scale": 2.0, "mode": "fan_out", "distribution": "untruncated_normal"},
}


class ResidualBase(keras.layers.Layer):
    """Shared by `ResidualBlock` and `BottleneckBlock`: `relu(F(x) + shortcut(x))`.

    Subclasses create their convolutions in `__init__` with `conv` and `batch_norm`, list
    them in `branch` as `(convolution, batch_norm)` pairs in order, and set
    `output_channels`. The shortcut is the identity when shapes allow and otherwise a
    strided 1x1 convolution with batch norm (option B of He et al. 2016), created in `build`
    because it depends on the number of input channels.
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
        super().__init__(**kwargs)
        self.filters = check_positive_int(filters, "filters")
        self.strides = normalize_tuple(strides, 2, "strides")
        if kernel_initializer is None:
            kernel_initializer = DEFAULT_KERNEL_INITIALIZER
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        if not _is_real(momentum) or not 0 <= momentum < 1:
            raise ValueError(
                f"`momentum` must be a float in [0, 1). Received: momentum={momentum!r}"
            )
        if not _is_real(epsilon) or epsilon <= 0:
            raise ValueError(f"`epsilon` must be a positive float. Received: epsilon={epsilon!r}")
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.projection = None
        self.projection_norm = None
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def conv(self, filters, kernel_size, strides=1, name=None):
        """A bias-free convolution with "valid" padding (`call` pads symmetrically)."""
        return keras.layers.Conv2D(
            filters,
            kernel_size,
            strides=strides,
            use_bias=False,
            kernel_initializer=self.kernel_initializer,
            kernel_regularizer=self.kernel_regularizer,
            dtype=self.dtype_policy,
            name=name,
        )

    def batch_norm(self, name=None):
        return keras.layers.BatchNormalization(
            momentum=self.momentum, epsilon=self.epsilon, dtype=self.dtype_policy, name=name
        )

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(
                f"The number of channels of the inputs to `{type(self).__name__}` must be "
                f"known. Received: input_shape={tuple(input_shape)}"
            )
        # Weights depend on the channels only; `call` pads before the "valid" convolutions.
        for convolution, norm in self.branch:
            convolution.build((None, None, None, channels))
            norm.build((None, None, None, convolution.filters))
            channels = convolution.filters
        channels = input_shape[-1]
        if self.strides != (1, 1) or channels != self.output_channels:
            self.projection = self.conv(self.output_channels, 1, self.strides, "projection")
            self.projection_norm = self.batch_norm("projection_bn")
            self.projection.build((None, None, None, channels))
            self.projection_norm.build((None, None, None, self.output_channels))
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: channels})

    def call(self, inputs, training=None):
        x = inputs
        last = len(self.branch) - 1
        for index, (convolution, norm) in enumerate(self.branch):
            # Symmetric padding of k // 2, as torchvision (and the Torch and Caffe models
            # of the paper) do, so that strided outputs sample the same pixels.
            pad_h, pad_w = (size // 2 for size in convolution.kernel_size)
            if pad_h or pad_w:
                x = ops.pad(x, [[0, 0], [pad_h, pad_h], [pad_w, pad_w], [0, 0]])
            x = norm(convolution(x), training=training)
            if index < last:
                x = ops.relu(x)
        shortcut = inputs
        if self.projection is not None:
            shortcut = self.projection_norm(self.projection(inputs), training=training)
        return ops.relu(x + shortcut)

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        spatial = tuple(
            None if size is None else -(-size // stride)
            for size, stride in zip((height, width), self.strides, strict=True)
        )
        return (batch, *spatial, self.output_channels)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "strides": self.strides,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "momentum": self.momentum,
                "epsilon": self.epsilon,
            }
        )
        return config


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _conv_macs(convolution, positions):
    kernel_height, kernel_width, channels_in, channels_out = convolution.kernel.shape
    return positions * kernel_height * kernel_width * channels_in * channels_out


@register_layer_analyzer(ResidualBase)
def _analyze_residual_block(layer, input_shapes, output_shapes):
    """MACs of every convolution at its own resolution; the geometry of the branch.

    The branch's convolutions compose to one window: `k_eff = 1 + sum_l (k_l - 1) *
    (product of the strides before l)` in input pixels, with the block's stride; the 1x1
    projection shortcut sees a smaller window, so the branch sets the receptive field.
    """
    input_hw, output_hw = input_shapes[0][1:3], output_shapes[0][1:3]
    if None in input_hw or None in output_hw:
        raise ValueError(
            f"Cannot count the MACs of layer '{layer.name}': shape {tuple(input_shapes[0])} "
            "has unknown spatial dimensions. Pass `input_shape` to `analyze`, e.g. "
            "input_shape=(224, 224, 3)."
        )
    macs = 0
    hw = tuple(input_hw)
    effective = [1, 1]
    jump = [1, 1]
    for convolution, _ in layer.branch:
        stride = convolution.strides
        macs += _conv_macs(convolution, math.prod(_strided(hw, stride)))
        for axis in range(2):
            effective[axis] += (convolution.kernel_size[axis] - 1) * jump[axis]
            jump[axis] *= stride[axis]
        hw = _strided(hw, stride)
    if layer.projection is not None:
        macs += _conv_macs(layer.projection, math.prod(output_hw))
    return macs, LayerGeometry.sliding(tuple(effective), layer.strides)


def _strided(hw, strides):
    return tuple(-(-size // stride) for size, stride in zip(hw, strides, strict=True))
