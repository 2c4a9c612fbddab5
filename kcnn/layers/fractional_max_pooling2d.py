"""`FractionalMaxPooling2D`: max-pooling by a non-integer factor, Graham (2014)."""

import numbers

import numpy as np
from keras import layers, ops, random

from kcnn._serialization import register
from kcnn.analysis import LayerGeometry, register_layer_analyzer
from kcnn.ops.fractional_max_pool import (
    fractional_max_pool,
    fractional_output_length,
    pseudo_random_boundaries,
    random_boundaries,
)


@register
class FractionalMaxPooling2D(layers.Layer):
    """Max-pools over random regions of 1 or 2 pixels, shrinking by a factor such as sqrt(2).

    Implements Graham, "Fractional Max-Pooling", 2014 (arXiv:1412.6071). Each spatial axis
    of length `N_in` shrinks to `N_out = floor(N_in / pooling_ratio)`; output `(i, j)` is the
    maximum over a rectangle `[a_i, a_{i+1}) x [b_j, b_{j+1})` (closed at the far end when
    `overlapping=True`) of two boundary sequences from 0 to `N_in` whose steps are
    `floor(N_in / N_out)` or one more (1 or 2 for ratios between 1 and 2). Shrinking by
    sqrt(2) instead of 2 lets a network stack twice as many pooling layers.

    - In training the boundaries are random, drawn anew at every call (one pair of
      sequences for the whole batch, as `tf.nn.fractional_max_pool` does): with
      `pseudo_random=True` `a_i = ceil(alpha' * (i + u)) - ceil(alpha' * u)` with
      `alpha' = N_in / N_out` and `u` uniform in [0, 1); with `pseudo_random=False` the
      steps are a random permutation. See `kcnn.ops.fractional_max_pool`.
    - At inference the boundaries are fixed: the pseudo-random sequence with `u = 0`,
      `a_i = ceil(i * N_in / N_out)`, i.e. evenly spread regions, in both modes, so
      predictions are deterministic and the layer exports. (Graham instead averages the
      predictions of several random draws at test time; call the model with
      `training=True` several times for that, keeping in mind that it also switches
      dropout and batch normalization to training mode.)

    The regions are pooled with `unsorted_segment_max` and `gather`, so the layer compiles
    with XLA in both modes and converts to TFLite with builtin ops only, unlike
    `tf.nn.fractional_max_pool`, which has no XLA kernel and converts to a custom TFLite op
    that the stock interpreter cannot run. The gradient goes to the maximum of each region.

    Args:
        pooling_ratio: float >= 1, or tuple of 2 such floats `(alpha_h, alpha_w)`. Defaults
            to `1.414` (Graham's sqrt(2)).
        pseudo_random: bool. Pseudo-random (`True`) or random (`False`) training
            boundaries. Defaults to `True`.
        overlapping: bool. Whether adjacent regions share their boundary row and column.
            Defaults to `False`.
        seed: int or None. Seed of the layer's random generator. Defaults to `None`.
        **kwargs: base layer arguments such as `name` and `dtype`.

    Input shape:
        4D tensor `(batch_size, height, width, channels)`.

    Output shape:
        4D tensor `(batch_size, floor(height / alpha_h), floor(width / alpha_w), channels)`.

    Raises:
        ValueError: if `pooling_ratio` is not a number >= 1 or a tuple of 2 such numbers,
            if `seed` is not an int or None, or when built on a known height or width
            smaller than its ratio (no output row or column would be left).

    Example:

    >>> import numpy as np
    >>> x = np.arange(49, dtype="float32").reshape(1, 7, 7, 1)
    >>> layer = FractionalMaxPooling2D(1.4, seed=0)
    >>> y = layer(x, training=False)  # boundaries 0, 2, 3, 5, 6, 7 on both axes
    >>> y.shape
    TensorShape([1, 5, 5, 1])
    >>> np.asarray(y)[0, :2, :, 0].tolist()
    [[8.0, 9.0, 11.0, 12.0, 13.0], [15.0, 16.0, 18.0, 19.0, 20.0]]
    >>> layer(x, training=True).shape
    TensorShape([1, 5, 5, 1])
    """

    def __init__(
        self, pooling_ratio=1.414, pseudo_random=True, overlapping=False, seed=None, **kwargs
    ):
        super().__init__(**kwargs)
        self.pooling_ratio = _normalize_pooling_ratio(pooling_ratio)
        self.pseudo_random = bool(pseudo_random)
        self.overlapping = bool(overlapping)
        if seed is not None and (not isinstance(seed, numbers.Integral) or isinstance(seed, bool)):
            raise ValueError(f"`seed` must be an int or None. Received: seed={seed!r}")
        self.seed = None if seed is None else int(seed)
        self.seed_generator = random.SeedGenerator(seed)
        self.input_spec = layers.InputSpec(ndim=4)

    def build(self, input_shape):
        for size, ratio in zip(input_shape[1:3], self.pooling_ratio, strict=True):
            if size is not None and fractional_output_length(size, ratio) < 1:
                raise ValueError(
                    f"`FractionalMaxPooling2D` with pooling_ratio={self.pooling_ratio} needs "
                    f"a height and width of at least the ratio. "
                    f"Received: input_shape={tuple(input_shape)}"
                )

    def call(self, inputs, training=None):
        boundaries = []
        for axis, ratio in zip((1, 2), self.pooling_ratio, strict=True):
            length = inputs.shape[axis]
            length = ops.shape(inputs)[axis] if length is None else length
            output_length = fractional_output_length(length, ratio)
            if training:
                boundaries.append(self._random_boundaries(length, output_length))
            else:
                boundaries.append(pseudo_random_boundaries(length, output_length, 0))
        return fractional_max_pool(inputs, *boundaries, overlapping=self.overlapping)

    def _random_boundaries(self, length, output_length):
        if self.pseudo_random:
            u = random.uniform((), dtype="float32", seed=self.seed_generator)
            # ceil(N_in * u) for u in [0, 1); any integer works, so rounding is harmless.
            offset = ops.cast(ops.ceil(u * ops.cast(length, "float32")), "int32")
            return pseudo_random_boundaries(length, output_length, offset)
        keys = random.uniform(
            ops.reshape(output_length, (1,)), dtype="float32", seed=self.seed_generator
        )
        return random_boundaries(length, output_length, keys)

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        spatial = tuple(
            None if size is None else fractional_output_length(size, ratio)
            for size, ratio in zip((height, width), self.pooling_ratio, strict=True)
        )
        return (batch, *spatial, channels)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "pooling_ratio": self.pooling_ratio,
                "pseudo_random": self.pseudo_random,
                "overlapping": self.overlapping,
                "seed": self.seed,
            }
        )
        return config


def _normalize_pooling_ratio(value):
    def valid(number):
        return isinstance(number, numbers.Real) and not isinstance(number, bool) and number >= 1

    if valid(value):
        return (float(value), float(value))
    if isinstance(value, tuple | list) and len(value) == 2 and all(valid(v) for v in value):
        return tuple(float(v) for v in value)
    raise ValueError(
        "`pooling_ratio` must be a number >= 1 or a tuple of 2 numbers >= 1. "
        f"Received: pooling_ratio={value!r}"
    )


@register_layer_analyzer(FractionalMaxPooling2D)
def _analyze_fractional_max_pooling2d(layer, input_shapes, output_shapes):
    """0 MACs; the geometry of the largest region, `ceil(alpha)` pixels (one more when
    overlapping), at the average stride `alpha`.

    The regions move with the random boundaries, so this is the worst case of a window
    sliding by `alpha`: receptive fields may be fractional and jumps are not whole.
    """
    kernel = tuple(int(np.ceil(ratio)) + int(layer.overlapping) for ratio in layer.pooling_ratio)
    return 0, LayerGeometry.sliding(kernel, layer.pooling_ratio)
