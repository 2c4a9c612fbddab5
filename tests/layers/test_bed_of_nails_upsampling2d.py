import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import kcnn  # noqa: F401  (registers the kcnn layers, as a user's import would)
from kcnn.analysis import analyze
from kcnn.layers import BedOfNailsUpsampling2D

from . import citizenship

RNG = np.random.default_rng(0)


def bed_of_nails_reference(x, size):
    """Zeros everywhere, the input at every (i * s_h, j * s_w), by loops in float64."""
    batch, height, width, channels = x.shape
    outputs = np.zeros((batch, height * size[0], width * size[1], channels))
    for i in range(height):
        for j in range(width):
            outputs[:, i * size[0], j * size[1], :] = x[:, i, j, :]
    return outputs


def small_model(height=5, width=6):
    inputs = keras.Input((height, width, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = BedOfNailsUpsampling2D((2, 3))(x)
    return keras.Model(inputs, keras.layers.Conv2D(2, 3, padding="same")(x))


@pytest.mark.parametrize("size", [2, (2, 3), (1, 4), (3, 1)])
def test_matches_numpy_reference(size):
    x = RNG.standard_normal((2, 3, 5, 4)).astype("float32")
    layer = BedOfNailsUpsampling2D(size)
    outputs = np.asarray(layer(x), np.float64)
    np.testing.assert_array_equal(outputs, bed_of_nails_reference(x, layer.size))
    assert layer.compute_output_shape(x.shape) == outputs.shape
    # No copies: the sum is kept, unlike nearest-neighbour upsampling.
    np.testing.assert_allclose(outputs.sum(), x.astype(np.float64).sum(), rtol=1e-6)


def test_unknown_batch_and_spatial_sizes():
    model = keras.Sequential([keras.Input((None, None, 2)), BedOfNailsUpsampling2D(2)])
    assert model.output_shape == (None, None, None, 2)
    for shape in [(1, 3, 4, 2), (3, 5, 2, 2)]:
        x = RNG.standard_normal(shape).astype("float32")
        np.testing.assert_array_equal(
            model.predict(x, verbose=0), bed_of_nails_reference(x, (2, 2))
        )


def test_gradient_is_the_strided_subsampling():
    layer = BedOfNailsUpsampling2D((2, 3), dtype="float64")
    x = tf.constant(RNG.standard_normal((1, 2, 3, 2)))
    theoretical, numerical = tf.test.compute_gradient(layer, [x], delta=1e-5)
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-9)
    upstream = RNG.standard_normal((1, 4, 9, 2))
    with tf.GradientTape() as tape:
        tape.watch(x)
        outputs = layer(x)
    gradient = tape.gradient(outputs, x, output_gradients=tf.constant(upstream))
    np.testing.assert_array_equal(gradient, upstream[:, ::2, ::3])


def test_config_and_file_round_trips(tmp_path):
    layer = BedOfNailsUpsampling2D([3, 2], name="nails")
    assert layer.get_config()["size"] == (3, 2)
    citizenship.check_config_round_trip(layer)
    model = small_model()
    x = RNG.standard_normal((2, 5, 6, 3)).astype("float32")
    citizenship.check_keras_file_round_trip(model, x, tmp_path)
    citizenship.check_saved_model_round_trip(model, x, tmp_path)


def test_fit_jit_compile_and_mixed_precision():
    x = RNG.standard_normal((2, 5, 6, 3)).astype("float32")
    targets = RNG.standard_normal((2, 10, 18, 2)).astype("float32")
    citizenship.check_jit_compile(small_model, x, targets)
    citizenship.check_mixed_precision(small_model, x, targets)


def test_tflite_builtins(tmp_path):
    x = RNG.standard_normal((1, 5, 6, 3)).astype("float32")
    citizenship.check_tflite_builtins(small_model(), x, tmp_path)


def test_analysis():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="down")(inputs)
    x = BedOfNailsUpsampling2D(2, name="nails")(x)
    x = keras.layers.Conv2D(4, 3, padding="same", name="fill")(x)
    analysis = analyze(keras.Model(inputs, x))
    records = {record.name: record for record in analysis.layers}
    nails, fill = records["nails"], records["fill"]
    assert nails.output_shape == (None, 8, 8, 4)
    # No window of its own: field 3 kept, jump 2 -> 1; the next 3x3 conv adds 2 pixels.
    assert (nails.params, nails.macs, nails.receptive_field, nails.jump) == (0, 0, 3, 1)
    assert (fill.receptive_field, fill.jump) == (5, 1)
    assert analysis.unknown_layers == []


@pytest.mark.parametrize(
    "size, message",
    [
        (
            (2, 0),
            "`size` must be a positive int or a tuple of 2 positive ints. Received: size=(2, 0)",
        ),
        (1.5, "`size` must be a positive int or a tuple of 2 positive ints. Received: size=1.5"),
    ],
)
def test_bad_arguments(size, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        BedOfNailsUpsampling2D(size)


def test_bad_input_rank():
    with pytest.raises(ValueError, match="expected ndim=4, found ndim=3"):
        BedOfNailsUpsampling2D()(np.zeros((2, 3, 4), "float32"))
