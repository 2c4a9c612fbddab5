"""`PartialConv2D`: the partial convolution of Liu et al. (2018) for image inpainting."""

import keras
from keras import layers, ops

from kcnn._serialization import register
from kcnn.analysis import LayerGeometry, conv_output_size, register_layer_analyzer
from kcnn.layers._conv_utils import (
    check_positive_int,
    check_strides_with_dilation,
    normalize_padding,
    normalize_tuple,
)


@register
class PartialConv2D(layers.Layer):
    """2D convolution conditioned on a mask of valid pixels, returning the updated mask.

    Implements the partial convolution of Liu, Reda, Shih, Wang, Tao & Catanzaro, "Image
    Inpainting for Irregular Holes Using Partial Convolutions", 2018 (arXiv:1804.07723),
    with the conventions of NVIDIA's reference implementation (`PartialConv2d` in
    github.com/NVIDIA/partialconv, `models/partialconv2d.py`). Called on `[x, mask]`,
    where `mask` is 1 at valid pixels and 0 in holes, it returns `[y, new_mask]`:

        count    = sum(mask) over each window (a convolution with a ones kernel)
        y        = (W * (x . mask)) * sum(1) / count + b   where count > 0
                 = 0                                       where count = 0
        new_mask = 1 where count > 0, else 0

    `sum(1)` is the number of entries of a full window: `k_h * k_w` for a single-channel
    mask and `k_h * k_w * C_in` for a multi-channel one. The bias is masked too, so a
    window without a single valid pixel outputs exactly 0. Zero padding counts as hole:
    with `"same"` padding the windows that overlap the border are rescaled by a ratio
    above 1, as in the reference. Each 3x3 stride-1 layer shrinks every hole by one pixel
    per side, so stacked layers fill holes progressively.

    For masks with values between 0 and 1 the layer follows the reference exactly:
    `new_mask = clip(count, 0, 1)` and
    `y = W * (x . mask) * sum(1) / max(count, 1) * new_mask + b * new_mask`, which for
    binary masks is the formula above. Gradients flow through `x . mask` as usual, but
    not through `count`, the ratio or `new_mask` (the reference computes them under
    `torch.no_grad()`).

    `activation` is not part of the reference layer: when given it is applied to the
    masked output `y`, so holes hold `activation(0)` (0 for `"relu"`). `new_mask` is not
    activated. Padding follows the Keras convention: when `"same"` needs an odd number of
    zeros (an even kernel, or a stride of 2 on an even size) the extra row or column goes
    at the bottom or right, as in TensorFlow; a PyTorch model built with `padding=k // 2`
    pads both sides equally and differs there.

    Args:
        filters: int. Number of output channels.
        kernel_size: int or tuple of 2 ints. Height and width of the kernel.
        strides: int or tuple of 2 ints. Defaults to `1`.
        padding: str. `"valid"` or `"same"` (case-insensitive). Defaults to `"same"`.
        dilation_rate: int or tuple of 2 ints. Cannot exceed 1 when a stride does.
            Defaults to `1`.
        multi_channel: bool. `False` for a mask of shape `(batch, height, width, 1)`
            shared by all input channels; `True` for a mask with one channel per input
            channel, `(batch, height, width, channels)`. Defaults to `False`.
        use_bias: bool. Whether to add a bias (masked like the rest of `y`). Defaults to
            `True`.
        activation: str, callable or None. Applied to `y` after masking; `None` means
            linear, as in the reference. Defaults to `None`.
        kernel_initializer: initializer for the kernel. Defaults to `"glorot_uniform"`.
        bias_initializer: initializer for the bias. Defaults to `"zeros"`.
        kernel_regularizer: regularizer for the kernel. Defaults to `None`.
        bias_regularizer: regularizer for the bias. Defaults to `None`.
        kernel_constraint: constraint for the kernel. Defaults to `None`.
        bias_constraint: constraint for the bias. Defaults to `None`.
        **kwargs: base layer arguments such as `name` and `dtype`.

    Input shape:
        A list `[x, mask]`: `x` of shape `(batch_size, height, width, channels)` and
        `mask` of shape `(batch_size, height, width, 1)`, or
        `(batch_size, height, width, channels)` with `multi_channel=True`. The mask may
        have any numeric or boolean dtype; it is cast to the layer's compute dtype.

    Output shape:
        A list `[y, new_mask]`: `y` of shape `(batch_size, new_height, new_width,
        filters)` and `new_mask` of shape `(batch_size, new_height, new_width, 1)`, or
        `(batch_size, new_height, new_width, filters)` (all channels equal) with
        `multi_channel=True`. The spatial size is `ceil(size / strides)` with `"same"`
        padding and `floor((size - dilation_rate * (kernel_size - 1) - 1) / strides) + 1`
        with `"valid"`.

    Raises:
        ValueError: if `filters` is not a positive int, if `kernel_size`, `strides` or
            `dilation_rate` is not a positive int or a tuple of 2 positive ints, if a
            stride and a dilation rate both exceed 1, or if `padding` is not `"valid"` or
            `"same"`. When called: if the input is not a list `[x, mask]`, if `x` or
            `mask` is not 4D, if their spatial sizes differ, or if the number of mask
            channels does not fit `multi_channel`.

    Example:

    >>> import numpy as np
    >>> x = np.random.rand(1, 8, 8, 3).astype("float32")
    >>> mask = np.ones((1, 8, 8, 1), "float32")
    >>> mask[:, 2:6, 2:6] = 0.0
    >>> y, new_mask = PartialConv2D(16, 3)([x, mask])
    >>> y.shape, new_mask.shape
    (TensorShape([1, 8, 8, 16]), TensorShape([1, 8, 8, 1]))
    >>> int(new_mask.numpy().sum())  # the 4x4 hole shrinks to 2x2
    60
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
                "The number of channels of `x` must be known to build `PartialConv2D`. "
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
        # sum(1) of the paper: the number of mask entries in a full window.
        mask_channels = channels if self.multi_channel else 1
        self._full_window_size = self.kernel_size[0] * self.kernel_size[1] * mask_channels

    def call(self, inputs):
        x, mask = self._check_inputs(inputs)
        mask = ops.cast(mask, self.compute_dtype)
        # A multi-channel window count is the single-channel count of the channel sum:
        # one (k_h, k_w, 1, 1) convolution instead of a (k_h, k_w, C_in, filters) one.
        mask_per_pixel = ops.sum(mask, axis=-1, keepdims=True) if self.multi_channel else mask
        count = ops.conv(
            ops.stop_gradient(mask_per_pixel),
            ops.ones((*self.kernel_size, 1, 1), dtype=self.compute_dtype),
            strides=self.strides,
            padding=self.padding,
            data_format="channels_last",
            dilation_rate=self.dilation_rate,
        )
        new_mask = ops.clip(count, 0, 1)
        # Dividing by max(count, 1) instead of count + 1e-8 keeps float16 finite, and the
        # product with new_mask zeroes the windows without a valid pixel. For counts below
        # 1 (soft masks) this equals the reference's sum(1) / (count + 1e-8) * new_mask**2.
        scale = self._full_window_size / ops.maximum(count, 1) * new_mask
        outputs = ops.conv(
            x * mask,
            self.kernel,
            strides=self.strides,
            padding=self.padding,
            data_format="channels_last",
            dilation_rate=self.dilation_rate,
        )
        outputs = outputs * scale
        if self.bias is not None:
            outputs = outputs + self.bias * new_mask
        outputs = self.activation(outputs)
        if self.multi_channel:
            new_mask = ops.tile(new_mask, (1, 1, 1, self.filters))
        return [outputs, new_mask]

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
        return [(batch, *spatial, self.filters), (batch, *spatial, mask_channels)]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "padding": self.padding,
                "dilation_rate": self.dilation_rate,
                "multi_channel": self.multi_channel,
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

    def _check_inputs(self, inputs):
        if not isinstance(inputs, list | tuple) or len(inputs) != 2:
            raise ValueError(_not_a_pair_message(inputs))
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
            raise ValueError(_not_a_pair_message(input_shape))
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


def _is_single_shape(value):
    """Whether `value`, a shape or a list of shapes as `build` receives, is a single shape."""
    return not isinstance(value, list | tuple) or all(
        dim is None or isinstance(dim, int) for dim in value
    )


def _not_a_pair_message(inputs):
    """Describes `inputs` (tensors, or their shapes when called from `build`) briefly."""
    if isinstance(inputs, list | tuple) and not _is_single_shape(inputs):
        received = f"inputs=a {type(inputs).__name__} of {len(inputs)} tensors"
    else:
        shape = tuple(getattr(inputs, "shape", inputs))
        received = f"a single input of shape {shape}"
    return (
        f"`PartialConv2D` must be called on a list of two tensors `[x, mask]`. Received: {received}"
    )


@register_layer_analyzer(PartialConv2D)
def _analyze_partial_conv2d(layer, input_shapes, output_shapes):
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
        LayerGeometry.sliding(layer.kernel_size, layer.strides, layer.dilation_rate),
    )
