import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import kcnn  # noqa: F401  (registers the kcnn layers, as a user's import would)
from kcnn.analysis import analyze
from kcnn.layers import StochasticPooling2D

from . import citizenship
from .pooling_reference import pooled_geometry

RNG = np.random.default_rng(0)


def windows_reference(x, pool, stride, padding):
    """The non-negative activations of every window, as lists, by loops (padding omitted)."""
    x = np.maximum(np.asarray(x, np.float64), 0.0)
    batch, height, width, channels = x.shape
    out_h, top = pooled_geometry(height, pool[0], stride[0], padding)
    out_w, left = pooled_geometry(width, pool[1], stride[1], padding)
    windows = np.empty((batch, out_h, out_w, channels), dtype=object)
    for b in range(batch):
        for i in range(out_h):
            for j in range(out_w):
                for c in range(channels):
                    values = []
                    for dy in range(pool[0]):
                        for dx in range(pool[1]):
                            y, xx = i * stride[0] - top + dy, j * stride[1] - left + dx
                            if 0 <= y < height and 0 <= xx < width:
                                values.append(x[b, y, xx, c])
                    windows[b, i, j, c] = values
    return windows


def probability_weighted_reference(x, pool, stride, padding):
    """Zeiler & Fergus (2013), eq. 5: sum_i p_i a_i with p_i = a_i / sum_j a_j."""
    windows = windows_reference(x, pool, stride, padding)
    outputs = np.zeros(windows.shape)
    for index, values in np.ndenumerate(windows):
        values = np.array(values)
        total = values.sum()
        outputs[index] = (values * (values / total)).sum() if total > 0 else 0.0
    return outputs


def sparse_relu_like(shape):
    """Non-negative activations with many zeros and some all-zero windows."""
    x = np.maximum(RNG.standard_normal(shape), 0.0).astype("float32")
    x[:, :3, :3, :] = 0.0
    return x


CASES = [
    # (input shape, pool_size, strides, padding)
    ((2, 6, 6, 3), 2, None, "valid"),
    ((2, 7, 9, 2), 2, None, "same"),
    ((1, 9, 7, 2), 3, 2, "same"),
    ((1, 9, 7, 2), 3, 2, "valid"),
    ((1, 6, 7, 2), (2, 3), 1, "valid"),
]


