"""Fills the holes of an image with a smooth interpolation of its known pixels, in builtin ops.

The classical fill that a learned inpainting network refines (`kcnn.models.FillResidualUNet`)
and that exports to builtins-only TFLite: average pooling, bilinear resizing, mirror padding,
a depthwise convolution with a fixed kernel, and elementwise arithmetic.

Two classical pieces, coarse to fine:

- The pull-push pyramid of Gortler, Grzeszczuk, Szeliski & Cohen, "The Lumigraph" (SIGGRAPH
  1996), section 3.4.1: "pull" averages the known pixels of each 2x2 block into the next
  coarser level (a partial convolution with a 2x2 box kernel and stride 2: Liu et al. 2018,
  arXiv:1804.07723, eq. 1), a coarse pixel being known when any of its four children is;
  "push" fills each level's holes with the bilinear upsampling of the coarser level. The
  coarsest level's holes start at the mean of its known pixels.
- At every level, after the push, damped Jacobi sweeps of the discrete biharmonic equation
  `Δ²u = 0` in the holes, the known pixels held fixed: the interpolant that
  `skimage.restoration.inpaint_biharmonic` solves exactly (Damelin & Hoang, "On Surface
  Completion and Image Inpainting by Biharmonic Functions", 2018). The 13-point stencil of
  `Δ²` gives `20 u = 8 (4 edge neighbours) - 2 (4 diagonal) - (4 at distance 2)`; plain Jacobi
  on it diverges (the iteration's eigenvalues reach `1 - 64/20`), so each sweep moves half
  way: `u <- u / 2 + stencil(u) / 2`, whose eigenvalues lie in `[-0.6, 1)`. The pyramid gives
  the sweeps a start that is already right at coarse scales, where Jacobi is slow.

Image borders are mirrored (`reflect`), so the fill has no pull towards 0 at the edge.
"""

import numpy as np
from keras import ops

from kcnn._validation import check_positive_int

# The 13-point stencil of the biharmonic operator (see the module docstring), as the
# weights of the damped Jacobi sweep `u / 2 + (8 N4 - 2 D4 - N4') / 40`.
_BIHARMONIC_SWEEP = np.zeros((5, 5), np.float32)
_BIHARMONIC_SWEEP[[1, 3, 2, 2], [2, 2, 1, 3]] = 8.0 / 40.0
_BIHARMONIC_SWEEP[[1, 1, 3, 3], [1, 3, 1, 3]] = -2.0 / 40.0
_BIHARMONIC_SWEEP[[0, 4, 2, 2], [2, 2, 0, 4]] = -1.0 / 40.0
_BIHARMONIC_SWEEP[2, 2] = 0.5
# The coarsest pyramid level keeps at least this many pixels per side (the 5x5 stencil's
# mirror padding needs more than 2).
MIN_LEVEL_SIZE = 4


def pyramid_levels(height, width, levels=None):
    """How many 2x2 halvings the fill's pyramid makes for an image of this size.

    Args:
        height, width: int. The image size.
        levels: int or None. An upper bound; `None` halves while the result keeps at least
            `MIN_LEVEL_SIZE` (4) pixels per side.

    Returns:
        int >= 0.
    """
    count = 0
    while min(height, width) // 2 >= MIN_LEVEL_SIZE and (levels is None or count < levels):
        height, width, count = height // 2, width // 2, count + 1
    return count


def _pull(values, known):
    """One pull step: the mean of the known pixels of each 2x2 block, and whether any was
    known."""
    sums = ops.average_pool(values * known, 2, 2, padding="valid")
    counts = ops.average_pool(known, 2, 2, padding="valid")
    coarse_known = ops.cast(counts > 0, values.dtype)
    return sums / ops.maximum(counts, 0.25), coarse_known


