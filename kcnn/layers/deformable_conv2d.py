"""`DeformableConv2D`: deformable convolution v1 (Dai et al. 2017) and v2 (Zhu et al. 2019)."""

import keras
from keras import layers, ops

from kcnn._serialization import register
from kcnn._validation import check_positive_int, normalize_tuple
from kcnn.analysis import LayerGeometry, register_layer_analyzer
from kcnn.ops.deform_conv import deform_conv2d, deform_output_size, normalize_deform_padding


@register
class DeformableConv2D(layers.Layer):
    """2D convolution whose kernel taps sample the input at learned fractional offsets.

    Implements deformable convolution, Dai, Qi, Xiong, Li, Zhang, Hu & Wei, "Deformable
    Convolutional Networks", ICCV 2017 (arXiv:1703.06211), and its modulated version,
    Zhu, Hu, Lin & Dai, "Deformable ConvNets v2: More Deformable, Better Results", CVPR
    2019 (arXiv:1811.11168):

        y(p0) = sum_k w_k . x(p0 * s - pad + p_k * d + dp_k) . dm_k + b

    where x at a fractional position is bilinearly interpolated (0 outside the input),
    dp_k is the learned offset of tap k and dm_k in [0, 1] its modulation (v2 only).

    Called on `x`, the layer predicts the offsets (and, with `modulated=True`, the mask
    through a sigmoid) with its own convolution of the same kernel size, strides, padding
    and dilation, whose weights start at zero as in both papers: the layer starts as a
    regular convolution (times 0.5 when modulated, since sigmoid(0) = 0.5, as in the DCNv2
    reference). Called on `[x, offsets]` (v1) or `[x, offsets, mask]` (v2), it uses the
    given offsets and mask and has no predictor of its own.

    Offset layout, as `torchvision.ops.deform_conv2d` with the channels last: `offsets` has
    `2 * offset_groups * kh * kw` channels; for offset group g and tap k = i * kw + j,
    channel `2 * (g * kh * kw + k)` is dy and the next one dx, and the mask channel is
    `g * kh * kw + k`. For a 3x3 kernel and one group:

        taps k:   0 1 2      offsets channels:  [dy0, dx0, dy1, dx1, ..., dy8, dx8]
                  3 4 5      mask channels:     [m0, m1, ..., m8]
                  6 7 8

    Input channel c belongs to offset group `c // (channels / offset_groups)`. A kernel,
    offsets and mask from torchvision port by transposing OIHW -> HWIO and NCHW -> NHWC
    (`padding=p` there is `padding=p` here). See `kcnn.ops.deform_conv2d` for the kernel.

    Args:
        filters: int. Number of output channels.
        kernel_size: int or tuple of 2 ints. Height and width of the kernel.
        strides: int or tuple of 2 ints. Defaults to `1`.
        padding: `"valid"`, `"same"` (TensorFlow's rule: any odd extra row or column goes
            at the bottom or right), or an int or tuple `(pad_h, pad_w)` of zeros on both
            sides, as torchvision's `padding`. Defaults to `"same"`.
        dilation_rate: int or tuple of 2 ints. Strides and dilation may both exceed 1.
            Defaults to `1`.
        offset_groups: int. Number of channel groups with their own offsets; must divide
            the input channels. Defaults to `1`.
        modulated: bool. Whether the built-in predictor also predicts the DCNv2 mask.
            Ignored when offsets are given. Defaults to `True`.
        use_bias: bool. Defaults to `True`.
        activation: str, callable or None. Defaults to `None`.
        kernel_initializer: initializer of the convolution kernel. Defaults to
            `"glorot_uniform"`.
        bias_initializer: initializer of the bias. Defaults to `"zeros"`.
        offset_initializer: initializer of the offset/mask predictor's kernel and bias.
            Defaults to `"zeros"`, as in the papers.
        kernel_regularizer: regularizer of the kernel. Defaults to `None`.
        bias_regularizer: regularizer of the bias. Defaults to `None`.
        kernel_constraint: constraint of the kernel. Defaults to `None`.
        bias_constraint: constraint of the bias. Defaults to `None`.
        jit_compile: None or bool. Whether the sampling kernel runs XLA-compiled (see
            `kcnn.ops.deform_conv2d`); None, the default, compiles, which measured faster.
        **kwargs: base layer arguments such as `name` and `dtype`.

    Input shape:
        `x` of shape `(batch, height, width, channels)`, or a list `[x, offsets]` or
        `[x, offsets, mask]` with `offsets` of shape
        `(batch, new_height, new_width, 2 * offset_groups * kh * kw)` and `mask` of shape
        `(batch, new_height, new_width, offset_groups * kh * kw)`.

    Output shape:
        `(batch, new_height, new_width, filters)`: `ceil(size / strides)` with `"same"`,
        `floor((size + 2 * pad - dilation * (kernel - 1) - 1) / strides) + 1` otherwise.

    Raises:
        ValueError: for a bad argument (named, with the value received), an input of the
            wrong rank, a channel count that `offset_groups` does not divide, offsets or a
            mask whose shape does not fit, or a call with a different number of inputs
            than the layer was built with.

    Example:
    >>> import numpy as np
    >>> layer = DeformableConv2D(8, 3)
    >>> layer(np.zeros((2, 16, 16, 4), "float32")).shape
    TensorShape([2, 16, 16, 8])
    >>> offsets = np.zeros((2, 8, 8, 18), "float32")
    >>> DeformableConv2D(8, 3, strides=2)([np.zeros((2, 16, 16, 4)), offsets]).shape
    TensorShape([2, 8, 8, 8])
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="same",
        dilation_rate=1,
        offset_groups=1,
        modulated=True,
        use_bias=True,
        activation=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        offset_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        jit_compile=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = check_positive_int(filters, "filters")
        self.kernel_size = normalize_tuple(kernel_size, 2, "kernel_size")
        self.strides = normalize_tuple(strides, 2, "strides")
        self.padding = normalize_deform_padding(padding)
        self.dilation_rate = normalize_tuple(dilation_rate, 2, "dilation_rate")
        self.offset_groups = check_positive_int(offset_groups, "offset_groups")
        self.modulated = bool(modulated)
        self.use_bias = bool(use_bias)
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.offset_initializer = keras.initializers.get(offset_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        if jit_compile is not None and not isinstance(jit_compile, bool):
            raise ValueError(
                f"`jit_compile` must be None or a bool. Received: jit_compile={jit_compile!r}"
            )
        self.jit_compile = jit_compile
        self._taps = self.kernel_size[0] * self.kernel_size[1]

    def build(self, input_shape):
        shapes = self._split_shapes(input_shape)
        channels = shapes[0][-1]
        if channels is None:
            raise ValueError(
                "The number of channels of `x` must be known to build `DeformableConv2D`. "
                f"Received: x.shape={shapes[0]}"
            )
        if channels % self.offset_groups:
            raise ValueError(
                f"`offset_groups` must divide the input channels ({channels}). "
                f"Received: offset_groups={self.offset_groups}"
            )
        self._external = len(shapes) > 1
        self._check_shapes(shapes)
        self.kernel = self.add_weight(
            name="kernel",
            shape=(*self.kernel_size, channels, self.filters),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.filters,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        self.offset_kernel = self.offset_bias = None
        if not self._external:
            predicted = (3 if self.modulated else 2) * self.offset_groups * self._taps
            self.offset_kernel = self.add_weight(
                name="offset_kernel",
                shape=(*self.kernel_size, channels, predicted),
                initializer=self.offset_initializer,
            )
            self.offset_bias = self.add_weight(
                name="offset_bias", shape=(predicted,), initializer=self.offset_initializer
            )

    def call(self, inputs):
        tensors = list(inputs) if isinstance(inputs, list | tuple) else [inputs]
        if (len(tensors) > 1) != self._external:
            raise ValueError(
                "`DeformableConv2D` was built "
                + ("on [x, offsets(, mask)]" if self._external else "on `x` alone")
                + f" and must be called the same way. Received: {len(tensors)} input(s)"
            )
        self._check_shapes([tuple(t.shape) for t in tensors])
        x = tensors[0]
        if self._external:
            offsets = tensors[1]
            mask = tensors[2] if len(tensors) == 3 else None
        else:
            offsets, mask = self._predict_offsets(x)
        outputs = deform_conv2d(
            x,
            offsets,
            self.kernel,
            self.bias,
            mask=None if mask is None else ops.cast(mask, x.dtype),
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            jit_compile=self.jit_compile,
        )
        return self.activation(outputs)

    def _predict_offsets(self, x):
        """The built-in offset (and mask) predictor: a plain convolution on `x`."""
        padding = self.padding
        if not isinstance(padding, str):
            (top, bottom), (left, right) = padding
            x = ops.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]])
            padding = "valid"
        raw = (
            ops.conv(
                x,
                self.offset_kernel,
                strides=self.strides,
                padding=padding,
                dilation_rate=self.dilation_rate,
            )
            + self.offset_bias
        )
        split = 2 * self.offset_groups * self._taps
        offsets = raw[..., :split]
        mask = ops.sigmoid(raw[..., split:]) if self.modulated else None
        return offsets, mask

    def compute_output_shape(self, input_shape):
        shapes = self._split_shapes(input_shape)
        batch, height, width = shapes[0][:3]
        return (batch, *self._output_spatial(height, width), self.filters)

    def get_config(self):
        config = super().get_config()
        padding = self.padding
        if not isinstance(padding, str):
            padding = (padding[0][0], padding[1][0])
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "padding": padding,
                "dilation_rate": self.dilation_rate,
                "offset_groups": self.offset_groups,
                "modulated": self.modulated,
                "use_bias": self.use_bias,
                "activation": keras.activations.serialize(self.activation),
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "offset_initializer": keras.initializers.serialize(self.offset_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
                "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
                "bias_constraint": keras.constraints.serialize(self.bias_constraint),
                "jit_compile": self.jit_compile,
            }
        )
        return config

    def _output_spatial(self, height, width):
        sizes = []
        for axis, size in enumerate((height, width)):
            if size is None:
                sizes.append(None)
                continue
            kernel, stride = self.kernel_size[axis], self.strides[axis]
            dilation = self.dilation_rate[axis]
            if self.padding == "same":
                sizes.append(-(-size // stride))
                continue
            total = 0 if self.padding == "valid" else sum(self.padding[axis])
            out = deform_output_size(size, kernel, stride, total, dilation)
            if out < 1:
                raise ValueError(
                    f"The dilated kernel {kernel + (kernel - 1) * (dilation - 1)} is larger "
                    f"than the padded input ({size + total}) along axis {axis + 1}."
                )
            sizes.append(out)
        return tuple(sizes)

    def _split_shapes(self, input_shape):
        """Returns the list of input shapes, `[x]` or `[x, offsets(, mask)]`."""
        if _is_single_shape(input_shape):
            shapes = [tuple(input_shape)]
        else:
            shapes = [tuple(shape) for shape in input_shape]
        if len(shapes) not in (1, 2, 3):
            raise ValueError(
                "`DeformableConv2D` must be called on `x`, `[x, offsets]` or "
                f"`[x, offsets, mask]`. Received: {len(shapes)} inputs"
            )
        if len(shapes[0]) != 4:
            raise ValueError(
                "`x` must be a 4D tensor (batch, height, width, channels). "
                f"Received: x.shape={shapes[0]}"
            )
        return shapes

    def _check_shapes(self, shapes):
        """Checks the offsets and mask shapes against `x` and the layer's arguments."""
        if len(shapes) == 1:
            return
        x_shape = shapes[0]
        spatial = self._output_spatial(*x_shape[1:3])
        expected = {
            "offsets": 2 * self.offset_groups * self._taps,
            "mask": self.offset_groups * self._taps,
        }
        for name, shape in zip(("offsets", "mask"), shapes[1:], strict=False):
            want = (x_shape[0], *spatial, expected[name])
            fits = len(shape) == 4 and all(
                a is None or b is None or a == b for a, b in zip(shape, want, strict=True)
            )
            if not fits:
                raise ValueError(
                    f"`{name}` must have shape {want} for x.shape={x_shape} "
                    f"(offset_groups={self.offset_groups}, kernel_size={self.kernel_size}). "
                    f"Received: {name}.shape={shape}"
                )


