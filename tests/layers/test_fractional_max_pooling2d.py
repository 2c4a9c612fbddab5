import math
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import kcnn  # noqa: F401  (registers the kcnn layers, as a user's import would)
from kcnn.analysis import analyze
from kcnn.layers import FractionalMaxPooling2D
from kcnn.ops import fractional_max_pool, pseudo_random_boundaries, random_boundaries

from . import citizenship
from .pooling_reference import tie_free

RNG = np.random.default_rng(0)


def region_max_reference(x, rows, cols, overlapping):
    """Max over [a_i, a_{i+1}) x [b_j, b_{j+1}) (closed, clipped, if overlapping), by loops."""
    x = np.asarray(x, np.float64)
    height, width = x.shape[1:3]
    outputs = np.zeros((x.shape[0], len(rows) - 1, len(cols) - 1, x.shape[3]))
    for i in range(len(rows) - 1):
        row_end = min(rows[i + 1], height - 1) if overlapping else rows[i + 1] - 1
        for j in range(len(cols) - 1):
            col_end = min(cols[j + 1], width - 1) if overlapping else cols[j + 1] - 1
            region = x[:, rows[i] : row_end + 1, cols[j] : col_end + 1, :]
            outputs[:, i, j, :] = region.max(axis=(1, 2))
    return outputs


def evenly_spread(length, output_length):
    """Inference boundaries: a_i = ceil(i * N_in / N_out)."""
    return [math.ceil(i * length / output_length) for i in range(output_length + 1)]


@pytest.mark.parametrize(
    "length, output_length", [(10, 7), (32, 22), (9, 4), (5, 5), (7, 1), (25, 12)]
)
def test_pseudo_random_boundaries_follow_graham_formula(length, output_length):
    alpha = length / output_length
    base = length // output_length
    for u in np.linspace(0.0, 0.999, 37):
        boundaries = np.asarray(
            pseudo_random_boundaries(length, output_length, math.ceil(length * u))
        )
        # a_i = ceil(alpha (i + u)) - ceil(alpha u), Graham (2014), section 2.
        index = np.arange(output_length + 1)
        expected = np.ceil(alpha * (index + u) - 1e-9) - math.ceil(alpha * u - 1e-9)
        np.testing.assert_array_equal(boundaries, expected)
        assert boundaries[0] == 0 and boundaries[-1] == length
        assert set(np.diff(boundaries)) <= {base, base + 1}


@pytest.mark.parametrize("length, output_length", [(10, 7), (32, 22), (9, 4), (7, 1)])
def test_random_boundaries_are_a_permutation_of_the_steps(length, output_length):
    base, longer = divmod(length, output_length)
    seen = set()
    for _ in range(20):
        boundaries = np.asarray(random_boundaries(length, output_length, RNG.random(output_length)))
        steps = np.diff(boundaries)
        assert boundaries[0] == 0 and boundaries[-1] == length
        assert sorted(steps) == [base] * (output_length - longer) + [base + 1] * longer
        seen.add(tuple(steps))
    if 0 < longer < output_length:
        assert len(seen) > 1


@pytest.mark.parametrize("overlapping", [False, True])
def test_pooling_matches_numpy_reference(overlapping):
    x = tie_free(RNG, (2, 11, 9, 3))
    for _ in range(5):
        rows = np.asarray(random_boundaries(11, 7, RNG.random(7)))
        cols = np.asarray(pseudo_random_boundaries(9, 6, int(RNG.integers(0, 9))))
        pooled = np.asarray(fractional_max_pool(x, rows, cols, overlapping), np.float64)
        np.testing.assert_array_equal(pooled, region_max_reference(x, rows, cols, overlapping))


@pytest.mark.parametrize("pseudo_random", [False, True])
@pytest.mark.parametrize("overlapping", [False, True])
def test_matches_tf_fractional_max_pool_on_its_own_sequences(pseudo_random, overlapping):
    x = tie_free(RNG, (2, 10, 13, 3))
    for seed in range(3):
        expected, rows, cols = tf.nn.fractional_max_pool(
            x, [1.0, 1.44, 1.73, 1.0], pseudo_random, overlapping, seed=seed + 1
        )
        pooled = fractional_max_pool(x, rows, cols, overlapping)
        np.testing.assert_array_equal(pooled, expected)
    layer = FractionalMaxPooling2D((1.44, 1.73))
    assert layer.compute_output_shape(x.shape) == tuple(expected.shape)


