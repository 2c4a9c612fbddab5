"""2D max-pooling that also returns the position of every maximum (SegNet)."""

import keras

from kcnn._serialization import register
from kcnn._validation import normalize_padding, normalize_tuple
from kcnn.analysis import register_layer_analyzer, sliding_geometry
from kcnn.ops.argmax_pooling import max_pool_with_argmax, pooled_size


@register
class MaxPoolingWithArgmax2D(keras.layers.Layer):
    """Max pooling that also returns where each maximum came from.

    SegNet (Badrinarayanan et al. 2015, "SegNet: A Deep Convolutional Encoder-Decoder
    Architecture for Image Segmentation", arXiv:1511.00561) keeps these "pooling indices" in
    its encoder so that `MaxUnpooling2D` in the decoder can put values back where they were.

    Indices follow `tf.nn.max_pool_with_argmax(..., include_batch_in_index=False)`: the flat
    position of the maximum inside its own image, `(y * W + x) * C + c`, for input height H,
    width W and C channels, counted in the unpadded input. For example, on a 4x4x1 input the
    maximum at row 2, column 3 has index `2 * 4 + 3 = 11`. Ties go to the first position of
    the window in row-major order.

    Unlike `tf.nn.max_pool_with_argmax`, this layer compiles under XLA (`jit_compile=True`)
    and converts to TFLite with builtin ops only: the argmax is a running maximum over the
    window's strided slices, with no custom or Flex op.

    Args:
        pool_size: int or tuple of 2 ints. Window size `(kh, kw)`. Defaults to 2.
        strides: int, tuple of 2 ints, or None. Step between windows; None means
            `pool_size`. Defaults to None.
        padding: `"valid"` or `"same"` (case-insensitive), as in `keras.layers.MaxPooling2D`;
            padded positions never win. Defaults to `"valid"`.
        index_dtype: `"int32"` or `"int64"`. Dtype of the indices. Defaults to `"int32"`
            (supported by every TFLite builtin kernel involved).
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Input shape:
        4D tensor `(batch, height, width, channels)` (channels last).

    Output shape:
        A tuple `(pooled, indices)`, both `(batch, pooled_height, pooled_width, channels)`,
        with the pooled sizes of `keras.layers.MaxPooling2D`.

    Raises:
        ValueError: on an invalid argument, or an input that is not 4D or has an unknown
            channel count; the message names it and the value received.

    Example:
    >>> import numpy as np
    >>> x = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)
    >>> pooled, indices = MaxPoolingWithArgmax2D()(x)
    >>> np.asarray(pooled)[0, :, :, 0].tolist(), np.asarray(indices)[0, :, :, 0].tolist()
    ([[5.0, 7.0], [13.0, 15.0]], [[5, 7], [13, 15]])
    """

    def __init__(self, pool_size=2, strides=None, padding="valid", index_dtype="int32", **kwargs):
        super().__init__(**kwargs)
        self.pool_size = normalize_tuple(pool_size, 2, "pool_size")
        self.strides = normalize_tuple(self.pool_size if strides is None else strides, 2, "strides")
        self.padding = normalize_padding(padding)
        if index_dtype not in ("int32", "int64"):
            raise ValueError(
                f'`index_dtype` must be "int32" or "int64". Received: index_dtype={index_dtype!r}'
            )
        self.index_dtype = index_dtype
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        if input_shape[-1] is None:
            raise ValueError(
                "The channel dimension of the inputs to MaxPoolingWithArgmax2D must be known. "
                f"Received: input_shape={input_shape}"
            )
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: input_shape[-1]})

    def call(self, inputs):
        return max_pool_with_argmax(
            inputs, self.pool_size, self.strides, self.padding, self.index_dtype
        )

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        sizes = []
        for size, pool, stride in zip((height, width), self.pool_size, self.strides, strict=True):
            sizes.append(None if size is None else pooled_size(size, pool, stride, self.padding)[0])
        shape = (batch, *sizes, channels)
        return shape, shape

    def compute_output_spec(self, inputs):
        shape = self.compute_output_shape(inputs.shape)[0]
        return (
            keras.KerasTensor(shape, dtype=self.compute_dtype),
            keras.KerasTensor(shape, dtype=self.index_dtype),
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "pool_size": self.pool_size,
                "strides": self.strides,
                "padding": self.padding,
                "index_dtype": self.index_dtype,
            }
        )
        return config


@register_layer_analyzer(MaxPoolingWithArgmax2D)
def _analyze_max_pooling_with_argmax2d(layer, input_shapes, output_shapes):
    """A pooling window: 0 MACs and the geometry of `MaxPooling2D`, for both outputs."""
    return 0, sliding_geometry(layer, input_shapes, output_shapes)
