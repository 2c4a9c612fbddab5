"""Functional kernels that kcnn layers call."""

from kcnn.ops.argmax_pooling import max_pool_with_argmax, max_unpool

__all__ = ["max_pool_with_argmax", "max_unpool"]
