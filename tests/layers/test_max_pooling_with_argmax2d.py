import keras
import numpy as np
import pytest
import tensorflow as tf

import kcnn  # noqa: F401  (registers the kcnn layers, as a user's import would)
from kcnn.layers import MaxPoolingWithArgmax2D, MaxUnpooling2D
from kcnn.ops import max_pool_with_argmax

from . import citizenship, pooling_reference

CASES = [
    # (input shape, pool_size, strides, padding)
    ((2, 8, 8, 3), 2, None, "valid"),
    ((2, 7, 9, 2), 2, None, "same"),
    ((2, 7, 9, 2), 2, None, "valid"),
    ((1, 9, 7, 2), 3, 2, "same"),
    ((1, 9, 7, 2), 3, 2, "valid"),
    ((1, 6, 7, 3), 3, 1, "same"),
    ((1, 10, 9, 1), (2, 3), (2, 3), "valid"),
    ((1, 10, 10, 2), 2, 3, "valid"),
]


def _pair(value):
    return (value, value) if isinstance(value, int) else value


@pytest.mark.parametrize("shape, pool_size, strides, padding", CASES)
def test_matches_numpy_reference_and_tf_max_pool_with_argmax(shape, pool_size, strides, padding):
    x = pooling_reference.tie_free(np.random.default_rng(0), shape)
    layer = MaxPoolingWithArgmax2D(pool_size, strides, padding)
    pooled, indices = layer(x)
    pool, stride = _pair(pool_size), _pair(strides or pool_size)
    expected_pooled, expected_indices = pooling_reference.max_pool_with_argmax(
        x.astype(np.float64), pool, stride, padding
    )
    np.testing.assert_array_equal(np.asarray(pooled, np.float64), expected_pooled)
    np.testing.assert_array_equal(indices, expected_indices)
    assert indices.dtype == "int32"
    tf_pooled, tf_indices = tf.nn.max_pool_with_argmax(
        x, pool, stride, padding.upper(), include_batch_in_index=False
    )
    np.testing.assert_array_equal(pooled, tf_pooled)
    np.testing.assert_array_equal(indices, tf_indices)
    assert layer.compute_output_shape(shape)[0] == tuple(pooled.shape)


def test_pooled_values_match_keras_max_pooling_with_ties():
    x = np.round(np.random.default_rng(1).random((2, 9, 9, 3)) * 4).astype("float32")  # ties
    pooled, indices = MaxPoolingWithArgmax2D(3, 2, "same")(x)
    expected = keras.layers.MaxPooling2D(3, 2, "same")(x)
    np.testing.assert_array_equal(pooled, expected)
    # Every index points at an input value equal to the pooled one.
    flat = x.reshape(2, -1)
    picked = np.take_along_axis(flat, np.asarray(indices).reshape(2, -1), axis=1)
    np.testing.assert_array_equal(picked, np.asarray(pooled).reshape(2, -1))


