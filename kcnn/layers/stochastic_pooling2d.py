"""`StochasticPooling2D`: pooling by sampling, Zeiler & Fergus (2013)."""

import numbers

import numpy as np
from keras import layers, ops, random

from kcnn._serialization import register
from kcnn._validation import normalize_padding, normalize_tuple
from kcnn.analysis import conv_output_size, register_layer_analyzer, sliding_geometry


@register
class StochasticPooling2D(layers.Layer):
    """Picks one activation per window at random, in proportion to its value.

    Implements Zeiler & Fergus, "Stochastic Pooling for Regularization of Deep Convolutional
    Neural Networks", 2013 (arXiv:1301.3557). For a window with activations `a_i >= 0` the
    probabilities are `p_i = a_i / sum_j a_j`, and:

    - in training, the output is `a_k` with `k` drawn from `p` (a window of zeros gives 0),
      independently for every window, channel and example: a regularizer like dropout, but
      one that keeps the strongest activations likely;
    - at inference, the output is the probability-weighted average
      `sum_i p_i a_i = sum_i a_i ** 2 / sum_i a_i` (0 for a window of zeros), which lies
      between average and max pooling (the paper's "probabilistic weighting").

    The method is defined for non-negative activations (after a ReLU); negative inputs are
    treated as 0. `"same"` padding adds zeros, which have probability 0 and add nothing to
    either sum. Sampling uses the Gumbel-max trick, `k = argmax_i (log a_i + g_i)` with
    Gumbel noise `g_i`, so zero activations (`log 0 = -inf`) are never picked, and in
    training the gradient flows to the picked activation only, as in max pooling. Both
    modes compile with XLA; the inference mode converts to TFLite with builtin ops (export
    and conversion trace inference).

    Args:
        pool_size: int or tuple of 2 ints. Window size. Defaults to `2`.
        strides: int, tuple of 2 ints, or None. Step between windows; None means
            `pool_size`. Defaults to `None`.
        padding: `"valid"` or `"same"` (case-insensitive), as in `keras.layers.MaxPooling2D`.
            Defaults to `"valid"`.
        seed: int or None. Seed of the layer's random generator, for reproducible training
            samples. Defaults to `None`.
        **kwargs: base layer arguments such as `name` and `dtype`.

    Input shape:
        4D tensor `(batch_size, height, width, channels)`, non-negative.

    Output shape:
        4D tensor `(batch_size, pooled_height, pooled_width, channels)`, with the pooled
        sizes of `keras.layers.MaxPooling2D`.

    Raises:
        ValueError: if `pool_size` or `strides` is not a positive int or a tuple of 2
            positive ints, if `padding` is not `"valid"` or `"same"`, or if `seed` is not an
            int or None.

    Example:

    >>> import numpy as np
    >>> x = np.array([[1.0, 3.0], [0.0, 0.0]], "float32").reshape(1, 2, 2, 1)
    >>> layer = StochasticPooling2D(2, seed=0)
    >>> float(layer(x, training=False)[0, 0, 0, 0])  # (1 * 1 + 3 * 3) / (1 + 3)
    2.5
    >>> float(layer(x, training=True)[0, 0, 0, 0]) in (1.0, 3.0)
    True
    """

    def __init__(self, pool_size=2, strides=None, padding="valid", seed=None, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = normalize_tuple(pool_size, 2, "pool_size")
        self.strides = normalize_tuple(self.pool_size if strides is None else strides, 2, "strides")
        self.padding = normalize_padding(padding)
        if seed is not None and (not isinstance(seed, numbers.Integral) or isinstance(seed, bool)):
            raise ValueError(f"`seed` must be an int or None. Received: seed={seed!r}")
        self.seed = None if seed is None else int(seed)
        self.seed_generator = random.SeedGenerator(seed)
        self.input_spec = layers.InputSpec(ndim=4)

    def call(self, inputs, training=None):
        taps = _window_taps(ops.relu(inputs), self.pool_size, self.strides, self.padding)
        windows = ops.stack(taps, axis=-1)  # (batch, out_h, out_w, channels, taps)
        if training:
            return self._sample(windows)
        # Squares of activations above 256 overflow float16: sum them in float32.
        if self.compute_dtype in ("float16", "bfloat16"):
            windows = ops.cast(windows, "float32")
        total = ops.sum(windows, axis=-1)
        weighted = ops.sum(ops.square(windows), axis=-1)
        nonzero = total > 0
        outputs = ops.where(nonzero, weighted / ops.where(nonzero, total, 1), 0)
        return ops.cast(outputs, self.compute_dtype)

    def _sample(self, windows):
        # Gumbel-max in float32: float16 uniforms would put visible mass on ties at 0 or 1.
        probabilities = ops.stop_gradient(ops.cast(windows, "float32"))
        uniform = random.uniform(
            ops.shape(windows),
            minval=np.finfo(np.float32).tiny,
            maxval=1.0,
            dtype="float32",
            seed=self.seed_generator,
        )
        scores = ops.log(probabilities) - ops.log(-ops.log(uniform))
        choice = ops.expand_dims(ops.argmax(scores, axis=-1), -1)
        return ops.squeeze(ops.take_along_axis(windows, choice, axis=-1), -1)

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        sizes = zip((height, width), self.pool_size, self.strides, strict=True)
        spatial = tuple(
            conv_output_size(size, pool, stride, self.padding) for size, pool, stride in sizes
        )
        return (batch, *spatial, channels)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "pool_size": self.pool_size,
                "strides": self.strides,
                "padding": self.padding,
                "seed": self.seed,
            }
        )
        return config


def _window_taps(x, pool_size, strides, padding):
    """One `(batch, out_h, out_w, channels)` tensor per window position, padded with zeros.

    Tap `(dy, dx)` holds `x[i * s_h + dy - top, j * s_w + dx - left]` for every output
    `(i, j)`, with TensorFlow's "valid" / "same" output sizes and padding split.
    """
    sizes = [x.shape[axis] if x.shape[axis] is not None else ops.shape(x)[axis] for axis in (1, 2)]
    outputs, paddings = [], [[0, 0]]
    for size, pool, stride in zip(sizes, pool_size, strides, strict=True):
        if padding == "valid":
            output = (size - pool) // stride + 1
            paddings.append([0, 0])
        else:
            output = -(-size // stride)
            total = (output - 1) * stride + pool - size
            total = max(total, 0) if isinstance(total, int) else ops.maximum(total, 0)
            paddings.append([total // 2, total - total // 2])
        outputs.append(output)
    if padding == "same":
        x = ops.pad(x, paddings + [[0, 0]])
    (out_h, out_w), (pool_h, pool_w), (stride_h, stride_w) = outputs, pool_size, strides
    return [
        x[
            :,
            dy : dy + (out_h - 1) * stride_h + 1 : stride_h,
            dx : dx + (out_w - 1) * stride_w + 1 : stride_w,
            :,
        ]
        for dy in range(pool_h)
        for dx in range(pool_w)
    ]


@register_layer_analyzer(StochasticPooling2D)
def _analyze_stochastic_pooling2d(layer, input_shapes, output_shapes):
    """A pooling window: 0 MACs (weights multiply nothing) and sliding-window geometry."""
    return 0, sliding_geometry(layer, input_shapes, output_shapes)
