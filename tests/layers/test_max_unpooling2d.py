import keras
import numpy as np
import pytest
import tensorflow as tf

import kcnn  # noqa: F401  (registers the kcnn layers, as a user's import would)
from kcnn.layers import MaxPoolingWithArgmax2D, MaxUnpooling2D
from kcnn.ops import max_unpool

from . import citizenship, pooling_reference
from .test_max_pooling_with_argmax2d import CASES, _pair


@pytest.mark.parametrize("shape, pool_size, strides, padding", CASES)
def test_matches_numpy_reference(shape, pool_size, strides, padding):
    x = pooling_reference.tie_free(np.random.default_rng(0), shape)
    pooled, indices = MaxPoolingWithArgmax2D(pool_size, strides, padding)(x)
    unpool = MaxUnpooling2D(pool_size, strides, padding, output_size=shape[1:3])
    unpooled = unpool([pooled, indices])
    expected = pooling_reference.max_unpool(
        np.asarray(pooled, np.float64), np.asarray(indices), shape[1:3]
    )
    np.testing.assert_array_equal(np.asarray(unpooled, np.float64), expected)
    assert unpool.compute_output_shape([pooled.shape, indices.shape]) == shape
    # Re-pooling the unpooled map gives back the pooled values and the same indices.
    repooled, reindices = MaxPoolingWithArgmax2D(pool_size, strides, padding)(unpooled)
    np.testing.assert_array_equal(repooled, pooled)
    if _pair(strides or pool_size) == _pair(pool_size):
        np.testing.assert_array_equal(reindices, indices)


def test_default_output_size_and_like_input():
    x = pooling_reference.tie_free(np.random.default_rng(1), (1, 7, 7, 2))
    pooled, indices = MaxPoolingWithArgmax2D()(x)  # 7 -> 3, valid
    assert MaxUnpooling2D()([pooled, indices]).shape == (1, 6, 6, 2)
    restored = MaxUnpooling2D()([pooled, indices, x])
    assert restored.shape == x.shape
    assert MaxUnpooling2D(output_size=7)([pooled, indices]).shape == x.shape
    same_pooled, same_indices = MaxPoolingWithArgmax2D(padding="same")(x)  # 7 -> 4
    assert MaxUnpooling2D(padding="same")([same_pooled, same_indices]).shape == (1, 8, 8, 2)


def test_stride_larger_than_pool_leaves_gaps():
    x = pooling_reference.tie_free(np.random.default_rng(2), (1, 8, 8, 1))
    pooled, indices = MaxPoolingWithArgmax2D(2, 3)(x)
    unpooled = np.asarray(MaxUnpooling2D(2, 3, output_size=(8, 8))([pooled, indices]))
    assert np.count_nonzero(unpooled) == pooled.shape[1] * pooled.shape[2]
    assert np.all(unpooled[:, 2::3] == 0) and np.all(unpooled[:, :, 2::3] == 0)


@pytest.mark.parametrize("pool_size, strides", [(2, 2), (3, 2)])
def test_gradient(pool_size, strides):
    x = pooling_reference.tie_free(np.random.default_rng(3), (1, 7, 6, 2))
    pooled, indices = MaxPoolingWithArgmax2D(pool_size, strides, "same")(x)
    pooled = tf.constant(np.asarray(pooled), tf.float64)

    def unpool(values):
        return max_unpool(values, indices, _pair(pool_size), _pair(strides), "same", (7, 6))

    theoretical, numerical = tf.test.compute_gradient(unpool, [pooled], delta=1e-4)
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-6)
    # Each recorded position receives exactly one unit of gradient, shared among the pooled
    # copies that recorded it (overlapping windows can pick the same maximum).
    jacobian = theoretical[0].reshape(-1, pooled.shape.num_elements())
    flat_indices = np.asarray(indices).ravel()
    for index in np.unique(flat_indices):
        assert jacobian[:, flat_indices == index].sum() == pytest.approx(1.0)
    assert np.count_nonzero(jacobian.sum(axis=1)) == np.unique(flat_indices).size


def test_config_round_trip():
    citizenship.check_config_round_trip(MaxUnpooling2D((3, 3), 2, "same", output_size=(9, 7)))
    assert MaxUnpooling2D(output_size=5).get_config()["output_size"] == (5, 5)


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match=r"`output_size` must be a positive int .*output_size=0"):
        MaxUnpooling2D(output_size=0)
    with pytest.raises(ValueError, match=r"`padding` must be \"valid\" or \"same\""):
        MaxUnpooling2D(padding="causal")
    pooled = np.zeros((1, 2, 2, 3), "float32")
    with pytest.raises(ValueError, match=r"must be called on a list \[pooled, indices\]"):
        MaxUnpooling2D()(pooled)
    with pytest.raises(
        ValueError, match=r"`indices` must be a 4D tensor .*indices.shape=\(1, 2, 2\)"
    ):
        MaxUnpooling2D()([pooled, np.zeros((1, 2, 2), "int32")])
    with pytest.raises(ValueError, match="`pooled` and `indices` must have the same shape"):
        MaxUnpooling2D()([pooled, np.zeros((1, 2, 3, 3), "int32")])
    with pytest.raises(ValueError, match="must be called on a list"):
        MaxUnpooling2D()([keras.Input((2, 2, 3))])