def _biharmonic_sweeps(values, known, iterations):
    """`iterations` damped Jacobi sweeps of `Δ²u = 0` where `known` is 0."""
    kernel = ops.cast(
        np.repeat(_BIHARMONIC_SWEEP[:, :, np.newaxis, np.newaxis], values.shape[-1], 2),
        values.dtype,
    )
    fixed = values * known
    free = 1.0 - known
    for _ in range(iterations):
        padded = ops.pad(values, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
        values = fixed + free * ops.depthwise_conv(padded, kernel, padding="valid")
    return values


def smooth_fill(images, mask, iterations=40, coarse_iterations=20, levels=None):
    """Fills the holes of `images` with a smooth interpolation of the known pixels.

    The pull-push pyramid of Gortler et al. (1996), refined at every level by damped Jacobi
    sweeps of the biharmonic equation (see the module docstring). The known pixels are
    returned unchanged. More sweeps bring the fill closer to the exact biharmonic
    interpolant (`skimage.restoration.inpaint_biharmonic`); 40 at full resolution and 20 at
    each coarser level come within 1.5 dB of it on 64x64 photo crops with 50-60% holes.

    Args:
        images: float tensor `(B, H, W, C)` with static `H`, `W` and `C`. Hole pixels may
            hold anything: they are never read.
        mask: float tensor `(B, H, W, 1)` or `(B, H, W, C)`, 1 = known, 0 = hole.
        iterations: int >= 0. Sweeps at full resolution. Defaults to `40`.
        coarse_iterations: int >= 0. Sweeps at each coarser level. Defaults to `20`.
        levels: int >= 0 or None. Pyramid levels below full resolution; `None` halves
            while the coarsest level keeps 4 pixels per side (`pyramid_levels`).

    Returns:
        A tensor like `images`: the known pixels of `images` and the fill in the holes. A
        constant image is filled with its constant; a hole that covers the whole image is
        filled with 0.

    Raises:
        ValueError: if `iterations`, `coarse_iterations` or `levels` is not a non-negative
            int, or the height, width or channels of `images` are not known.

    Example:

    >>> import numpy as np
    >>> ramp = np.tile(np.linspace(0, 1, 16, dtype="float32"), (16, 1))[None, :, :, None]
    >>> mask = np.ones_like(ramp); mask[:, 6:10, 6:10] = 0
    >>> filled = smooth_fill(ramp * mask, mask, iterations=200)
    >>> bool(np.abs(np.asarray(filled) - ramp).max() < 1e-3)
    True
    """
    iterations = check_positive_int(iterations, "iterations", minimum=0)
    coarse_iterations = check_positive_int(coarse_iterations, "coarse_iterations", minimum=0)
    if levels is not None:
        levels = check_positive_int(levels, "levels", minimum=0)
    images = ops.convert_to_tensor(images)
    if None in tuple(images.shape[1:]):
        raise ValueError(
            "`images` must have a known height, width and channels. "
            f"Received: images.shape={tuple(images.shape)}"
        )
    mask = ops.cast(ops.convert_to_tensor(mask), images.dtype)
    if mask.shape[-1] != images.shape[-1]:
        mask = ops.repeat(mask, images.shape[-1], axis=-1)
    levels = pyramid_levels(images.shape[1], images.shape[2], levels)
    pyramid = [(images * mask, mask)]
    for _ in range(levels):
        pyramid.append(_pull(*pyramid[-1]))
    # The coarsest level's holes start at the mean of its known pixels, so a constant image
    # is filled with its constant whatever the number of sweeps.
    values, known = pyramid[-1]
    sums = ops.sum(values * known, axis=(1, 2), keepdims=True)
    counts = ops.sum(known, axis=(1, 2), keepdims=True)
    filled = values * known + (1.0 - known) * sums / ops.maximum(counts, 1.0)
    for level in reversed(range(levels + 1)):
        values, known = pyramid[level]
        if level < levels:
            size = (values.shape[1], values.shape[2])
            filled = values * known + (1.0 - known) * ops.image.resize(
                filled, size, interpolation="bilinear"
            )
        sweeps = iterations if level == 0 else coarse_iterations
        filled = _biharmonic_sweeps(filled, known, sweeps)
    return filled
