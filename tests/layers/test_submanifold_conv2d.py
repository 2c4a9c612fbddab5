import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import kcnn  # noqa: F401  (registers the kcnn layers, as a user's import would)
from kcnn.analysis import analyze
from kcnn.layers import PartialConv2D, SubmanifoldConv2D

from . import citizenship
from .test_partial_conv2d import window_sums

RNG = np.random.default_rng(0)


def randn(*shape):
    return RNG.standard_normal(shape).astype("float32")


def sparse_mask(batch, height, width, density=0.3):
    """A few scattered active sites plus a thin line, as in sparse point-cloud or stroke data."""
    mask = (RNG.random((batch, height, width, 1)) < density).astype("float32")
    mask[:, height // 2, 1:-1, :] = 1.0
    return mask


def submanifold_reference(x, mask, kernel, bias, dilation, renormalize):
    """Graham & van der Maaten (2017): outputs at active sites only, in float64.

    With `renormalize`, the partial-convolution ratio sum(1) / count of Liu et al. (2018).
    """
    products, counts = window_sums(x, mask, kernel, (1, 1), "same", dilation)
    active = mask[..., 0] > 0
    if renormalize:
        full_window = kernel.shape[0] * kernel.shape[1]
        products = products * (full_window / np.where(active, counts, 1.0))[..., None]
    return np.where(active[..., None], products + bias, 0.0)


def layer_weights(layer):
    bias = np.asarray(layer.bias, np.float64) if layer.use_bias else 0.0
    return np.asarray(layer.kernel, np.float64), bias


@pytest.mark.parametrize(
    "kernel_size, dilation, renormalize, use_bias",
    [(3, 1, True, True), (3, 1, False, True), ((3, 5), 1, True, False), (3, 2, False, True)],
)
def test_matches_numpy_reference(kernel_size, dilation, renormalize, use_bias):
    layer = SubmanifoldConv2D(
        4,
        kernel_size,
        dilation_rate=dilation,
        renormalize=renormalize,
        use_bias=use_bias,
        bias_initializer="random_normal",
    )
    x, mask = randn(2, 9, 11, 3), sparse_mask(2, 9, 11)
    outputs, new_mask = layer([x, mask])
    kernel, bias = layer_weights(layer)
    expected = submanifold_reference(x, mask, kernel, bias, layer.dilation_rate, renormalize)
    np.testing.assert_allclose(outputs, expected, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(new_mask, mask)
    assert layer.compute_output_shape([x.shape, mask.shape]) == ((2, 9, 11, 4), (2, 9, 11, 1))


def test_without_renormalization_equals_conv2d_of_the_zero_filled_input():
    x, mask = randn(2, 8, 8, 3), sparse_mask(2, 8, 8)
    layer = SubmanifoldConv2D(5, 3, renormalize=False, bias_initializer="random_normal")
    outputs, _ = layer([x, mask])
    conv = keras.layers.Conv2D(5, 3, padding="same")
    conv.build(x.shape)
    conv.set_weights(layer.get_weights())
    expected = np.asarray(conv(x * mask)) * mask
    np.testing.assert_allclose(outputs, expected, atol=1e-5)


def test_stacking_never_grows_the_active_set():
    x, mask = randn(1, 12, 12, 2), sparse_mask(1, 12, 12, density=0.15)
    sparse, partial = (x, mask), (x, mask)
    for _ in range(4):
        sparse = SubmanifoldConv2D(3, 3, activation="relu", bias_initializer="ones")(list(sparse))
        partial = PartialConv2D(3, 3)(list(partial))
        outputs, active = (np.asarray(value) for value in sparse)
        np.testing.assert_array_equal(active, mask)
        # Inactive sites are exactly 0, bias and activation included.
        assert np.all(outputs[mask[..., 0] == 0] == 0.0)
        assert np.mean(outputs[mask[..., 0] == 1] > 0.0) > 0.2
    # A partial convolution dilates the valid set by the kernel at every layer instead.
    assert np.asarray(partial[1]).sum() > 2 * mask.sum()


def test_inactive_inputs_do_not_influence_active_outputs():
    x, mask = randn(1, 8, 8, 3), sparse_mask(1, 8, 8)
    layer = SubmanifoldConv2D(4, 3)
    outputs, _ = layer([x, mask])
    changed = x + 100.0 * (1.0 - mask)
    np.testing.assert_allclose(layer([changed, mask])[0], outputs, atol=1e-5)


def test_mask_is_binarized_and_cast():
    x, mask = randn(1, 6, 7, 3), sparse_mask(1, 6, 7)
    layer = SubmanifoldConv2D(2, 3)
    outputs, new_mask = layer([x, mask])
    for other in (mask.astype(bool), mask.astype("uint8"), mask * 0.25):
        other_outputs, other_mask = layer([x, other])
        assert other_mask.dtype == "float32"
        np.testing.assert_array_equal(other_mask, new_mask)
        np.testing.assert_allclose(other_outputs, outputs, atol=1e-6)


def test_gradients():
    layer = SubmanifoldConv2D(3, 3, activation="tanh", dtype="float64")
    x = tf.constant(RNG.standard_normal((1, 5, 6, 2)))
    mask = tf.constant(sparse_mask(1, 5, 6, density=0.4), tf.float64)
    layer.build([x.shape, mask.shape])

    def check(function, value):
        theoretical, numerical = tf.test.compute_gradient(function, [value], delta=1e-5)
        assert np.abs(theoretical[0]).max() > 0
        np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-6)
        return theoretical[0]

    jacobian = check(lambda inputs: layer([inputs, mask])[0], x)
    inactive = np.broadcast_to(np.asarray(mask) == 0, x.shape).reshape(-1)
    assert np.all(jacobian[:, inactive] == 0) and np.any(jacobian[:, ~inactive] != 0)

    def with_kernel(kernel):
        with keras.StatelessScope(state_mapping=[(layer.kernel, kernel)]):
            return layer([x, mask])[0]

    check(with_kernel, layer.kernel.value)


def two_input_model():
    image, mask = keras.Input((8, 9, 3), name="image"), keras.Input((8, 9, 1), name="mask")
    x, active = SubmanifoldConv2D(4, 3, activation="relu")([image, mask])
    x, active = SubmanifoldConv2D(2, 3, bias_initializer="random_normal")([x, active])
    return keras.Model([image, mask], [x, active])


def test_config_fit_and_file_round_trips(tmp_path):
    layer = SubmanifoldConv2D(
        8, (3, 5), dilation_rate=2, renormalize=False, activation="relu", name="ssc"
    )
    citizenship.check_config_round_trip(layer)
    config = layer.get_config()
    assert "strides" not in config and "padding" not in config and not config["renormalize"]
    model = two_input_model()
    inputs = [randn(4, 8, 9, 3), sparse_mask(4, 8, 9)]
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=["mse", None])
    before = [np.array(w) for w in model.get_weights()]
    model.fit(inputs, [randn(4, 8, 9, 2), None], batch_size=4, epochs=1, verbose=0)
    assert all(not np.allclose(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    citizenship.check_keras_file_round_trip(model, inputs, tmp_path)
    citizenship.check_saved_model_round_trip(model, inputs, tmp_path)


def test_jit_compile_and_mixed_precision():
    inputs = [randn(2, 8, 9, 3), sparse_mask(2, 8, 9)]
    targets = [randn(2, 8, 9, 2), sparse_mask(2, 8, 9)]
    citizenship.check_jit_compile(two_input_model, inputs, targets)

    def single_output():
        model = two_input_model()
        return keras.Model(model.inputs, model.outputs[0])

    citizenship.check_mixed_precision(single_output, inputs, targets[0])


def test_tflite_builtins(tmp_path):
    inputs = [randn(1, 8, 9, 3), sparse_mask(1, 8, 9)]
    citizenship.check_tflite_builtins(two_input_model(), inputs, tmp_path)


def test_analysis():
    model = two_input_model()
    analysis = analyze(model)
    records = [r for r in analysis.layers if r.class_name == "SubmanifoldConv2D"]
    assert [r.params for r in records] == [3 * 3 * 3 * 4 + 4, 3 * 3 * 4 * 2 + 2]
    # Dense-equivalent MACs (the sparse implementations of the paper skip inactive sites).
    assert [r.macs for r in records] == [8 * 9 * 9 * 3 * 4, 8 * 9 * 9 * 4 * 2]
    assert [r.receptive_field for r in records] == [3, 5]
    assert analysis.total_params == model.count_params()
    assert analysis.unknown_layers == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(filters=0), "`filters` must be a positive int. Received: filters=0"),
        (
            dict(kernel_size=(3, 2)),
            "`kernel_size` must be a positive odd int or a tuple of 2 positive odd ints. "
            "Received: kernel_size=(3, 2)",
        ),
        (
            dict(kernel_size=4),
            "`kernel_size` must be a positive odd int or a tuple of 2 positive odd ints. "
            "Received: kernel_size=4",
        ),
        (
            dict(dilation_rate=(1, 0)),
            "`dilation_rate` must be a positive int or a tuple of 2 positive ints. "
            "Received: dilation_rate=(1, 0)",
        ),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        SubmanifoldConv2D(**(dict(filters=4, kernel_size=3) | kwargs))


def test_bad_inputs():
    x = np.zeros((2, 7, 9, 3), "float32")
    with pytest.raises(ValueError, match=re.escape("`mask` must have 1 channel")):
        SubmanifoldConv2D(4, 3)([x, np.ones((2, 7, 9, 3), "float32")])
    single = (
        "`SubmanifoldConv2D` must be called on a list of two tensors `[x, mask]`. "
        "Received: a single input of shape (2, 7, 9, 3)"
    )
    with pytest.raises(ValueError, match=re.escape(single)):
        SubmanifoldConv2D(4, 3)(x)
    fixed = (
        '`SubmanifoldConv2D` does not take `strides`: it always has stride 1, "same" '
        "padding and a single-channel mask, so that it keeps the set of active sites. "
        "Received: strides=2"
    )
    with pytest.raises(TypeError, match=re.escape(fixed)):
        SubmanifoldConv2D(4, 3, strides=2)
