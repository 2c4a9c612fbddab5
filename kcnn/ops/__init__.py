"""Functional kernels that kcnn layers call, written with `keras.ops`."""
