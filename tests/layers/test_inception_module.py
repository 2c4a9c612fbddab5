import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import kcnn  # noqa: F401  (registers the kcnn layers, as a user's import would)
from kcnn.analysis import analyze
from kcnn.layers import InceptionModule

from . import citizenship, conv_reference

RNG = np.random.default_rng(0)
FILTERS = (3, 2, 4, 1, 2, 3)  # 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj


def inception_reference(x, module):
    """Szegedy et al. (2015), figure 2(b), in float64 from the module's weights."""

    def conv(layer, inputs):
        kernel, bias = (np.asarray(w, np.float64) for w in layer.weights)
        pad = kernel.shape[0] // 2
        return conv_reference.relu(conv_reference.conv2d(inputs, kernel, bias, pad=pad))

    return np.concatenate(
        [
            conv(module.branch_1x1, x),
            conv(module.branch_3x3, conv(module.branch_3x3_reduce, x)),
            conv(module.branch_5x5, conv(module.branch_5x5_reduce, x)),
            conv(module.branch_pool_proj, conv_reference.max_pool_same(x)),
        ],
        axis=-1,
    )


def test_matches_numpy_reference():
    module = InceptionModule(*FILTERS, bias_initializer="random_normal")
    x = RNG.standard_normal((2, 7, 6, 5)).astype("float32")
    outputs = module(x)
    assert outputs.shape == (2, 7, 6, 3 + 4 + 2 + 3)
    expected = inception_reference(x.astype(np.float64), module)
    assert np.any(expected[..., 9:] > 0)  # the pool branch is not all zero
    np.testing.assert_allclose(outputs, expected, atol=1e-5)
    assert module.compute_output_shape((None, None, 6, 5)) == (None, None, 6, 12)


def test_paper_parameter_count_and_unknown_sizes():
    module = InceptionModule(64, 96, 128, 16, 32, 32)  # inception (3a) of table 1
    model = keras.Sequential([keras.Input((None, None, 192)), module])
    weights = 192 * (64 + 96 + 16 + 32) + 9 * 96 * 128 + 25 * 16 * 32
    assert module.count_params() == weights + (64 + 96 + 128 + 16 + 32 + 32)
    assert model(np.zeros((1, 5, 3, 192), "float32")).shape == (1, 5, 3, 256)


def test_gradients():
    module = InceptionModule(2, 1, 2, 1, 1, 1, activation="tanh", dtype="float64")
    x = tf.constant(RNG.standard_normal((1, 4, 4, 2)))
    theoretical, numerical = tf.test.compute_gradient(module, [x], delta=1e-6)
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-7)


def small_model():
    inputs = keras.Input((8, 8, 3))
    x = InceptionModule(*FILTERS, name="inception")(inputs)
    return keras.Model(inputs, keras.layers.Conv2D(2, 1)(x))


def test_config_fit_and_file_round_trips(tmp_path):
    module = InceptionModule(
        *FILTERS, activation="elu", kernel_regularizer=keras.regularizers.L2(1e-4), name="m"
    )
    citizenship.check_config_round_trip(module)
    assert module.get_config()["filters_pool_proj"] == 3
    # Seeded, and inputs of both signs: with an unseeded initialisation a ReLU channel could
    # be dead for all four positive inputs, its weights then rightly without a gradient.
    keras.utils.set_random_seed(0)
    model = small_model()
    x = RNG.standard_normal((4, 8, 8, 3)).astype("float32")
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = [np.array(w) for w in model.trainable_weights]
    model.fit(x, RNG.random((4, 8, 8, 2)).astype("float32"), epochs=1, verbose=0)
    moved = [not np.allclose(a, b) for a, b in zip(before, model.trainable_weights, strict=True)]
    assert all(moved)
    citizenship.check_keras_file_round_trip(model, x, tmp_path)
    citizenship.check_saved_model_round_trip(model, x, tmp_path)


def test_jit_compile_and_mixed_precision():
    x = RNG.random((2, 8, 8, 3)).astype("float32")
    targets = RNG.random((2, 8, 8, 2)).astype("float32")
    citizenship.check_jit_compile(small_model, x, targets)
    citizenship.check_mixed_precision(small_model, x, targets)


def test_tflite_builtins(tmp_path):
    citizenship.check_tflite_builtins(
        small_model(), RNG.random((1, 8, 8, 3)).astype("float32"), tmp_path
    )


def test_analysis():
    model = small_model()
    analysis = analyze(model)
    record = next(r for r in analysis.layers if r.class_name == "InceptionModule")
    per_pixel = 3 * (3 + 2 + 1 + 3) + 9 * 2 * 4 + 25 * 1 * 2
    assert record.macs == 8 * 8 * per_pixel
    assert record.params == model.get_layer("inception").count_params()
    assert (record.receptive_field, record.jump) == (5, 1)
    assert analysis.total_params == model.count_params()
    assert analysis.unknown_layers == []


def test_bad_arguments():
    message = "`filters_5x5_reduce` must be a positive int. Received: filters_5x5_reduce=0"
    with pytest.raises(ValueError, match=re.escape(message)):
        InceptionModule(1, 1, 1, 0, 1, 1)
    message = (
        "The number of channels of the inputs to `InceptionModule` must be known. "
        "Received: input_shape=(None, 4, 4, None)"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        InceptionModule(*FILTERS).build((None, 4, 4, None))
