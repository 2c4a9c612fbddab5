"""NumPy float64 references for convolution, batch norm and pooling (direct loops)."""

import numpy as np


def conv2d(x, kernel, bias=None, stride=1, pad=0):
    """Zero-padded `pad` pixels on every side, then a "valid" convolution of stride `stride`."""
    x = np.pad(np.asarray(x, np.float64), [(0, 0), (pad, pad), (pad, pad), (0, 0)])
    kernel = np.asarray(kernel, np.float64)
    batch, height, width, _ = x.shape
    kernel_h, kernel_w, _, filters = kernel.shape
    out_h = (height - kernel_h) // stride + 1
    out_w = (width - kernel_w) // stride + 1
    outputs = np.zeros((batch, out_h, out_w, filters))
    for i in range(out_h):
        for j in range(out_w):
            for p in range(kernel_h):
                for q in range(kernel_w):
                    outputs[:, i, j] += x[:, i * stride + p, j * stride + q] @ kernel[p, q]
    if bias is not None:
        outputs += np.asarray(bias, np.float64)
    return outputs


def batch_norm(x, gamma, beta, mean, variance, epsilon):
    """Inference-mode batch normalization with the moving statistics."""
    gamma, beta, mean, variance = (np.asarray(v, np.float64) for v in (gamma, beta, mean, variance))
    return (x - mean) / np.sqrt(variance + epsilon) * gamma + beta


def max_pool_same(x, pool=3):
    """Stride-1 max-pooling with "same" padding that never wins (odd `pool`)."""
    pad = pool // 2
    padded = np.pad(x, [(0, 0), (pad, pad), (pad, pad), (0, 0)], constant_values=-np.inf)
    outputs = np.full(x.shape, -np.inf)
    for p in range(pool):
        for q in range(pool):
            outputs = np.maximum(outputs, padded[:, p : p + x.shape[1], q : q + x.shape[2]])
    return outputs


def relu(x):
    return np.maximum(x, 0.0)