def test_int64_indices_and_float64():
    x = pooling_reference.tie_free(np.random.default_rng(2), (1, 6, 6, 2)).astype("float64")
    pooled, indices = MaxPoolingWithArgmax2D(index_dtype="int64", dtype="float64")(x)
    assert pooled.dtype == "float64" and indices.dtype == "int64"
    np.testing.assert_array_equal(
        indices, pooling_reference.max_pool_with_argmax(x, (2, 2), (2, 2), "valid")[1]
    )


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_gradient_routes_to_the_maxima(padding):
    x = tf.constant(pooling_reference.tie_free(np.random.default_rng(3), (1, 5, 7, 2)), tf.float64)

    def pooled_only(inputs):
        return max_pool_with_argmax(inputs, (2, 2), (2, 2), padding)[0]

    theoretical, numerical = tf.test.compute_gradient(pooled_only, [x], delta=1e-4)
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-6)
    # And it is the same gradient as Keras's MaxPooling2D.
    with tf.GradientTape() as tape:
        tape.watch(x)
        keras_pooled = keras.layers.MaxPooling2D(2, 2, padding, dtype="float64")(x)
    keras_gradient = tape.gradient(keras_pooled, x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        kcnn_pooled = pooled_only(x)
    np.testing.assert_array_equal(tape.gradient(kcnn_pooled, x), keras_gradient)


def segnet_block(channels=3, size=None):
    inputs = keras.Input((size, size, channels))
    features = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    pooled, indices = MaxPoolingWithArgmax2D()(features)
    pooled = keras.layers.Conv2D(4, 1)(pooled)
    unpooled = MaxUnpooling2D()([pooled, indices, features])
    outputs = keras.layers.Conv2D(2, 3, padding="same")(unpooled)
    return keras.Model(inputs, outputs)


def test_unknown_batch_and_spatial_size():
    model = segnet_block()
    assert model.output_shape == (None, None, None, 2)
    for shape in [(1, 8, 8, 3), (3, 7, 11, 3)]:
        x = np.random.default_rng(4).random(shape, dtype=np.float32)
        assert model(x).shape == shape[:3] + (2,)
    pool_layer = MaxPoolingWithArgmax2D(3, 2, "same")
    assert pool_layer.compute_output_shape((None, 7, None, 5)) == ((None, 4, None, 5),) * 2


def test_config_keras_file_and_saved_model(tmp_path):
    layer = MaxPoolingWithArgmax2D((3, 2), (2, 1), "SAME", index_dtype="int64")
    assert layer.get_config()["padding"] == "same"
    citizenship.check_config_round_trip(layer)
    model = segnet_block(size=8)
    x = np.random.default_rng(5).random((2, 8, 8, 3), dtype=np.float32)
    citizenship.check_keras_file_round_trip(model, x, tmp_path)
    citizenship.check_saved_model_round_trip(model, x, tmp_path)


def test_subclassed_model_trains():
    class Block(keras.Model):
        def __init__(self):
            super().__init__()
            self.pool = MaxPoolingWithArgmax2D()
            self.unpool = MaxUnpooling2D()
            self.head = keras.layers.Conv2D(1, 1)

        def call(self, inputs):
            pooled, indices = self.pool(inputs)
            return self.head(self.unpool([pooled, indices]))

    model = Block()
    model.compile(optimizer="sgd", loss="mse")
    x = np.random.default_rng(6).random((4, 8, 8, 2), dtype=np.float32)
    before = model.predict(x, verbose=0)
    model.fit(x, np.ones((4, 8, 8, 1), "float32"), epochs=2, verbose=0)
    assert not np.allclose(model.predict(x, verbose=0), before)


def test_jit_compile_and_mixed_precision():
    x = np.random.default_rng(7).random((2, 8, 8, 3), dtype=np.float32)
    targets = np.zeros((2, 8, 8, 2), "float32")
    citizenship.check_jit_compile(lambda: segnet_block(size=8), x, targets)
    citizenship.check_mixed_precision(lambda: segnet_block(size=8), x, targets)


def test_tflite_builtin_ops_only(tmp_path):
    x = np.random.default_rng(8).random((2, 9, 7, 3), dtype=np.float32)
    inputs = keras.Input((9, 7, 3))
    pooled, indices = MaxPoolingWithArgmax2D(3, 2, "same")(inputs)
    unpooled = MaxUnpooling2D(3, 2, "same", output_size=(9, 7))([pooled, indices])
    model = keras.Model(inputs, [pooled, keras.ops.cast(indices, "float32"), unpooled])
    citizenship.check_tflite_builtins(model, x, tmp_path)
    square = np.random.default_rng(9).random((2, 8, 8, 3), dtype=np.float32)
    (tmp_path / "segnet").mkdir()
    citizenship.check_tflite_builtins(segnet_block(size=8), square, tmp_path / "segnet")


def test_mirrored_strategy():
    citizenship.check_mirrored_strategy(
        """
        from kcnn.layers import MaxPoolingWithArgmax2D, MaxUnpooling2D
        def model_fn():
            inputs = keras.Input((8, 8, 3))
            features = keras.layers.Conv2D(4, 3, padding="same")(inputs)
            pooled, indices = MaxPoolingWithArgmax2D()(features)
            outputs = MaxUnpooling2D()([keras.layers.Conv2D(4, 1)(pooled), indices])
            return keras.Model(inputs, outputs)
        inputs = np.random.default_rng(0).random((4, 8, 8, 3), dtype=np.float32)
        targets = np.random.default_rng(1).random((4, 8, 8, 4), dtype=np.float32)
        """
    )


@pytest.mark.parametrize(
    "arguments, message",
    [
        (
            {"pool_size": (2, 0)},
            r"`pool_size` must be a positive int or a tuple of 2 positive ints. "
            r"Received: pool_size=\(2, 0\)",
        ),
        ({"strides": -1}, r"`strides` must be a positive int .* Received: strides=-1"),
        ({"padding": "full"}, r"`padding` must be \"valid\" or \"same\". Received: padding='full'"),
        ({"index_dtype": "int8"}, r"`index_dtype` must be \"int32\" or \"int64\""),
    ],
)
def test_bad_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        MaxPoolingWithArgmax2D(**arguments)


def test_bad_inputs():
    with pytest.raises(ValueError, match="expected ndim=4, found ndim=3"):
        MaxPoolingWithArgmax2D()(np.zeros((2, 4, 4), "float32"))
    with pytest.raises(ValueError, match="channel dimension .* must be known"):
        MaxPoolingWithArgmax2D()(keras.Input((4, 4, None)))