def _is_single_shape(value):
    return not isinstance(value, list | tuple) or all(
        dim is None or isinstance(dim, int) for dim in value
    )


@register_layer_analyzer(DeformableConv2D)
def _analyze_deformable_conv2d(layer, input_shapes, output_shapes):
    """MACs of the convolution, of the offset predictor and of the bilinear sampling.

    Each sampled value costs 4 multiplications (one per corner), plus one for the mask.
    The receptive field is data-dependent (the offsets are unbounded), so it is unknown.
    """
    channels_in = input_shapes[0][-1]
    height, width, filters = output_shapes[0][1:]
    if height is None or width is None:
        raise ValueError(
            f"Cannot count the MACs of layer '{layer.name}': unknown spatial output size. "
            "Pass `input_shape` to `analyze`, e.g. input_shape=(224, 224, 3)."
        )
    taps = layer.kernel_size[0] * layer.kernel_size[1]
    positions = height * width
    macs = positions * taps * channels_in * filters
    if layer.offset_kernel is None:
        modulated = len(input_shapes) == 3
    else:
        modulated = layer.modulated
    macs += positions * taps * channels_in * (5 if modulated else 4)
    if layer.offset_kernel is not None:
        macs += positions * taps * channels_in * layer.offset_kernel.shape[-1]
    return macs, LayerGeometry.unknown()
