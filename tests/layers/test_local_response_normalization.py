import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import kcnn  # noqa: F401  (registers the kcnn layers, as a user's import would)
from kcnn.analysis import analyze
from kcnn.layers import LocalResponseNormalization

from . import citizenship

RNG = np.random.default_rng(0)


def lrn_reference(x, depth_radius, bias, alpha, beta):
    """Krizhevsky et al. (2012), section 3.3, by a loop over channels in float64."""
    x = np.asarray(x, np.float64)
    channels = x.shape[-1]
    outputs = np.zeros_like(x)
    for i in range(channels):
        low, high = max(0, i - depth_radius), min(channels - 1, i + depth_radius)
        energy = (x[..., low : high + 1] ** 2).sum(axis=-1)
        outputs[..., i] = x[..., i] / (bias + alpha * energy) ** beta
    return outputs


def small_model(**kwargs):
    inputs = keras.Input((5, 6, 7))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    return keras.Model(inputs, LocalResponseNormalization(**kwargs)(x))


@pytest.mark.parametrize(
    "depth_radius, bias, alpha, beta",
    [(2, 2.0, 1e-4, 0.75), (0, 1.0, 0.5, 1.0), (3, 1.0, 0.01, 0.5), (9, 0.5, 0.1, 0.75)],
)
def test_matches_numpy_reference_and_tf_lrn(depth_radius, bias, alpha, beta):
    # Large activations, so that the paper's alpha = 1e-4 visibly normalizes.
    x = RNG.standard_normal((2, 4, 5, 7)) * 30
    layer = LocalResponseNormalization(depth_radius, bias, alpha, beta, dtype="float64")
    expected = lrn_reference(x, depth_radius, bias, alpha, beta)
    np.testing.assert_allclose(layer(x), expected, rtol=1e-12)
    assert not np.allclose(expected, x / bias**beta, rtol=1e-3)
    tf_lrn = tf.nn.local_response_normalization(
        x.astype("float32"), depth_radius, bias, alpha, beta
    )
    np.testing.assert_allclose(tf_lrn, expected, rtol=1e-5)
    assert layer.compute_output_shape(x.shape) == x.shape


def test_alexnet_defaults():
    layer = LocalResponseNormalization()
    assert (layer.depth_radius, layer.bias, layer.alpha, layer.beta) == (2, 2.0, 1e-4, 0.75)
    x = RNG.standard_normal((1, 3, 3, 10)) * 100
    np.testing.assert_allclose(layer(x), lrn_reference(x, 2, 2.0, 1e-4, 0.75), rtol=1e-5)


def test_rank_2_and_unknown_sizes():
    x = RNG.standard_normal((3, 6))
    layer = LocalResponseNormalization(1, 1.0, 0.2, 0.5)
    np.testing.assert_allclose(layer(x), lrn_reference(x, 1, 1.0, 0.2, 0.5), rtol=1e-5)
    model = keras.Sequential([keras.Input((None, None, 4)), LocalResponseNormalization()])
    assert model(RNG.standard_normal((2, 3, 5, 4))).shape == (2, 3, 5, 4)


def test_gradients():
    layer = LocalResponseNormalization(1, 1.0, 0.3, 0.75, dtype="float64")
    x = tf.constant(RNG.standard_normal((1, 2, 3, 5)))
    theoretical, numerical = tf.test.compute_gradient(layer, [x], delta=1e-6)
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-7)
    # Each output depends on the channels within the radius only.
    jacobian = theoretical[0].reshape(2, 3, 5, 2, 3, 5)
    assert jacobian[0, 0, 0, 0, 0, 2] == 0.0 and jacobian[0, 0, 0, 0, 0, 1] != 0.0


def test_config_and_file_round_trips(tmp_path):
    citizenship.check_config_round_trip(LocalResponseNormalization(3, 1.5, 2e-5, 0.5, name="n"))
    model = small_model()
    x = RNG.standard_normal((2, 5, 6, 7)).astype("float32")
    citizenship.check_keras_file_round_trip(model, x, tmp_path)
    citizenship.check_saved_model_round_trip(model, x, tmp_path)


def test_jit_compile_and_mixed_precision():
    x = RNG.standard_normal((2, 5, 6, 7)).astype("float32")
    targets = RNG.standard_normal((2, 5, 6, 8)).astype("float32")
    citizenship.check_jit_compile(small_model, x, targets)
    citizenship.check_mixed_precision(small_model, x, targets)


def test_float16_sums_squares_in_float32():
    # 300 ** 2 = 90,000 overflows float16 (max 65,504); the sum is taken in float32.
    x = np.full((1, 1, 1, 4), 300.0, "float32")
    layer = LocalResponseNormalization(dtype="mixed_float16")
    outputs = np.asarray(layer(x))
    assert outputs.dtype == np.float16 and np.all(np.isfinite(outputs))
    expected = lrn_reference(x, 2, 2.0, 1e-4, 0.75)
    np.testing.assert_allclose(outputs.astype(np.float64), expected, rtol=2e-3)


def test_tflite_builtins(tmp_path):
    x = RNG.standard_normal((1, 5, 6, 7)).astype("float32") * 30
    citizenship.check_tflite_builtins(small_model(), x, tmp_path, atol=1e-4)


def test_analysis():
    model = small_model()
    analysis = analyze(model)
    record = analysis.layers[-1]
    assert record.class_name == "LocalResponseNormalization"
    assert (record.params, record.macs, record.receptive_field) == (0, 0, 3)
    assert analysis.unknown_layers == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(depth_radius=-1),
            "`depth_radius` must be a non-negative int. Received: depth_radius=-1",
        ),
        (
            dict(depth_radius=2.0),
            "`depth_radius` must be a non-negative int. Received: depth_radius=2.0",
        ),
        (dict(bias=0), "`bias` must be a positive number. Received: bias=0"),
        (dict(alpha=-1e-4), "`alpha` must be a non-negative number. Received: alpha=-0.0001"),
        (dict(beta="0.75"), "`beta` must be a non-negative number. Received: beta='0.75'"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        LocalResponseNormalization(**kwargs)


def test_unknown_channels():
    message = (
        "`LocalResponseNormalization` needs inputs of rank >= 2 with a known number of "
        "channels. Received: input_shape=(None, 4, None)"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        LocalResponseNormalization().build((None, 4, None))