def test_tf_fractional_max_pool_is_neither_xla_nor_tflite_builtin():
    """Why the layer does not wrap `tf.nn.fractional_max_pool` (documented in its docstring)."""
    x = tie_free(RNG, (1, 6, 6, 1))

    def pool(inputs):
        return tf.nn.fractional_max_pool(inputs, [1.0, 1.5, 1.5, 1.0], True)[0]

    with pytest.raises(tf.errors.InvalidArgumentError, match="FractionalMaxPool"):
        tf.function(pool, jit_compile=True)(x)
    function = tf.function(pool, input_signature=[tf.TensorSpec((1, 6, 6, 1))])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    with pytest.raises(Exception, match="FractionalMaxPool"):
        converter.convert()


@pytest.mark.parametrize("overlapping", [False, True])
def test_inference_is_deterministic_with_evenly_spread_regions(overlapping):
    x = tie_free(RNG, (2, 11, 8, 2))
    layer = FractionalMaxPooling2D(1.414, overlapping=overlapping, seed=3)
    outputs = np.asarray(layer(x), np.float64)
    rows, cols = evenly_spread(11, 7), evenly_spread(8, 5)
    np.testing.assert_array_equal(outputs, region_max_reference(x, rows, cols, overlapping))
    np.testing.assert_array_equal(layer(x, training=False), layer(x))


@pytest.mark.parametrize("overlapping", [False, True])
def test_training_pools_over_one_of_the_pseudo_random_sequences(overlapping):
    x = tie_free(RNG, (1, 9, 7, 1))
    layer = FractionalMaxPooling2D((1.3, 1.6), pseudo_random=True, overlapping=overlapping)
    candidates = {
        (row_offset, col_offset): region_max_reference(
            x,
            np.asarray(pseudo_random_boundaries(9, 6, row_offset)),
            np.asarray(pseudo_random_boundaries(7, 4, col_offset)),
            overlapping,
        )
        for row_offset in range(9)
        for col_offset in range(7)
    }
    matched = set()
    for _ in range(12):
        outputs = np.asarray(layer(x, training=True), np.float64)
        matches = [key for key, value in candidates.items() if np.array_equal(outputs, value)]
        assert matches
        matched.add(tuple(candidates[matches[0]].ravel()))
    assert len(matched) > 1  # the regions move from call to call


def test_random_training_regions_are_permutations_of_one_and_two_pixels():
    # x[r, c] = 100 r + c grows along both axes, so a region's maximum is its bottom-right
    # pixel and the output spells out the region ends: out[i, j] = 100 (a_i+1 - 1) + b_j+1 - 1.
    rows, cols = np.meshgrid(np.arange(12), np.arange(10), indexing="ij")
    x = (100.0 * rows + cols).reshape(1, 12, 10, 1).astype("float32")
    layer = FractionalMaxPooling2D(1.5, pseudo_random=False, seed=1)
    seen = set()
    for _ in range(6):
        outputs = np.asarray(layer(x, training=True))[0, :, :, 0].astype(int)
        assert outputs.shape == (8, 6)
        row_ends, col_ends = outputs[:, 0] // 100 + 1, outputs[0, :] % 100 + 1
        np.testing.assert_array_equal(outputs, 100 * (row_ends[:, None] - 1) + col_ends - 1)
        row_steps = np.diff(np.concatenate([[0], row_ends]))
        col_steps = np.diff(np.concatenate([[0], col_ends]))
        assert sorted(row_steps) == [1] * 4 + [2] * 4 and sorted(col_steps) == [1] * 2 + [2] * 4
        seen.add((tuple(row_steps), tuple(col_steps)))
    assert len(seen) > 1


@pytest.mark.parametrize(
    "size, ratio, expected",
    [(32, 1.414, 22), (7, 1.4, 5), (10, 2.0, 5), (5, 1.0, 5), (3, 2.9, 1), (1414, 1.414, 1000)],
)
def test_output_size(size, ratio, expected):
    layer = FractionalMaxPooling2D(ratio)
    assert layer.compute_output_shape((1, size, size, 1)) == (1, expected, expected, 1)
    assert layer.compute_output_shape((None, None, size, 3)) == (None, None, expected, 3)


