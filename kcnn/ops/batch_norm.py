"""Batch normalization in training mode as one fused TensorFlow kernel.

Keras 3's `BatchNormalization` computes the batch moments and the normalization from separate
ops (`moments`, then `batch_normalization`), and its gradient from the gradients of each; on a
CPU those are several passes over every activation. TensorFlow's `FusedBatchNormV3` (the kernel
`tf.keras` used with `fused=True`) computes the moments and the normalization in one kernel,
and backwards all three gradients in another.

The result is Ioffe & Szegedy's (2015, arXiv:1502.03167, Algorithm 1) with the biased batch
variance, as Keras computes it: `y = gamma (x - mu_B) / sqrt(sigma_B^2 + epsilon) + beta`,
`sigma_B^2 = mean((x - mu_B)^2)` over the batch and spatial axes.
"""

import tensorflow as tf

# TensorFlow's fused kernel rejects a smaller epsilon (`tf.compat.v1.nn.fused_batch_norm`).
MIN_FUSED_EPSILON = 1.001e-5


def fused_batch_norm_training(inputs, scale, offset, epsilon):
    """Normalizes an NHWC float32 batch by its own moments, in one fused kernel.

    Args:
        inputs: float32 tensor `(N, H, W, C)`.
        scale: float32 `(C,)` (gamma), or None for ones.
        offset: float32 `(C,)` (beta), or None for zeros.
        epsilon: float, at least `MIN_FUSED_EPSILON`.

    Returns:
        `(outputs, mean, variance)`: the normalized batch and the batch mean and biased
        variance per channel (the values Keras's `BatchNormalization` folds into its moving
        averages).

    Raises:
        ValueError: if `inputs` is not 4-D or `epsilon` is below `MIN_FUSED_EPSILON`.

    Example:

    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(3.0, 2.0, (4, 5, 5, 2)).astype("float32")
    >>> y, mean, variance = fused_batch_norm_training(x, None, None, 1e-3)
    >>> bool(np.allclose(mean, x.mean(axis=(0, 1, 2)), atol=1e-5))
    True
    >>> bool(np.allclose(variance, x.var(axis=(0, 1, 2)), rtol=1e-5))
    True
    >>> bool(np.allclose(np.asarray(y).mean(axis=(0, 1, 2)), 0.0, atol=1e-5))
    True
    """
    if len(inputs.shape) != 4:
        raise ValueError(
            f"`inputs` must be a 4-D NHWC batch. Received: inputs.shape={tuple(inputs.shape)}"
        )
    if epsilon < MIN_FUSED_EPSILON:
        raise ValueError(
            f"`epsilon` must be at least {MIN_FUSED_EPSILON} for the fused kernel. "
            f"Received: epsilon={epsilon}"
        )
    inputs = tf.convert_to_tensor(inputs, tf.float32)
    channels = tf.shape(inputs)[-1:]
    scale = tf.ones(channels) if scale is None else tf.convert_to_tensor(scale, tf.float32)
    offset = tf.zeros(channels) if offset is None else tf.convert_to_tensor(offset, tf.float32)
    empty = tf.zeros([0])
    outputs, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
        x=inputs,
        scale=scale,
        offset=offset,
        mean=empty,
        variance=empty,
        epsilon=float(epsilon),
        exponential_avg_factor=1.0,
        data_format="NHWC",
        is_training=True,
    )
    # The kernel returns the Bessel-corrected variance (n / (n - 1) times the biased one) for
    # a running average; Keras averages the biased variance, which the output used.
    count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), tf.float32)
    variance = variance * (count - 1.0) / tf.maximum(count, 1.0)
    return outputs, mean, variance
