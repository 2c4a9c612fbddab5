"""The Gram matrix of feature maps: the texture statistic of style losses.

One implementation serves the style term of the inpainting loss (Liu et al. 2018,
`kcnn.tasks.inpainting_loss`) and neural style transfer (Gatys et al. 2016,
`kcnn.viz.style`), so both normalise the same way.
"""

import keras
from keras import ops

# float16 overflows at 65504: C H W is already 65536 for 64 maps of 32 x 32, and the sums of
# H W products overflow as easily, so 16-bit features are multiplied in float32.
_LOW_PRECISION = ("float16", "bfloat16")


def gram_matrix(features):
    """K_p (Psi^T Psi) of Liu et al. (2018), eq. (4): `(B, C, C)` with K_p = 1 / (C H W).

    Liu, Reda, Shih, Wang, Tao & Catanzaro, "Image Inpainting for Irregular Holes Using
    Partial Convolutions", 2018 (arXiv:1804.07723), eq. (4): with Psi the `(H W, C)` matrix
    of one image's feature maps, the Gram matrix is Psi^T Psi, whose entry (i, j) is the
    sum over all positions of the product of maps i and j, here divided by C H W. Gatys,
    Ecker & Bethge ("Image Style Transfer Using Convolutional Neural Networks", CVPR 2016)
    use the unnormalised Psi^T Psi; with N = C maps of M = H W positions it is this matrix
    times N M. Dividing makes it independent of the image size, so an image can be compared
    with a style image of another size.

    Args:
        features: float tensor `(B, H, W, C)`. Feature maps of B images.

    Returns:
        A `(B, C, C)` tensor, symmetric in its last two axes, of the dtype of `features`
        (float32 for float16 or bfloat16 features, which are multiplied in float32).

    Raises:
        ValueError: if `features` is not 4-D.

    Example:

    >>> import numpy as np
    >>> features = np.ones((1, 2, 3, 2), "float32")  # C H W = 12, each sum over 6 positions
    >>> gram_matrix(features).numpy().tolist()
    [[[0.5, 0.5], [0.5, 0.5]]]
    """
    features = ops.convert_to_tensor(features)
    if len(features.shape) != 4:
        raise ValueError(
            "`features` must be 4-D (batch, height, width, channels). "
            f"Received: features.shape={tuple(features.shape)}"
        )
    if keras.backend.standardize_dtype(features.dtype) in _LOW_PRECISION:
        features = ops.cast(features, "float32")
    shape = ops.shape(features)
    flat = ops.reshape(features, (shape[0], -1, shape[3]))
    normaliser = ops.cast(shape[1] * shape[2] * shape[3], features.dtype)
    return ops.matmul(ops.transpose(flat, (0, 2, 1)), flat) / normaliser
