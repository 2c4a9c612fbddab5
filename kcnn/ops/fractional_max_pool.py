"""Fractional max-pooling (Graham 2014, arXiv:1412.6071): region boundaries and the pooling.

Along one axis of length `N_in`, fractional max-pooling keeps `N_out = floor(N_in / alpha)`
outputs for a ratio `alpha >= 1` (typically between 1 and 2, so that regions hold 1 or 2
pixels). Output `i` pools the rows `a_i <= r < a_{i+1}` (or `<= a_{i+1}` when regions
overlap) of a boundary sequence `0 = a_0 < a_1 < ... < a_{N_out} = N_in`. Graham draws the
sequence either

- *random*: the increments `a_{i+1} - a_i` are a random permutation of `N_out` values
  `floor(N_in / N_out)` or one more, with as many of the larger value as needed to reach
  `N_in` (`random_boundaries`), or
- *pseudo-random*: `a_i = ceil(alpha' * (i + u))` shifted to start at 0, with
  `alpha' = N_in / N_out` and `u` uniform in [0, 1) (`pseudo_random_boundaries`).

With `v = N_in * u` the pseudo-random boundaries are `ceil((N_in * i + v) / N_out)` minus
the same at `i = 0`; they depend on `v` only through the integer `ceil(v)`, so they are
computed exactly in integer arithmetic from an integer `offset = ceil(v)`.

Why not `tf.nn.fractional_max_pool`: it has no XLA kernel and is neither a TFLite builtin
nor a Flex op (the converter leaves it as a custom op), and it cannot pool with given
boundaries. Here the regions are pooled with `unsorted_segment_max` (one segment per output
row, then per output column) and, for overlapping regions, a `gather` of the shared boundary
row; both compile with XLA and are TFLite builtins.
"""

import math

from keras import ops


def fractional_output_length(input_length, pooling_ratio):
    """`floor(input_length / pooling_ratio)`, for an int or a scalar integer tensor."""
    if isinstance(input_length, int):
        return math.floor(input_length / pooling_ratio)
    ratio = ops.cast(input_length, "float64") / pooling_ratio
    return ops.cast(ops.floor(ratio), "int32")


def pseudo_random_boundaries(input_length, output_length, offset):
    """Boundaries `a_0..a_{N_out}` of Graham's pseudo-random sequence, as int32.

    Args:
        input_length: int or scalar int tensor `N_in`.
        output_length: int or scalar int tensor `N_out`, `1 <= N_out <= N_in`.
        offset: int or scalar int tensor `ceil(N_in * u)` for `u` in [0, 1); 0 gives the
            evenly spread `a_i = ceil(i * N_in / N_out)`.

    Returns:
        int32 tensor of shape `(N_out + 1,)` with `a_0 = 0` and `a_{N_out} = N_in`; every
        increment is `floor(N_in / N_out)` or one more.

    Example:

    >>> pseudo_random_boundaries(10, 7, 0).numpy().tolist()
    [0, 2, 3, 5, 6, 8, 9, 10]
    """
    index = ops.arange(output_length + 1, dtype="int32")
    ceiling = output_length - 1
    return (input_length * index + offset + ceiling) // output_length - (
        offset + ceiling
    ) // output_length


def random_boundaries(input_length, output_length, keys):
    """Boundaries whose increments are a random permutation, as int32.

    Args:
        input_length: int or scalar int tensor `N_in`.
        output_length: int or scalar int tensor `N_out`, `1 <= N_out <= N_in`.
        keys: float tensor of shape `(N_out,)` of distinct random values; the `N_in mod
            N_out` increments at the smallest keys are `floor(N_in / N_out) + 1`, the others
            `floor(N_in / N_out)`.

    Returns:
        int32 tensor of shape `(N_out + 1,)` from 0 to `N_in`.

    Example:

    >>> random_boundaries(10, 7, [0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8]).numpy().tolist()
    [0, 1, 3, 4, 6, 7, 9, 10]
    """
    base = input_length // output_length
    longer = input_length - base * output_length
    ranks = ops.argsort(ops.argsort(keys))
    increments = base + ops.cast(ranks < longer, "int32")
    return ops.concatenate([ops.zeros((1,), "int32"), ops.cumsum(increments)])


def fractional_max_pool(inputs, row_boundaries, col_boundaries, overlapping=False):
    """Max over the regions `[a_i, a_{i+1}) x [b_j, b_{j+1})` of an NHWC tensor.

    Args:
        inputs: tensor `(batch, H, W, channels)`.
        row_boundaries: int tensor `(H_out + 1,)` from 0 to `H`, strictly increasing.
        col_boundaries: int tensor `(W_out + 1,)` from 0 to `W`, strictly increasing.
        overlapping: bool. Whether each region also includes its closing boundary row and
            column (`a_{i+1}`, clipped to `H - 1`), shared with the next region. Defaults to
            `False`.

    Returns:
        Tensor `(batch, H_out, W_out, channels)`.

    Example:

    >>> import numpy as np
    >>> x = np.arange(25, dtype="float32").reshape(1, 5, 5, 1)
    >>> pooled = fractional_max_pool(x, [0, 2, 5], [0, 1, 3, 5])
    >>> np.asarray(pooled)[0, :, :, 0].tolist()
    [[5.0, 7.0, 9.0], [20.0, 22.0, 24.0]]
    """
    x = _pool_axis(inputs, ops.convert_to_tensor(row_boundaries, "int32"), 1, overlapping)
    return _pool_axis(x, ops.convert_to_tensor(col_boundaries, "int32"), 2, overlapping)


def _pool_axis(x, boundaries, axis, overlapping):
    length = x.shape[axis] if x.shape[axis] is not None else ops.shape(x)[axis]
    regions = boundaries.shape[0]
    regions = ops.shape(boundaries)[0] - 1 if regions is None else regions - 1
    # Region of each position: how many inner boundaries a_1..a_{N_out - 1} it has reached.
    positions = ops.arange(length, dtype="int32")
    region = ops.sum(
        ops.cast(ops.expand_dims(positions, 1) >= boundaries[None, 1:-1], "int32"), axis=1
    )
    moved = ops.moveaxis(x, axis, 0)
    pooled = ops.segment_max(moved, region, num_segments=regions)
    if overlapping:
        shared = ops.minimum(boundaries[1:], length - 1)
        pooled = ops.maximum(pooled, ops.take(moved, shared, axis=0))
    return ops.moveaxis(pooled, 0, axis)