def two_by_two_windows(x):
    """`(B, H, W, C)` -> `(B, H / 2, W / 2, C, 4)`: the values of each 2x2 window."""
    batch, height, width, channels = x.shape
    blocks = x.reshape(batch, height // 2, 2, width // 2, 2, channels)
    return blocks.transpose(0, 1, 3, 5, 2, 4).reshape(batch, height // 2, width // 2, channels, 4)


def _pair(value):
    return (value, value) if isinstance(value, int) else value


@pytest.mark.parametrize("shape, pool_size, strides, padding", CASES)
def test_inference_matches_numpy_reference(shape, pool_size, strides, padding):
    x = sparse_relu_like(shape)
    x[0, -1, -1, 0] = -5.0  # negative inputs count as 0
    layer = StochasticPooling2D(pool_size, strides, padding)
    outputs = np.asarray(layer(x), np.float64)
    pool, stride = _pair(pool_size), _pair(strides or pool_size)
    expected = probability_weighted_reference(x, pool, stride, padding)
    assert np.any(expected == 0.0) and np.any(expected > 0.0)
    np.testing.assert_allclose(outputs, expected, rtol=1e-6, atol=1e-7)
    assert layer.compute_output_shape(shape) == outputs.shape
    # Between average pooling of the positive part and max pooling.
    maximum = keras.layers.MaxPooling2D(pool, stride, padding)(np.maximum(x, 0))
    assert np.all(outputs <= np.asarray(maximum) + 1e-6)


@pytest.mark.parametrize("shape, pool_size, strides, padding", CASES)
def test_training_output_is_one_of_the_window_values(shape, pool_size, strides, padding):
    x = sparse_relu_like(shape)
    x[0, -1, -1, 0] = -5.0
    layer = StochasticPooling2D(pool_size, strides, padding, seed=1)
    windows = windows_reference(x, _pair(pool_size), _pair(strides or pool_size), padding)
    for _ in range(3):
        outputs = np.asarray(layer(x, training=True), np.float64)
        assert outputs.shape == windows.shape
        for index, values in np.ndenumerate(windows):
            positive = [value for value in values if value > 0]
            if not positive:
                assert outputs[index] == 0.0
            else:
                assert outputs[index] in positive  # never a zero of a non-zero window


def test_sampling_frequencies_match_the_probabilities():
    window = np.array([[1.0, 2.0], [0.0, 5.0]], "float32")  # p = 1/8, 2/8, 0, 5/8
    x = np.tile(window.reshape(1, 2, 2, 1), (1000, 1, 1, 3))  # 3000 windows per call
    samples = np.concatenate(
        [
            np.asarray(StochasticPooling2D(2, seed=seed)(x, training=True)).ravel()
            for seed in range(10)
        ]
    )
    frequencies = np.array([np.mean(samples == value) for value in (1.0, 2.0, 0.0, 5.0)])
    # 30,000 draws: the standard deviation of a frequency is at most 0.003.
    np.testing.assert_allclose(frequencies, [0.125, 0.25, 0.0, 0.625], atol=0.015)
    assert frequencies[2] == 0.0


def test_seed_makes_training_reproducible():
    x = sparse_relu_like((4, 8, 8, 3))
    first = StochasticPooling2D(2, seed=7)(x, training=True)
    again = StochasticPooling2D(2, seed=7)(x, training=True)
    other = StochasticPooling2D(2, seed=8)(x, training=True)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    layer = StochasticPooling2D(2, seed=7)
    assert not np.array_equal(layer(x, training=True), layer(x, training=True))


def test_inference_gradient():
    layer = StochasticPooling2D(2, dtype="float64")
    x = tf.constant(RNG.random((1, 4, 4, 2)) + 0.1)
    theoretical, numerical = tf.test.compute_gradient(layer, [x], delta=1e-6)
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-7)
    # d/da_i (sum a^2 / sum a) = (2 a_i S - Q) / S^2 for the first window of channel 0.
    window = np.asarray(x)[0, :2, :2, 0].ravel()
    total, squares = window.sum(), (window**2).sum()
    expected = (2 * window * total - squares) / total**2
    np.testing.assert_allclose(
        theoretical[0].reshape(2, 2, 2, 4, 4, 2)[0, 0, 0, :2, :2, 0].ravel(), expected
    )


def test_training_gradient_goes_to_the_sampled_activation():
    layer = StochasticPooling2D(2, seed=3)
    x = tf.constant(RNG.random((2, 4, 6, 3)).astype("float32") + 0.1)
    with tf.GradientTape() as tape:
        tape.watch(x)
        outputs = layer(x, training=True)
    gradient = np.asarray(tape.gradient(outputs, x))
    per_window = two_by_two_windows(gradient)
    assert np.all(per_window.sum(axis=-1) == 1.0) and np.all(np.isin(per_window, (0.0, 1.0)))
    picked = (two_by_two_windows(np.asarray(x)) * per_window).sum(axis=-1)
    np.testing.assert_array_equal(picked, outputs)


def small_model(seed=0):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = StochasticPooling2D(2, seed=seed)(x)
    return keras.Model(inputs, keras.layers.Conv2D(2, 1)(x))


def test_config_fit_and_file_round_trips(tmp_path):
    layer = StochasticPooling2D((3, 2), (2, 1), "SAME", seed=4, name="stochastic")
    assert layer.get_config()["padding"] == "same"
    citizenship.check_config_round_trip(layer)
    model = small_model()
    x = RNG.random((4, 8, 8, 3)).astype("float32")
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = [np.array(w) for w in model.trainable_weights]
    model.fit(x, RNG.random((4, 4, 4, 2)).astype("float32"), epochs=1, verbose=0)
    assert all(not np.allclose(a, b) for a, b in zip(before, model.trainable_weights, strict=True))
    citizenship.check_keras_file_round_trip(model, x, tmp_path)
    citizenship.check_saved_model_round_trip(model, x, tmp_path)


def test_jit_compile_and_mixed_precision():
    x = RNG.random((2, 8, 8, 3)).astype("float32")
    targets = RNG.random((2, 4, 4, 2)).astype("float32")
    citizenship.check_jit_compile(small_model, x, targets)
    citizenship.check_mixed_precision(small_model, x, targets)
    # Sampling under XLA is valid too: every output is one of its window's values.
    layer = StochasticPooling2D(2, seed=5)
    sampled = tf.function(lambda t: layer(t, training=True), jit_compile=True)(x)
    windows = two_by_two_windows(x)
    assert np.all(np.any(windows == np.asarray(sampled)[..., None], axis=-1))


def test_float16_inference_does_not_overflow():
    x = np.full((1, 2, 2, 1), 300.0, "float32")  # 300 ** 2 > 65,504
    outputs = StochasticPooling2D(2, dtype="mixed_float16")(x)
    assert outputs.dtype == "float16" and float(outputs[0, 0, 0, 0]) == 300.0


def test_tflite_builtins(tmp_path):
    x = RNG.random((1, 8, 8, 3)).astype("float32")
    citizenship.check_tflite_builtins(small_model(), x, tmp_path)


def test_analysis():
    model = small_model()
    analysis = analyze(model)
    record = next(r for r in analysis.layers if r.class_name == "StochasticPooling2D")
    assert (record.params, record.macs, record.receptive_field, record.jump) == (0, 0, 4, 2)
    assert analysis.total_params == model.count_params()
    assert analysis.unknown_layers == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(pool_size=(2, 0)),
            "`pool_size` must be a positive int or a tuple of 2 positive ints. "
            "Received: pool_size=(2, 0)",
        ),
        (
            dict(strides=-1),
            "`strides` must be a positive int or a tuple of 2 positive ints. Received: strides=-1",
        ),
        (dict(padding="full"), '`padding` must be "valid" or "same". Received: padding=\'full\''),
        (dict(seed="1"), "`seed` must be an int or None. Received: seed='1'"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        StochasticPooling2D(**kwargs)
