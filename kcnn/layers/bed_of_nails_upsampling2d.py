"""`BedOfNailsUpsampling2D`: upsampling by zero insertion."""

import keras
from keras import ops

from kcnn._serialization import register
from kcnn._validation import normalize_tuple
from kcnn.analysis import LayerGeometry, register_layer_analyzer


@register
class BedOfNailsUpsampling2D(keras.layers.Layer):
    """Upsamples by putting each value at the top-left of an `s_h x s_w` block of zeros.

    "Bed of nails" unpooling: output `[i * s_h, j * s_w]` holds input `[i, j]` and every
    other output is 0. It is max-unpooling (`MaxUnpooling2D`, Zeiler & Fergus 2014,
    arXiv:1311.2901) with the switches fixed at the top-left corner, and the zero insertion
    that a transposed convolution of stride `s` performs before its kernel (Dumoulin & Visin
    2016, arXiv:1603.07285, section 4.5): a following `k x k` convolution then fills the
    zeros, so `BedOfNailsUpsampling2D(s)` + a convolution is a transposed convolution with
    an explicit, inspectable first step. Unlike `UpSampling2D` (nearest neighbour) it adds
    no copies: the sum over the output equals the sum over the input.

        input (2x2)     output (4x4), size=2
        [[1, 2],        [[1, 0, 2, 0],
         [3, 4]]   ->    [0, 0, 0, 0],
                         [3, 0, 4, 0],
                         [0, 0, 0, 0]]

    Implemented with `pad` and `reshape` on 4D tensors (keras.ops), so it compiles with XLA,
    converts to TFLite with builtin ops, and its gradient is the strided subsampling of the
    incoming gradient.

    Args:
        size: int or tuple of 2 ints. Upsampling factors `(s_h, s_w)`. Defaults to `2`.
        **kwargs: base layer arguments such as `name` and `dtype`.

    Input shape:
        4D tensor `(batch_size, height, width, channels)`.

    Output shape:
        4D tensor `(batch_size, height * s_h, width * s_w, channels)`.

    Raises:
        ValueError: if `size` is not a positive int or a tuple of 2 positive ints.

    Example:

    >>> import numpy as np
    >>> x = np.array([[1.0, 2.0], [3.0, 4.0]], "float32").reshape(1, 2, 2, 1)
    >>> np.asarray(BedOfNailsUpsampling2D(2)(x))[0, :, :, 0].tolist()
    [[1.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0], [3.0, 0.0, 4.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    """

    def __init__(self, size=2, **kwargs):
        super().__init__(**kwargs)
        self.size = normalize_tuple(size, 2, "size")
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def call(self, inputs):
        size_h, size_w = self.size
        shape = ops.shape(inputs)
        height, width, channels = shape[1], shape[2], shape[3]
        # Columns: (B * H, W, 1, C) padded to (B * H, W, s_w, C) interleaves s_w - 1 zeros
        # after every value once flattened; rows likewise on (B, H, 1, W * s_w * C).
        x = ops.reshape(inputs, (-1, width, 1, channels))
        x = ops.pad(x, [[0, 0], [0, 0], [0, size_w - 1], [0, 0]])
        x = ops.reshape(x, (-1, height, 1, width * size_w * channels))
        x = ops.pad(x, [[0, 0], [0, 0], [0, size_h - 1], [0, 0]])
        return ops.reshape(x, (-1, height * size_h, width * size_w, channels))

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        return (
            batch,
            None if height is None else height * self.size[0],
            None if width is None else width * self.size[1],
            channels,
        )

    def get_config(self):
        config = super().get_config()
        config["size"] = self.size
        return config


@register_layer_analyzer(BedOfNailsUpsampling2D)
def _analyze_bed_of_nails_upsampling2d(layer, input_shapes, output_shapes):
    """Each output reads at most one input pixel: the rule of nearest-neighbour upsampling."""
    return 0, LayerGeometry.transpose(1, layer.size)
