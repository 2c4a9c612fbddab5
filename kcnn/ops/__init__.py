"""Functional kernels that kcnn layers call."""

from kcnn.ops.argmax_pooling import max_pool_with_argmax, max_unpool
from kcnn.ops.batch_norm import fused_batch_norm_training
from kcnn.ops.deform_conv import deform_conv2d
from kcnn.ops.fft_conv import fft_conv2d
from kcnn.ops.fractional_max_pool import (
    fractional_max_pool,
    pseudo_random_boundaries,
    random_boundaries,
)
from kcnn.ops.gram import gram_matrix
from kcnn.ops.roi_align import assign_pyramid_levels, multilevel_roi_align, roi_align
from kcnn.ops.smooth_fill import smooth_fill

__all__ = [
    "assign_pyramid_levels",
    "deform_conv2d",
    "fft_conv2d",
    "fractional_max_pool",
    "fused_batch_norm_training",
    "gram_matrix",
    "max_pool_with_argmax",
    "max_unpool",
    "multilevel_roi_align",
    "pseudo_random_boundaries",
    "random_boundaries",
    "roi_align",
    "smooth_fill",
]
