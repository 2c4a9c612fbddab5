"""NumPy float64 references for argmax pooling and max-unpooling (direct loops)."""

import math

import numpy as np


def pooled_geometry(size, pool, stride, padding):
    if padding == "valid":
        return (size - pool) // stride + 1, 0
    output = math.ceil(size / stride)
    return output, max((output - 1) * stride + pool - size, 0) // 2


def max_pool_with_argmax(x, pool, stride, padding):
    """Loops over images, output positions, channels and window taps."""
    batch, height, width, channels = x.shape
    out_h, top = pooled_geometry(height, pool[0], stride[0], padding)
    out_w, left = pooled_geometry(width, pool[1], stride[1], padding)
    pooled = np.zeros((batch, out_h, out_w, channels), np.float64)
    indices = np.zeros((batch, out_h, out_w, channels), np.int64)
    for b in range(batch):
        for i in range(out_h):
            for j in range(out_w):
                for c in range(channels):
                    best, best_index = -np.inf, -1
                    for dy in range(pool[0]):
                        for dx in range(pool[1]):
                            y, xx = i * stride[0] - top + dy, j * stride[1] - left + dx
                            if 0 <= y < height and 0 <= xx < width and x[b, y, xx, c] > best:
                                best, best_index = x[b, y, xx, c], (y * width + xx) * channels + c
                    pooled[b, i, j, c], indices[b, i, j, c] = best, best_index
    return pooled, indices


def max_unpool(pooled, indices, output_size):
    """Writes every pooled value at its flat index inside its own image."""
    batch, _, _, channels = pooled.shape
    height, width = output_size
    output = np.zeros((batch, height * width * channels), np.float64)
    for b in range(batch):
        for value, index in zip(pooled[b].ravel(), indices[b].ravel(), strict=True):
            output[b, index] = value
    return output.reshape(batch, height, width, channels)


def tie_free(rng, shape):
    """Random values with no ties (a permutation), so the argmax is unique."""
    return (rng.permutation(int(np.prod(shape))).reshape(shape) / np.prod(shape)).astype(np.float32)