def test_unknown_spatial_sizes():
    model = keras.Sequential([keras.Input((None, None, 2)), FractionalMaxPooling2D(1.5)])
    for shape in [(1, 9, 12, 2), (2, 16, 7, 2)]:
        x = tie_free(RNG, shape)
        outputs = model.predict(x, verbose=0)
        rows = evenly_spread(shape[1], math.floor(shape[1] / 1.5))
        cols = evenly_spread(shape[2], math.floor(shape[2] / 1.5))
        np.testing.assert_array_equal(outputs, region_max_reference(x, rows, cols, False))


def test_gradient_goes_to_the_region_maxima():
    layer = FractionalMaxPooling2D(1.5, overlapping=True, dtype="float64")
    x = tf.constant(tie_free(RNG, (1, 6, 7, 2)).astype("float64"))
    theoretical, numerical = tf.test.compute_gradient(layer, [x], delta=1e-6)
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-7)
    assert set(np.unique(theoretical[0])) == {0.0, 1.0}
    assert np.all(theoretical[0].sum(axis=1) == 1.0)  # each output has one source


def small_model(overlapping=False):
    inputs = keras.Input((11, 11, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = FractionalMaxPooling2D(1.414, overlapping=overlapping, seed=0)(x)
    return keras.Model(inputs, keras.layers.Conv2D(2, 1)(x))


def test_config_fit_and_file_round_trips(tmp_path):
    layer = FractionalMaxPooling2D([1.5, 1.25], False, True, seed=3, name="fractional")
    assert layer.get_config()["pooling_ratio"] == (1.5, 1.25)
    citizenship.check_config_round_trip(layer)
    model = small_model()
    x = RNG.random((4, 11, 11, 3)).astype("float32")
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = [np.array(w) for w in model.trainable_weights]
    model.fit(x, RNG.random((4, 7, 7, 2)).astype("float32"), epochs=1, verbose=0)
    assert all(not np.allclose(a, b) for a, b in zip(before, model.trainable_weights, strict=True))
    citizenship.check_keras_file_round_trip(model, x, tmp_path)
    citizenship.check_saved_model_round_trip(model, x, tmp_path)


@pytest.mark.parametrize("pseudo_random", [False, True])
def test_jit_compile_and_mixed_precision(pseudo_random):
    x = RNG.random((2, 11, 11, 3)).astype("float32")
    targets = RNG.random((2, 7, 7, 2)).astype("float32")

    def model_fn():
        inputs = keras.Input((11, 11, 3))
        x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
        x = FractionalMaxPooling2D(1.414, pseudo_random=pseudo_random, seed=0)(x)
        return keras.Model(inputs, keras.layers.Conv2D(2, 1)(x))

    citizenship.check_jit_compile(model_fn, x, targets)
    citizenship.check_mixed_precision(model_fn, x, targets)


@pytest.mark.parametrize("overlapping", [False, True])
def test_tflite_builtins(tmp_path, overlapping):
    x = RNG.random((1, 11, 11, 3)).astype("float32")
    citizenship.check_tflite_builtins(small_model(overlapping), x, tmp_path)


def test_analysis():
    model = small_model()
    analysis = analyze(model)
    record = next(r for r in analysis.layers if r.class_name == "FractionalMaxPooling2D")
    assert record.output_shape == (None, 7, 7, 4)
    # Regions of at most 2 pixels at an average stride of 1.414, after a 3x3 conv.
    assert (record.params, record.macs, record.receptive_field) == (0, 0, 4)
    assert record.jump == pytest.approx(1.414)
    assert analysis.unknown_layers == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(pooling_ratio=0.5),
            "`pooling_ratio` must be a number >= 1 or a tuple of 2 numbers >= 1. "
            "Received: pooling_ratio=0.5",
        ),
        (
            dict(pooling_ratio=(1.5, 0.9)),
            "`pooling_ratio` must be a number >= 1 or a tuple of 2 numbers >= 1. "
            "Received: pooling_ratio=(1.5, 0.9)",
        ),
        (
            dict(pooling_ratio="2"),
            "`pooling_ratio` must be a number >= 1 or a tuple of 2 numbers >= 1. "
            "Received: pooling_ratio='2'",
        ),
        (dict(seed=1.5), "`seed` must be an int or None. Received: seed=1.5"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        FractionalMaxPooling2D(**kwargs)


def test_input_smaller_than_the_ratio():
    message = (
        "`FractionalMaxPooling2D` with pooling_ratio=(2.5, 2.5) needs a height and width of "
        "at least the ratio. Received: input_shape=(None, 2, 8, 3)"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        FractionalMaxPooling2D(2.5)(keras.Input((2, 8, 3)))
