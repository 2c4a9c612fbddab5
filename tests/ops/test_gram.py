"""The shared Gram matrix against a float64 NumPy reference."""

import numpy as np
import pytest
import tensorflow as tf

from kcnn.ops import gram_matrix
from kcnn.tasks.inpainting import gram_matrix as inpainting_gram_matrix

RNG = np.random.default_rng(0)


def gram_reference(features):
    """Psi^T Psi / (C H W) per image, Psi the `(H W, C)` matrix of its feature maps."""
    batch, height, width, channels = features.shape
    grams = []
    for image in features.astype(np.float64):
        psi = image.reshape(height * width, channels)
        grams.append(psi.T @ psi / (channels * height * width))
    return np.stack(grams)


def test_gram_matrix_matches_numpy_on_a_batch_of_non_square_maps():
    features = RNG.normal(0.2, 1.0, (3, 5, 9, 4)).astype(np.float32)
    gram = np.asarray(gram_matrix(features))
    assert gram.shape == (3, 4, 4) and gram.dtype == np.float32
    np.testing.assert_allclose(gram, gram_reference(features), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(gram, np.transpose(gram, (0, 2, 1)), rtol=1e-6)
    # Each image on its own: no mixing across the batch.
    np.testing.assert_allclose(gram_matrix(features[1:2])[0], gram[1], rtol=1e-6)


def test_gram_matrix_with_unknown_spatial_size_in_a_graph():
    function = tf.function(
        gram_matrix, input_signature=[tf.TensorSpec((None, None, None, 6), tf.float32)]
    )
    features = RNG.random((2, 7, 3, 6)).astype(np.float32)
    np.testing.assert_allclose(function(features), gram_reference(features), rtol=1e-5)


def test_float16_features_are_multiplied_in_float32():
    # C H W = 64 * 32 * 32 = 65536 is beyond float16's largest value, 65504.
    features = RNG.random((1, 32, 32, 64)).astype(np.float16)
    gram = gram_matrix(features)
    assert gram.dtype == tf.float32
    np.testing.assert_allclose(gram, gram_reference(features), rtol=1e-5)


def test_the_inpainting_task_shares_the_one_implementation():
    assert inpainting_gram_matrix is gram_matrix


def test_gram_matrix_refuses_features_that_are_not_4d():
    with pytest.raises(ValueError, match=r"`features` must be 4-D .* features.shape=\(2, 5, 3\)"):
        gram_matrix(np.zeros((2, 5, 3), np.float32))
