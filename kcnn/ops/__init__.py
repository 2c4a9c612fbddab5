"""Functional kernels that kcnn layers call."""

from kcnn.ops.argmax_pooling import max_pool_with_argmax, max_unpool
from kcnn.ops.deform_conv import deform_conv2d
from kcnn.ops.fft_conv import fft_conv2d
from kcnn.ops.fractional_max_pool import (
    fractional_max_pool,
    pseudo_random_boundaries,
    random_boundaries,
)
from kcnn.ops.gram import gram_matrix

__all__ = [
    "deform_conv2d",
    "fft_conv2d",
    "fractional_max_pool",
    "gram_matrix",
    "max_pool_with_argmax",
    "max_unpool",
    "pseudo_random_boundaries",
    "random_boundaries",
]
