"""Private base class of the convolutions that take and return a mask of valid pixels.

`PartialConv2D` (Liu et al. 2018) and `SubmanifoldConv2D` (Graham et al. 2017) share the
weights, the argument checks, the window count `sum(mask)` and the masked convolution
`W * (x . mask)`; they differ in which output positions stay valid and whether the output
is rescaled by the fraction of the window that was valid.
"""

import keras
from keras import layers, ops

from kcnn._quantization import keep_float
from kcnn._validation import (
    check_positive_int,
    check_strides_with_dilation,
    normalize_padding,
    normalize_tuple,
)
from kcnn.analysis import conv_output_size, register_layer_analyzer, sliding_geometry


class MaskedConv2D(layers.Layer):
    """Weights, checks and the masked-convolution arithmetic shared by the mask-aware convs.

    Subclasses implement `call` with `masked_window_sums` and `gated_output`, and add their
    own arguments to `get_config`.
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="same",
        dilation_rate=1,
        multi_channel=False,
        use_bias=True,
        activation=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = check_positive_int(filters, "filters")
        self.kernel_size = normalize_tuple(kernel_size, 2, "kernel_size")
        self.strides = normalize_tuple(strides, 2, "strides")
        self.padding = normalize_padding(padding)
        self.dilation_rate = normalize_tuple(dilation_rate, 2, "dilation_rate")
        check_strides_with_dilation(self.strides, self.dilation_rate)
        self.multi_channel = bool(multi_channel)
        self.use_bias = bool(use_bias)
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)

    def build(self, input_shape):
        x_shape, _ = self._check_input_shapes(input_shape)
        channels = x_shape[-1]
        if channels is None:
            raise ValueError(
                f"The number of channels of `x` must be known to build `{type(self).__name__}`. "
                f"Received: x.shape={x_shape}"
            )
        self.kernel = self.add_weight(
            name="kernel",
            shape=(*self.kernel_size, channels, self.filters),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.filters,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        else:
            self.bias = None
        # sum(1) of Liu et al.: the number of mask entries in a full window.
        mask_channels = channels if self.multi_channel else 1
        self._full_window_size = self.kernel_size[0] * self.kernel_size[1] * mask_channels

    def masked_window_sums(self, x, mask):
        """Returns `(W * (x . mask), sum(mask) over each window)` for a mask in compute dtype.

        No gradient flows through the count: it depends on the mask only.
        """
        # A multi-channel window count is the single-channel count of the channel sum: one
        # (k_h, k_w, 1, 1) convolution instead of a (k_h, k_w, C_in, filters) one. The sum
        # is a 1x1 convolution with ones rather than a reduce-sum: TFLite's 16x8 quantization
        # gives a SUM its input's scale (at most 1 here), a convolution its own. The count
        # runs from 0 to k_h * k_w * C: an int8 export keeps it in float.
        with keep_float():
            mask_per_pixel = ops.stop_gradient(mask)
            if self.multi_channel and mask.shape[-1] > 1:
                ones = ops.ones((1, 1, mask.shape[-1], 1), dtype=self.compute_dtype)
                mask_per_pixel = ops.conv(mask_per_pixel, ones, data_format="channels_last")
            count = ops.conv(
                mask_per_pixel,
                ops.ones((*self.kernel_size, 1, 1), dtype=self.compute_dtype),
                strides=self.strides,
                padding=self.padding,
                data_format="channels_last",
                dilation_rate=self.dilation_rate,
            )
        products = ops.conv(
            x * mask,
            self.kernel,
            strides=self.strides,
            padding=self.padding,
            data_format="channels_last",
            dilation_rate=self.dilation_rate,
        )
        return products, count

    def gated_output(self, products, count, gate, renormalize=True):
        """`activation((products * sum(1) / count + b) * gate)`, or without the ratio.

        Dividing by max(count, 1) instead of count + 1e-8 keeps float16 finite, and the
        product with `gate` (0 where the output is not valid) zeroes the bias there too.
        """
        # The ratio sum(1) / count and the gating stay float in an int8 export.
        with keep_float():
            if renormalize:
                products = products * (self._full_window_size / ops.maximum(count, 1))
            outputs = products * gate
            if self.bias is not None:
                outputs = outputs + self.bias * gate
        return self.activation(outputs)

    def compute_output_shape(self, input_shape):
        x_shape, _ = self._check_input_shapes(input_shape)
        batch, height, width = x_shape[:3]
        spatial = tuple(
            conv_output_size(size, kernel, stride, self.padding, dilation)
            for size, kernel, stride, dilation in zip(
                (height, width), self.kernel_size, self.strides, self.dilation_rate, strict=True
            )
        )
        mask_channels = self.filters if self.multi_channel else 1
        return (batch, *spatial, self.filters), (batch, *spatial, mask_channels)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "dilation_rate": self.dilation_rate,
                "use_bias": self.use_bias,
                "activation": keras.activations.serialize(self.activation),
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
                "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
                "bias_constraint": keras.constraints.serialize(self.bias_constraint),
            }
        )
        return config

    def check_inputs(self, inputs):
        """Returns `(x, mask)` after checking the call inputs against the built layer."""
        if not isinstance(inputs, list | tuple) or len(inputs) != 2:
            raise ValueError(self._not_a_pair_message(inputs))
        x, mask = inputs
        self._check_input_shapes([tuple(x.shape), tuple(mask.shape)])
        expected_channels = self.kernel.shape[2]
        if x.shape[-1] is not None and x.shape[-1] != expected_channels:
            raise ValueError(
                f"`x` must have {expected_channels} channels, as when the layer was built. "
                f"Received: x.shape={tuple(x.shape)}"
            )
        return x, mask

    def _check_input_shapes(self, input_shape):
        """Returns `(x_shape, mask_shape)` as tuples after checking that they fit together."""
        if _is_single_shape(input_shape) or len(input_shape) != 2:
            raise ValueError(self._not_a_pair_message(input_shape))
        x_shape, mask_shape = (tuple(shape) for shape in input_shape)
        if len(x_shape) != 4:
            raise ValueError(
                "`x` must be a 4D tensor (batch, height, width, channels). "
                f"Received: x.shape={x_shape}"
            )
        if len(mask_shape) != 4:
            raise ValueError(
                "`mask` must be a 4D tensor (batch, height, width, channels). "
                f"Received: mask.shape={mask_shape}"
            )
        for x_size, mask_size in zip(x_shape[1:3], mask_shape[1:3], strict=True):
            if x_size is not None and mask_size is not None and x_size != mask_size:
                raise ValueError(
                    "`mask` must have the spatial size of `x`. "
                    f"Received: x.shape={x_shape}, mask.shape={mask_shape}"
                )
        channels, mask_channels = x_shape[-1], mask_shape[-1]
        if not self.multi_channel and mask_channels not in (1, None):
            raise ValueError(
                "`mask` must have 1 channel when `multi_channel=False`. "
                f"Received: mask.shape={mask_shape}"
            )
        if (
            self.multi_channel
            and None not in (channels, mask_channels)
            and mask_channels != channels
        ):
            raise ValueError(
                "`mask` must have as many channels as `x` when `multi_channel=True`. "
                f"Received: x.shape={x_shape}, mask.shape={mask_shape}"
            )
        return x_shape, mask_shape

    def _not_a_pair_message(self, inputs):
        """Describes `inputs` (tensors, or their shapes when called from `build`) briefly."""
        if isinstance(inputs, list | tuple) and not _is_single_shape(inputs):
            received = f"inputs=a {type(inputs).__name__} of {len(inputs)} tensors"
        else:
            shape = tuple(getattr(inputs, "shape", inputs))
            received = f"a single input of shape {shape}"
        return (
            f"`{type(self).__name__}` must be called on a list of two tensors `[x, mask]`. "
            f"Received: {received}"
        )


def _is_single_shape(value):
    """Whether `value`, a shape or a list of shapes as `build` receives, is a single shape."""
    return not isinstance(value, list | tuple) or all(
        dim is None or isinstance(dim, int) for dim in value
    )


@register_layer_analyzer(MaskedConv2D)
def _analyze_masked_conv2d(layer, input_shapes, output_shapes):
    """MACs of the main convolution; the mask count multiplies by ones, not by weights."""
    channels_in = input_shapes[0][-1]
    height, width, filters = output_shapes[0][1:]
    if height is None or width is None:
        raise ValueError(
            f"Cannot count the MACs of layer '{layer.name}': shape {tuple(output_shapes[0])} "
            "has unknown spatial dimensions. Pass `input_shape` to `analyze`, e.g. "
            "input_shape=(224, 224, 3)."
        )
    kernel_height, kernel_width = layer.kernel_size
    return (
        height * width * kernel_height * kernel_width * channels_in * filters,
        sliding_geometry(layer, input_shapes, output_shapes),
    )
