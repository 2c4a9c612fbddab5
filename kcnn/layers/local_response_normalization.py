"""`LocalResponseNormalization`: AlexNet's normalisation across adjacent channels."""

import numbers

import keras
from keras import ops

from kcnn._serialization import register
from kcnn._validation import is_int
from kcnn.analysis import LayerGeometry, register_layer_analyzer


@register
class LocalResponseNormalization(keras.layers.Layer):
    """Divides each activation by the energy of its neighbouring channels at the same pixel.

    The "local response normalization" of Krizhevsky, Sutskever & Hinton, "ImageNet
    Classification with Deep Convolutional Neural Networks", NeurIPS 2012 (section 3.3),
    also used by GoogLeNet (Szegedy et al. 2015, arXiv:1409.4842). For channel `i` of `C`:

        b_i = a_i / (k + alpha * sum_{j = max(0, i - r)}^{min(C - 1, i + r)} a_j ** 2) ** beta

    with `r = depth_radius`. The paper's `n = 5` adjacent channels is `depth_radius=2`, and
    its `k = 2, alpha = 1e-4, beta = 0.75` are the defaults. This is the formula of
    `tf.nn.local_response_normalization` (alpha multiplies the sum; Caffe's LRN divides
    alpha by `n` instead, so Caffe's `alpha` is `n` times this one). It is written with
    `keras.ops` (a padded channel axis and `2r + 1` shifted slices), so it runs in every
    float dtype (TensorFlow's LRN kernel has no float64, and under XLA no float16), compiles
    with XLA and converts to TFLite with builtin ops. Under mixed precision the sum of squares
    is computed in float32, since squares of activations above 256 overflow float16.

    Args:
        depth_radius: int >= 0. Channels on each side in the sum; `n = 2 * depth_radius + 1`.
            Defaults to `2`.
        bias: float > 0. The offset `k`. Defaults to `2.0`.
        alpha: float >= 0. Scale of the sum of squares. Defaults to `1e-4`.
        beta: float >= 0. Exponent. Defaults to `0.75`.
        **kwargs: base layer arguments such as `name` and `dtype`.

    Input shape:
        Tensor of rank >= 2, channels last, with a known number of channels.

    Output shape:
        Same as the input.

    Raises:
        ValueError: if `depth_radius` is not a non-negative int, `bias` not a positive
            number, or `alpha` or `beta` not a non-negative number.

    Example:

    >>> import numpy as np
    >>> x = np.full((1, 1, 1, 3), 10.0, "float32")
    >>> y = LocalResponseNormalization(depth_radius=1, bias=1.0, alpha=0.01, beta=1.0)(x)
    >>> [round(float(v), 4) for v in y[0, 0, 0]]  # 10 / (1 + 0.01 * (2 or 3) * 100)
    [3.3333, 2.5, 3.3333]
    """

    def __init__(self, depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75, **kwargs):
        super().__init__(**kwargs)
        if not is_int(depth_radius) or depth_radius < 0:
            raise ValueError(
                "`depth_radius` must be a non-negative int. "
                f"Received: depth_radius={depth_radius!r}"
            )
        if not _is_number(bias) or bias <= 0:
            raise ValueError(f"`bias` must be a positive number. Received: bias={bias!r}")
        for name, value in (("alpha", alpha), ("beta", beta)):
            if not _is_number(value) or value < 0:
                raise ValueError(
                    f"`{name}` must be a non-negative number. Received: {name}={value!r}"
                )
        self.depth_radius = int(depth_radius)
        self.bias = float(bias)
        self.alpha = float(alpha)
        self.beta = float(beta)

    def build(self, input_shape):
        if len(input_shape) < 2 or input_shape[-1] is None:
            raise ValueError(
                "`LocalResponseNormalization` needs inputs of rank >= 2 with a known number "
                f"of channels. Received: input_shape={tuple(input_shape)}"
            )

    def call(self, inputs):
        accumulation_dtype = "float32" if self.compute_dtype in ("float16", "bfloat16") else None
        x = inputs if accumulation_dtype is None else ops.cast(inputs, accumulation_dtype)
        channels = x.shape[-1]
        radius = self.depth_radius
        squares = ops.square(x)
        padded = ops.pad(squares, [[0, 0]] * (len(x.shape) - 1) + [[radius, radius]])
        window_sum = padded[..., 0:channels]
        for offset in range(1, 2 * radius + 1):
            window_sum = window_sum + padded[..., offset : offset + channels]
        outputs = x / ops.power(self.bias + self.alpha * window_sum, self.beta)
        return ops.cast(outputs, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "depth_radius": self.depth_radius,
                "bias": self.bias,
                "alpha": self.alpha,
                "beta": self.beta,
            }
        )
        return config


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@register_layer_analyzer(LocalResponseNormalization)
def _analyze_local_response_normalization(layer, input_shapes, output_shapes):
    """No weights and no spatial window: the sum runs over channels at one pixel."""
    return 0, LayerGeometry.identity()
