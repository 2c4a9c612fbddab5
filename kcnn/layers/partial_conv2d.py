"""`PartialConv2D`: the partial convolution of Liu et al. (2018) for image inpainting."""

from keras import ops

from kcnn._quantization import keep_float
from kcnn._serialization import register
from kcnn.layers._masked_conv2d import MaskedConv2D


@register
class PartialConv2D(MaskedConv2D):
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
        A tuple `(y, new_mask)`: `y` of shape `(batch_size, new_height, new_width,
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
        super().__init__(
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            dilation_rate=dilation_rate,
            multi_channel=multi_channel,
            use_bias=use_bias,
            activation=activation,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            bias_constraint=bias_constraint,
            **kwargs,
        )

    def call(self, inputs):
        x, mask = self.check_inputs(inputs)
        mask = ops.cast(mask, self.compute_dtype)
        products, count = self.masked_window_sums(x, mask)
        # For counts below 1 (soft masks) clip(count, 0, 1) as the gate reproduces the
        # reference's sum(1) / (count + 1e-8) * new_mask**2.
        with keep_float():
            new_mask = ops.clip(count, 0, 1)
        outputs = self.gated_output(products, count, new_mask)
        if self.multi_channel:
            new_mask = ops.tile(new_mask, (1, 1, 1, self.filters))
        return outputs, new_mask

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "strides": self.strides,
                "padding": self.padding,
                "multi_channel": self.multi_channel,
            }
        )
        return config
