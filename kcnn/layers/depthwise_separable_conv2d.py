"""`DepthwiseSeparableConv2D`: the MobileNet depthwise separable convolution block."""

import keras
from keras import layers

from kcnn._serialization import register
from kcnn._validation import (
    check_positive_int,
    check_strides_with_dilation,
    normalize_padding,
    normalize_tuple,
)
from kcnn.analysis import conv_output_size, register_layer_analyzer, sliding_geometry

_NORMALIZATIONS = ("batch", None)


@register
class DepthwiseSeparableConv2D(layers.Layer):
    """Depthwise convolution, then 1x1 pointwise convolution, each optionally normalized.

    The depthwise separable convolution block of MobileNets (Howard, Zhu, Chen,
    Kalenichenko, Wang, Weyand, Andreetto & Adam, "MobileNets: Efficient Convolutional
    Neural Networks for Mobile Vision Applications", 2017, arXiv:1704.04861, Figure 3):

        x -> DepthwiseConv2D(kernel_size, strides, dilation_rate, depth_multiplier)
          -> [BatchNormalization] -> activation
          -> Conv2D(filters, 1) -> [BatchNormalization] -> activation

    It has `k_h * k_w * C_in * m + C_in * m * filters` weights (`m` = `depth_multiplier`)
    instead of the `k_h * k_w * C_in * filters` of a full convolution, and as many
    multiply-accumulates per output position. With `normalization=None` and
    `activation=None` the block is the bare factorisation, which computes the same
    function as `keras.layers.SeparableConv2D`.

    With `normalization="batch"` the two convolutions have no bias whatever `use_bias`
    says: the beta of each batch normalization adds the same per-channel offset, so a bias
    would be a redundant weight. With `normalization=None` and `use_bias=True` each
    convolution adds its own bias before its activation.

    Args:
        filters: int. Number of output channels of the pointwise convolution.
        kernel_size: int or tuple of 2 ints. Height and width of the depthwise kernel.
        strides: int or tuple of 2 ints. Strides of the depthwise convolution. Defaults
            to `1`.
        padding: str. `"valid"` or `"same"` (case-insensitive), for the depthwise
            convolution. Defaults to `"same"`.
        depth_multiplier: int. Number of depthwise output channels per input channel.
            Defaults to `1`.
        dilation_rate: int or tuple of 2 ints. Dilation of the depthwise kernel; cannot
            exceed 1 when a stride does. Defaults to `1`.
        use_bias: bool. Whether the convolutions add a bias when `normalization` is
            `None`; ignored with `normalization="batch"`. Defaults to `True`.
        normalization: str or None. `"batch"` for a `BatchNormalization` after each
            convolution, or `None` for none. Defaults to `"batch"`.
        activation: str, callable or None. Activation applied after each of the two
            stages (after the normalization, if any). `None` means linear. Defaults to
            `"relu"`.
        depthwise_initializer: initializer for the depthwise kernel. Defaults to
            `"glorot_uniform"`.
        pointwise_initializer: initializer for the pointwise kernel. Defaults to
            `"glorot_uniform"`.
        bias_initializer: initializer for both biases. Defaults to `"zeros"`.
        depthwise_regularizer: regularizer for the depthwise kernel. Defaults to `None`.
        pointwise_regularizer: regularizer for the pointwise kernel. Defaults to `None`.
        bias_regularizer: regularizer for both biases. Defaults to `None`.
        depthwise_constraint: constraint for the depthwise kernel. Defaults to `None`.
        pointwise_constraint: constraint for the pointwise kernel. Defaults to `None`.
        bias_constraint: constraint for both biases. Defaults to `None`.
        batch_norm_momentum: float. Momentum of the moving statistics of both batch
            normalizations. Defaults to `0.99`.
        batch_norm_epsilon: float. Epsilon of both batch normalizations. Defaults to
            `1e-3`.
        **kwargs: base layer arguments such as `name` and `dtype`.

    Input shape:
        4D tensor `(batch_size, height, width, channels)` (channels last).

    Output shape:
        4D tensor `(batch_size, new_height, new_width, filters)`, where the spatial size
        follows the depthwise convolution: `ceil(size / strides)` with `"same"` padding,
        `floor((size - dilation_rate * (kernel_size - 1) - 1) / strides) + 1` with
        `"valid"`.

    Raises:
        ValueError: if `filters` or `depth_multiplier` is not a positive int, if
            `kernel_size`, `strides` or `dilation_rate` is not a positive int or a tuple
            of 2 positive ints, if a stride and a dilation rate both exceed 1, if
            `padding` is not `"valid"` or `"same"`, if `normalization` is not `"batch"`
            or `None`, or, when the layer is built, if the input is not 4D with a known
            number of channels.

    Example:

    >>> import numpy as np
    >>> x = np.random.rand(2, 16, 16, 8).astype("float32")
    >>> block = DepthwiseSeparableConv2D(32, 3, strides=2)
    >>> block(x).shape
    TensorShape([2, 8, 8, 32])
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="same",
        depth_multiplier=1,
        dilation_rate=1,
        use_bias=True,
        normalization="batch",
        activation="relu",
        depthwise_initializer="glorot_uniform",
        pointwise_initializer="glorot_uniform",
        bias_initializer="zeros",
        depthwise_regularizer=None,
        pointwise_regularizer=None,
        bias_regularizer=None,
        depthwise_constraint=None,
        pointwise_constraint=None,
        bias_constraint=None,
        batch_norm_momentum=0.99,
        batch_norm_epsilon=1e-3,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = check_positive_int(filters, "filters")
        self.kernel_size = normalize_tuple(kernel_size, 2, "kernel_size")
        self.strides = normalize_tuple(strides, 2, "strides")
        self.padding = normalize_padding(padding)
        self.depth_multiplier = check_positive_int(depth_multiplier, "depth_multiplier")
        self.dilation_rate = normalize_tuple(dilation_rate, 2, "dilation_rate")
        check_strides_with_dilation(self.strides, self.dilation_rate)
        if normalization not in _NORMALIZATIONS:
            raise ValueError(
                '`normalization` must be "batch" or None. '
                f"Received: normalization={normalization!r}"
            )
        self.use_bias = bool(use_bias)
        self.normalization = normalization
        self.activation = keras.activations.get(activation)
        self.depthwise_initializer = keras.initializers.get(depthwise_initializer)
        self.pointwise_initializer = keras.initializers.get(pointwise_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.depthwise_regularizer = keras.regularizers.get(depthwise_regularizer)
        self.pointwise_regularizer = keras.regularizers.get(pointwise_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.depthwise_constraint = keras.constraints.get(depthwise_constraint)
        self.pointwise_constraint = keras.constraints.get(pointwise_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.batch_norm_momentum = batch_norm_momentum
        self.batch_norm_epsilon = batch_norm_epsilon

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(
                "`DepthwiseSeparableConv2D` expects a 4D input (batch, height, width, "
                f"channels) with a known number of channels. Received: input_shape={input_shape}"
            )
        # Batch normalization's beta plays the role of the bias.
        conv_bias = self.use_bias and self.normalization is None
        self.depthwise = layers.DepthwiseConv2D(
            self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            depth_multiplier=self.depth_multiplier,
            data_format="channels_last",
            dilation_rate=self.dilation_rate,
            use_bias=conv_bias,
            depthwise_initializer=self.depthwise_initializer,
            bias_initializer=self.bias_initializer,
            depthwise_regularizer=self.depthwise_regularizer,
            bias_regularizer=self.bias_regularizer,
            depthwise_constraint=self.depthwise_constraint,
            bias_constraint=self.bias_constraint,
            dtype=self.dtype_policy,
            name="depthwise",
        )
        self.pointwise = layers.Conv2D(
            self.filters,
            1,
            data_format="channels_last",
            use_bias=conv_bias,
            kernel_initializer=self.pointwise_initializer,
            bias_initializer=self.bias_initializer,
            kernel_regularizer=self.pointwise_regularizer,
            bias_regularizer=self.bias_regularizer,
            kernel_constraint=self.pointwise_constraint,
            bias_constraint=self.bias_constraint,
            dtype=self.dtype_policy,
            name="pointwise",
        )
        self.depthwise.build(input_shape)
        depthwise_shape = self.depthwise.compute_output_shape(input_shape)
        self.pointwise.build(depthwise_shape)
        if self.normalization == "batch":
            self.depthwise_norm = self._batch_normalization("depthwise_norm")
            self.pointwise_norm = self._batch_normalization("pointwise_norm")
            self.depthwise_norm.build(depthwise_shape)
            self.pointwise_norm.build(self.pointwise.compute_output_shape(depthwise_shape))
        else:
            self.depthwise_norm = None
            self.pointwise_norm = None

    def _batch_normalization(self, name):
        return layers.BatchNormalization(
            axis=-1,
            momentum=self.batch_norm_momentum,
            epsilon=self.batch_norm_epsilon,
            dtype=self.dtype_policy,
            name=name,
        )

    def call(self, inputs, training=None):
        x = self.depthwise(inputs)
        if self.depthwise_norm is not None:
            x = self.depthwise_norm(x, training=training)
        x = self.activation(x)
        x = self.pointwise(x)
        if self.pointwise_norm is not None:
            x = self.pointwise_norm(x, training=training)
        return self.activation(x)

    def compute_output_shape(self, input_shape):
        batch, height, width = tuple(input_shape)[:3]
        spatial = [
            conv_output_size(size, kernel, stride, self.padding, dilation)
            for size, kernel, stride, dilation in zip(
                (height, width), self.kernel_size, self.strides, self.dilation_rate, strict=True
            )
        ]
        return (batch, *spatial, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "padding": self.padding,
                "depth_multiplier": self.depth_multiplier,
                "dilation_rate": self.dilation_rate,
                "use_bias": self.use_bias,
                "normalization": self.normalization,
                "activation": keras.activations.serialize(self.activation),
                "depthwise_initializer": keras.initializers.serialize(self.depthwise_initializer),
                "pointwise_initializer": keras.initializers.serialize(self.pointwise_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "depthwise_regularizer": keras.regularizers.serialize(self.depthwise_regularizer),
                "pointwise_regularizer": keras.regularizers.serialize(self.pointwise_regularizer),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
                "depthwise_constraint": keras.constraints.serialize(self.depthwise_constraint),
                "pointwise_constraint": keras.constraints.serialize(self.pointwise_constraint),
                "bias_constraint": keras.constraints.serialize(self.bias_constraint),
                "batch_norm_momentum": self.batch_norm_momentum,
                "batch_norm_epsilon": self.batch_norm_epsilon,
            }
        )
        return config


@register_layer_analyzer(DepthwiseSeparableConv2D)
def _analyze_depthwise_separable_conv2d(layer, input_shapes, output_shapes):
    """MACs of both convolutions; the 1x1 pointwise stage leaves the receptive field as is."""
    channels_in = input_shapes[0][-1]
    height, width, filters = output_shapes[0][1:]
    if height is None or width is None:
        raise ValueError(
            f"Cannot count the MACs of layer '{layer.name}': shape {tuple(output_shapes[0])} "
            "has unknown spatial dimensions. Pass `input_shape` to `analyze`, e.g. "
            "input_shape=(224, 224, 3)."
        )
    depthwise_channels = channels_in * layer.depth_multiplier
    kernel_height, kernel_width = layer.kernel_size
    per_position = kernel_height * kernel_width * depthwise_channels + depthwise_channels * filters
    return (
        height * width * per_position,
        sliding_geometry(layer, input_shapes, output_shapes),
    )
