"""2D max-unpooling: the inverse of `MaxPoolingWithArgmax2D` (SegNet, DeconvNet)."""

import keras

from kcnn._serialization import register
from kcnn._validation import normalize_padding, normalize_tuple
from kcnn.analysis import LayerGeometry, register_layer_analyzer
from kcnn.ops.argmax_pooling import max_unpool, unpooled_size


@register
class MaxUnpooling2D(keras.layers.Layer):
    """Puts each pooled value back at the position its maximum came from; zeros elsewhere.

    The decoder upsampling of SegNet (Badrinarayanan et al. 2015, arXiv:1511.00561) and
    DeconvNet (Noh et al. 2015, arXiv:1505.04366), introduced as "switches" by Zeiler & Fergus
    (2014, arXiv:1311.2901). Called on `[pooled, indices]` from `MaxPoolingWithArgmax2D` with
    the same `pool_size`, `strides` and `padding`:

        pooled (2x2)    indices         unpooled (4x4)
        [[5, 7],        [[5, 7],        [[0, 0, 0, 0],
         [13, 15]]       [13, 15]]  ->   [0, 5, 0, 7],
                                         [0, 0, 0, 0],
                                         [0, 13, 0, 15]]

    Indices follow `tf.nn.max_pool_with_argmax(include_batch_in_index=False)`:
    `(y * W + x) * C + c` inside each image. The layer compiles under XLA and converts to
    TFLite with builtin ops only (tensorflow-addons' `MaxUnpooling2D` became a custom TFLite op
    the stock interpreter cannot run).

    Args:
        pool_size: int or tuple of 2 ints, of the pooling that produced the indices.
            Defaults to 2.
        strides: int, tuple of 2 ints, or None (= `pool_size`), of that pooling. Defaults to
            None.
        padding: `"valid"` or `"same"`, of that pooling. Defaults to `"valid"`.
        output_size: None or tuple `(height, width)` of the pre-pooling input. Needed when the
            stride does not divide it (a 7-pixel side pooled by 2 with "valid" padding gives 3,
            which unpools to 6 by default). Defaults to None: `(h - 1) * s + k` for "valid"
            and `h * s` for "same". A third call input (any tensor of the pre-pooling size,
            e.g. the encoder feature map) also sets it, also when sizes are unknown until run
            time.
        **kwargs: base `keras.layers.Layer` arguments.

    Input shape:
        A list `[pooled, indices]` or `[pooled, indices, like]`: `pooled` float and `indices`
        integer, both `(batch, h, w, channels)`; `like` `(batch, H, W, ...)`.

    Output shape:
        `(batch, H, W, channels)`.

    Raises:
        ValueError: on an invalid argument, a call input that is not a list of 2 or 3 tensors,
            inputs that are not 4D, or `pooled` and `indices` of different shapes.

    Example:
    >>> import numpy as np
    >>> from kcnn.layers import MaxPoolingWithArgmax2D
    >>> x = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)
    >>> pooled, indices = MaxPoolingWithArgmax2D()(x)
    >>> np.asarray(MaxUnpooling2D()([pooled, indices]))[0, :, :, 0].tolist()[1]
    [0.0, 5.0, 0.0, 7.0]
    """

    def __init__(self, pool_size=2, strides=None, padding="valid", output_size=None, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = normalize_tuple(pool_size, 2, "pool_size")
        self.strides = normalize_tuple(self.pool_size if strides is None else strides, 2, "strides")
        self.padding = normalize_padding(padding)
        self.output_size = (
            None if output_size is None else normalize_tuple(output_size, 2, "output_size")
        )

    def _check_inputs(self, shapes):
        if not isinstance(shapes, (list, tuple)) or len(shapes) not in (2, 3):
            raise ValueError(
                "MaxUnpooling2D must be called on a list [pooled, indices] or "
                f"[pooled, indices, like]. Received: {shapes}"
            )
        pooled, indices = tuple(shapes[0]), tuple(shapes[1])
        for name, shape in (("pooled", pooled), ("indices", indices)):
            if len(shape) != 4:
                raise ValueError(
                    f"`{name}` must be a 4D tensor (batch, height, width, channels). "
                    f"Received: {name}.shape={shape}"
                )
        if any(
            a is not None and b is not None and a != b for a, b in zip(pooled, indices, strict=True)
        ):
            raise ValueError(
                "`pooled` and `indices` must have the same shape. Received: "
                f"pooled.shape={pooled}, indices.shape={indices}"
            )

    def build(self, input_shape):
        self._check_inputs(input_shape)

    def _output_hw(self, pooled_hw, like_hw):
        if like_hw is not None:
            return like_hw
        if self.output_size is not None:
            return self.output_size
        return tuple(
            None if size is None else unpooled_size(size, pool, stride, self.padding)
            for size, pool, stride in zip(pooled_hw, self.pool_size, self.strides, strict=True)
        )

    def call(self, inputs):
        self._check_inputs([tuple(tensor.shape) for tensor in inputs])
        like = inputs[2] if len(inputs) == 3 else None
        return max_unpool(
            inputs[0],
            inputs[1],
            self.pool_size,
            self.strides,
            self.padding,
            output_size=self.output_size,
            like=like,
        )

    def compute_output_shape(self, input_shape):
        self._check_inputs(input_shape)
        pooled = tuple(input_shape[0])
        like_hw = tuple(input_shape[2][1:3]) if len(input_shape) == 3 else None
        return (pooled[0], *self._output_hw(pooled[1:3], like_hw), pooled[3])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "pool_size": self.pool_size,
                "strides": self.strides,
                "padding": self.padding,
                "output_size": self.output_size,
            }
        )
        return config


@register_layer_analyzer(MaxUnpooling2D)
def _analyze_max_unpooling2d(layer, input_shapes, output_shapes):
    """0 MACs; each output copies at most one pooled value, so the receptive field is the
    pooled one and the jump shrinks by the stride (the rule of nearest upsampling)."""
    return 0, LayerGeometry.transpose(1, layer.strides)
