"""`LocallyConnected2D`: a 2D convolution with unshared weights, as Keras 2 had it."""

import keras
import numpy as np
from keras import layers, ops

from kcnn._serialization import register
from kcnn._validation import (
    check_positive_int,
    is_int,
    normalize_data_format,
    normalize_padding,
    normalize_tuple,
    same_padding,
)
from kcnn.analysis import conv_output_size, register_layer_analyzer, sliding_geometry

_IMPLEMENTATIONS = (1, 2)


@register
class LocallyConnected2D(layers.Layer):
    """2D convolution whose kernel is different at every output position (unshared weights).

    The `LocallyConnected2D` layer of Keras 2 (keras-team/keras v2.15.0,
    `keras/layers/locally_connected/`; Keras 3 removed it), with its arguments, weight
    shapes and weight layout: output position `p = row * out_width + col` has its own
    `(k_h * k_w * C_in, filters)` matrix `kernel[p]`, and every output value its own bias,

        y[row, col, f] = sum_t patch(row, col)[t] * kernel[p, t, f] + bias[row, col, f]

    where `patch(row, col)` is the window at `(row * s_h, col * s_w)` of the (padded)
    input, flattened in the order `(k_h, k_w, C_in)` with channels last and
    `(C_in, k_h, k_w)` with channels first, as Keras 2 flattened it. With channels first
    the bias is read as Keras 2 read it too: reshaped (not transposed) from
    `(out_h, out_w, filters)` to `(filters, out_h, out_w)`.

    Locally connected layers suit inputs whose content is aligned, where a feature at one
    place means something else elsewhere: Taigman, Yang, Ranzato & Wolf, "DeepFace:
    Closing the Gap to Human-Level Performance in Face Verification", CVPR 2014, put three
    of them on frontalized face crops.

    The layer has `out_h * out_w * (k_h * k_w * C_in + 1) * filters` weights (without the
    `+ 1` when `use_bias=False`), as Keras 2's implementation 1, and one
    multiply-accumulate per kernel weight and image. Because the weights depend on the
    position, the input's height and width must be known when the layer is built, and
    every later call must have the same height and width.

    Both implementations compute the same function from the same weights, so a weight
    file moves freely between them; so do the weights of a Keras 2 layer built with
    `implementation=1` and the same arguments (`layer.set_weights(keras2_weights)`):

    - `implementation=1` stacks the `k_h * k_w` strided slices of the input into the
      patches of all positions at once and multiplies each position's patches by its
      matrix in one batched matmul (einsum). Memory grows as the patches,
      `batch * out_h * out_w * k_h * k_w * C_in`. Keras 2 sliced the input once per
      output position; `tf.image.extract_patches` would do it in one op, but it is not a
      TFLite builtin (it needs Flex), while strided slices and batched matmuls are.
    - `implementation=2` scatters the kernel into the dense, mostly-zero matrix that
      connects every value of the padded input to every output value
      (`out_h * out_w * filters` by `H_pad * W_pad * C_in`) and applies it with a single
      matmul: few large ops, for small inputs, but memory heavy. Keras 2's implementation
      2 stored that dense matrix (times a 0/1 mask) as the weight itself; here the kernel
      stays compact, so the parameter count does not change with the implementation.
      Keras 2 weights of implementations 2 and 3 (a sparse matmul, not offered here) do
      not load.

    Departures from Keras 2, both for consistency with `keras.layers.Conv2D` and the rest
    of kcnn: `padding="same"` is offered by both implementations (Keras 2's implementation
    1 refused it) and follows TensorFlow's rule, `pad_before = floor(pad_total / 2)` with
    any odd extra row or column at the bottom or right; Keras 2's implementations 2 and 3
    put `k // 2` before instead, which differs when a stride exceeds 1 or a kernel side
    is even. Under `"valid"` padding both agree.

    Args:
        filters: int. Number of output channels.
        kernel_size: int or tuple of 2 ints. Height and width of the window.
        strides: int or tuple of 2 ints. Step of the window. Defaults to `(1, 1)`.
        padding: str. `"valid"` or `"same"` (case-insensitive). Defaults to `"valid"`.
        data_format: str or None. `"channels_last"` for inputs `(batch, height, width,
            channels)` or `"channels_first"` for `(batch, channels, height, width)`.
            Defaults to `None`: `keras.config.image_data_format()`.
        activation: str, callable or None. `None` means linear. Defaults to `None`.
        use_bias: bool. Whether to add the per-output bias. Defaults to `True`.
        kernel_initializer: initializer for the kernel. Defaults to `"glorot_uniform"`.
        bias_initializer: initializer for the bias. Defaults to `"zeros"`.
        kernel_regularizer: regularizer for the kernel. Defaults to `None`.
        bias_regularizer: regularizer for the bias. Defaults to `None`.
        activity_regularizer: regularizer for the output. Defaults to `None`.
        kernel_constraint: constraint for the kernel. Defaults to `None`.
        bias_constraint: constraint for the bias. Defaults to `None`.
        implementation: int. `1` (patches and a batched matmul) or `2` (one dense
            matmul), as described above. Defaults to `1`.
        **kwargs: base layer arguments such as `name` and `dtype`.

    Input shape:
        4D tensor `(batch_size, height, width, channels)` with `"channels_last"` or
        `(batch_size, channels, height, width)` with `"channels_first"`; height, width
        and channels must be known.

    Output shape:
        4D tensor `(batch_size, out_h, out_w, filters)` or `(batch_size, filters, out_h,
        out_w)`: `ceil(size / strides)` with `"same"` padding,
        `floor((size - kernel_size) / strides) + 1` with `"valid"`.

    Raises:
        ValueError: if `filters` is not a positive int, if `kernel_size` or `strides` is
            not a positive int or a tuple of 2 positive ints, if `padding`, `data_format`
            or `implementation` is not one of the values above, or, when the layer is
            built, if the input is not 4D with a known height, width and number of
            channels, or if the window does not fit in a `"valid"` input.

    Example:

    >>> import numpy as np
    >>> layer = LocallyConnected2D(4, 3, strides=2)
    >>> layer(np.zeros((2, 9, 7, 3), "float32")).shape
    TensorShape([2, 4, 3, 4])
    >>> [tuple(weight.shape) for weight in layer.weights]
    [(12, 27, 4), (4, 3, 4)]
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=(1, 1),
        padding="valid",
        data_format=None,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        implementation=1,
        **kwargs,
    ):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.filters = check_positive_int(filters, "filters")
        self.kernel_size = normalize_tuple(kernel_size, 2, "kernel_size")
        self.strides = normalize_tuple(strides, 2, "strides")
        self.padding = normalize_padding(padding)
        self.data_format = _normalize_data_format(data_format)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        if not is_int(implementation) or implementation not in _IMPLEMENTATIONS:
            raise ValueError(
                "`implementation` must be 1 (patches and a batched matmul) or 2 (one dense "
                "matmul); Keras 2's sparse implementation 3 is not supported. "
                f"Received: implementation={implementation!r}"
            )
        self.implementation = int(implementation)
        self.input_spec = keras.InputSpec(ndim=4)

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != 4 or None in self._spatial_and_channels(input_shape):
            layout = "(batch, height, width, channels)"
            if self.data_format == "channels_first":
                layout = "(batch, channels, height, width)"
            raise ValueError(
                f"`LocallyConnected2D` has weights for each output position, so it expects a "
                f"4D input {layout} with a known height, width and number of channels. "
                f"Received: input_shape={input_shape}"
            )
        height, width, channels = self._spatial_and_channels(input_shape)
        out_height, out_width = self._output_spatial(height, width)
        kernel_height, kernel_width = self.kernel_size
        self.kernel = self.add_weight(
            name="kernel",
            shape=(out_height * out_width, kernel_height * kernel_width * channels, self.filters),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(out_height, out_width, self.filters),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        # The weights fix the spatial size: a call on another size must fail, not broadcast.
        if self.data_format == "channels_last":
            axes = {1: height, 2: width, 3: channels}
        else:
            axes = {1: channels, 2: height, 3: width}
        self.input_spec = keras.InputSpec(ndim=4, axes=axes)
        self._output_size = (out_height, out_width)
        self._paddings = self._padding_amounts(height, width)
        self._padded_size = (height + sum(self._paddings[0]), width + sum(self._paddings[1]))
        self._padded_values = self._padded_size[0] * self._padded_size[1] * channels
        if self.implementation == 2:
            self._dense_indices = self._dense_kernel_indices(channels)

    def call(self, inputs):
        x = self._pad(inputs)
        if self.implementation == 1:
            outputs = self._patches_matmul(x)
        else:
            outputs = self._dense_matmul(x)
        if self.bias is not None:
            out_height, out_width = self._output_size
            bias = self.bias
            if self.data_format == "channels_first":
                # Keras 2's bias_add reshaped the (rows, cols, filters) bias, not transposed.
                bias = ops.reshape(bias, (self.filters, out_height, out_width))
            outputs = outputs + bias
        return self.activation(outputs)

    def _pad(self, x):
        if self.padding == "valid":
            return x
        spatial = [list(pair) for pair in self._paddings]
        if self.data_format == "channels_last":
            return ops.pad(x, [[0, 0], *spatial, [0, 0]])
        return ops.pad(x, [[0, 0], [0, 0], *spatial])

    def _patches_matmul(self, x):
        """Implementation 1: the patches of all positions from `k_h * k_w` strided slices."""
        (out_height, out_width), (stride_h, stride_w) = self._output_size, self.strides
        kernel_height, kernel_width = self.kernel_size
        positions = out_height * out_width
        taps = []
        for i in range(kernel_height):
            rows = slice(i, i + stride_h * (out_height - 1) + 1, stride_h)
            for j in range(kernel_width):
                cols = slice(j, j + stride_w * (out_width - 1) + 1, stride_w)
                if self.data_format == "channels_last":
                    taps.append(x[:, rows, cols, :])
                else:
                    taps.append(x[:, :, rows, cols])
        if self.data_format == "channels_last":
            # (batch, out_h, out_w, taps, C) -> features in Keras 2's (k_h, k_w, C) order.
            patches = ops.reshape(ops.stack(taps, axis=3), (-1, positions, self.kernel.shape[1]))
            outputs = ops.einsum("bpk,pkf->bpf", patches, self.kernel)
            return ops.reshape(outputs, (-1, out_height, out_width, self.filters))
        # (batch, C, taps, out_h, out_w) -> features in Keras 2's (C, k_h, k_w) order.
        patches = ops.reshape(ops.stack(taps, axis=2), (-1, self.kernel.shape[1], positions))
        outputs = ops.einsum("bkp,pkf->bfp", patches, self.kernel)
        return ops.reshape(outputs, (-1, self.filters, out_height, out_width))

    def _dense_matmul(self, x):
        """Implementation 2: one matmul by the kernel scattered into a dense matrix."""
        out_height, out_width = self._output_size
        dense = ops.scatter(
            self._dense_indices,
            ops.reshape(self.kernel, (-1, self.filters)),
            (self._padded_values, out_height * out_width, self.filters),
        )
        # Rows of the dense matrix in the order of the output values of one example.
        order = (1, 2, 0) if self.data_format == "channels_last" else (2, 1, 0)
        dense = ops.reshape(ops.transpose(dense, order), (-1, self._padded_values))
        flat = ops.reshape(x, (-1, self._padded_values))
        # dense @ flat^T, not flat @ dense^T: TensorFlow 2.21's TFLite converter fuses the
        # ReLU that follows `flat @ dense` into the matmul and then drops it (LiteRT then
        # returns negative values), with a zero or no bias.
        outputs = ops.transpose(ops.matmul(dense, ops.transpose(flat)))
        if self.data_format == "channels_last":
            return ops.reshape(outputs, (-1, out_height, out_width, self.filters))
        return ops.reshape(outputs, (-1, self.filters, out_height, out_width))

    def _dense_kernel_indices(self, channels):
        """`(input_index, position)` of each kernel row, in the kernel's own order.

        `input_index` is the flat index, in the padded input of one example, of the value
        that the row multiplies; rows are ordered `(position, tap feature)` as the kernel.
        """
        (out_height, out_width), (stride_h, stride_w) = self._output_size, self.strides
        padded_height, padded_width = self._padded_size
        kernel_height, kernel_width = self.kernel_size
        out_row, out_col = np.divmod(np.arange(out_height * out_width), out_width)
        if self.data_format == "channels_last":
            i, j, c = np.meshgrid(
                np.arange(kernel_height),
                np.arange(kernel_width),
                np.arange(channels),
                indexing="ij",
            )
        else:
            c, i, j = np.meshgrid(
                np.arange(channels),
                np.arange(kernel_height),
                np.arange(kernel_width),
                indexing="ij",
            )
        rows = out_row[:, None] * stride_h + i.reshape(1, -1)
        cols = out_col[:, None] * stride_w + j.reshape(1, -1)
        channel = np.broadcast_to(c.reshape(1, -1), rows.shape)
        if self.data_format == "channels_last":
            input_index = (rows * padded_width + cols) * channels + channel
        else:
            input_index = (channel * padded_height + rows) * padded_width + cols
        position = np.broadcast_to(np.arange(out_height * out_width)[:, None], rows.shape)
        return np.stack([input_index.ravel(), position.ravel()], axis=1).astype("int32")

    def _spatial_and_channels(self, shape):
        if self.data_format == "channels_last":
            return shape[1], shape[2], shape[3]
        return shape[2], shape[3], shape[1]

    def _output_spatial(self, height, width):
        return tuple(
            conv_output_size(size, kernel, stride, self.padding)
            for size, kernel, stride in zip(
                (height, width), self.kernel_size, self.strides, strict=True
            )
        )

    def _padding_amounts(self, height, width):
        """`((top, bottom), (left, right))`: TensorFlow's "same" rule, or no padding."""
        if self.padding == "valid":
            return ((0, 0), (0, 0))
        amounts = []
        for size, kernel, stride in zip(
            (height, width), self.kernel_size, self.strides, strict=True
        ):
            _, total = same_padding(size, kernel, stride)
            amounts.append((total // 2, total - total // 2))
        return tuple(amounts)

    def compute_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        height, width, _ = self._spatial_and_channels(input_shape)
        out_height, out_width = self._output_spatial(height, width)
        if self.data_format == "channels_last":
            return (input_shape[0], out_height, out_width, self.filters)
        return (input_shape[0], self.filters, out_height, out_width)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "padding": self.padding,
                "data_format": self.data_format,
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
                "activity_regularizer": keras.regularizers.serialize(self.activity_regularizer),
                "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
                "bias_constraint": keras.constraints.serialize(self.bias_constraint),
                "implementation": self.implementation,
            }
        )
        return config


def _normalize_data_format(value):
    return normalize_data_format(value, keras.config.image_data_format())


@register_layer_analyzer(LocallyConnected2D)
def _analyze_locally_connected2d(layer, input_shapes, output_shapes):
    """One multiply-accumulate per kernel weight: the textbook convolution count, unshared.

    The window slides as a convolution's does, so the geometry is `sliding_geometry`'s.
    """
    channels_first = layer.data_format == "channels_first"
    channels_in = input_shapes[0][1 if channels_first else -1]
    out_height, out_width = output_shapes[0][2:] if channels_first else output_shapes[0][1:3]
    kernel_height, kernel_width = layer.kernel_size
    return (
        out_height * out_width * kernel_height * kernel_width * channels_in * layer.filters,
        sliding_geometry(layer, input_shapes, output_shapes),
    )
