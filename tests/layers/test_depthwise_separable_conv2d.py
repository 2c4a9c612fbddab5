import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import kcnn  # noqa: F401  (registers the kcnn layers, as a user's import would)
from kcnn.analysis import analyze
from kcnn.layers import DepthwiseSeparableConv2D

from . import citizenship

RNG = np.random.default_rng(0)


def randn(*shape, dtype="float32"):
    return RNG.standard_normal(shape).astype(dtype)


def output_size_and_pad_before(size, kernel, stride, dilation, padding):
    """Output length and zeros added before the input, by TensorFlow's SAME / VALID rules."""
    span = (kernel - 1) * dilation + 1
    if padding == "valid":
        return (size - span) // stride + 1, 0
    out = -(-size // stride)
    total = max((out - 1) * stride + span - size, 0)
    return out, total // 2


def depthwise_separable_reference(
    x,
    depthwise_kernel,
    depthwise_bias,
    pointwise_kernel,
    pointwise_bias,
    strides,
    padding,
    dilation,
):
    """Bare factorisation in float64 by direct loops over output positions and kernel taps."""
    x = x.astype(np.float64)
    batch, height, width, channels = x.shape
    kernel_h, kernel_w, _, multiplier = depthwise_kernel.shape
    out_h, top = output_size_and_pad_before(height, kernel_h, strides[0], dilation[0], padding)
    out_w, left = output_size_and_pad_before(width, kernel_w, strides[1], dilation[1], padding)
    depthwise = np.zeros((batch, out_h, out_w, channels * multiplier))
    for i in range(out_h):
        for j in range(out_w):
            for p in range(kernel_h):
                for q in range(kernel_w):
                    row = i * strides[0] + p * dilation[0] - top
                    col = j * strides[1] + q * dilation[1] - left
                    if not (0 <= row < height and 0 <= col < width):
                        continue
                    for c in range(channels):
                        for k in range(multiplier):
                            # Keras orders depthwise outputs channel-major: c * m + k.
                            depthwise[:, i, j, c * multiplier + k] += (
                                x[:, row, col, c] * depthwise_kernel[p, q, c, k]
                            )
    depthwise += depthwise_bias
    outputs = np.zeros((batch, out_h, out_w, pointwise_kernel.shape[-1]))
    for i in range(out_h):
        for j in range(out_w):
            outputs[:, i, j, :] = depthwise[:, i, j, :] @ pointwise_kernel + pointwise_bias
    return outputs


def bare_layer(filters, kernel_size, **kwargs):
    return DepthwiseSeparableConv2D(
        filters, kernel_size, normalization=None, activation=None, **kwargs
    )


def small_model(**kwargs):
    inputs = keras.Input((7, 9, 3), name="image")
    outputs = DepthwiseSeparableConv2D(4, 3, **kwargs)(inputs)
    return keras.Model(inputs, outputs)


def test_output_shapes_and_weights():
    layer = DepthwiseSeparableConv2D(6, 3, strides=2, depth_multiplier=2)
    outputs = layer(randn(2, 7, 9, 3))
    assert tuple(outputs.shape) == (2, 4, 5, 6)
    assert layer.compute_output_shape((2, 7, 9, 3)) == (2, 4, 5, 6)
    # normalization="batch": no conv biases, BN has gamma, beta, moving mean and variance.
    assert layer.depthwise.bias is None and layer.pointwise.bias is None
    assert layer.count_params() == 3 * 3 * 3 * 2 + 3 * 2 * 6 + 4 * (3 * 2) + 4 * 6
    assert len(layer.trainable_weights) == 6

    bare = bare_layer(5, (3, 2), padding="valid", dilation_rate=(2, 1))
    assert tuple(bare(randn(1, 8, 6, 2)).shape) == (1, 4, 5, 5)
    assert bare.count_params() == 3 * 2 * 2 + 2 + 2 * 5 + 5


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_unknown_batch_and_spatial_dimensions(padding):
    layer = DepthwiseSeparableConv2D(4, 3, strides=2, padding=padding)
    assert layer.compute_output_shape((None, None, None, 3)) == (None, None, None, 4)
    symbolic = layer(keras.Input((None, None, 3)))
    assert tuple(symbolic.shape) == (None, None, None, 4)
    for height, width in [(7, 9), (8, 5)]:
        real = layer(randn(2, height, width, 3))
        assert tuple(real.shape) == layer.compute_output_shape((2, height, width, 3))


def test_config_round_trip():
    layer = DepthwiseSeparableConv2D(
        8,
        (3, 5),
        strides=(2, 1),
        padding="VALID",
        depth_multiplier=2,
        use_bias=False,
        normalization=None,
        activation="relu6",
        depthwise_initializer="he_normal",
        pointwise_regularizer=keras.regularizers.L2(1e-4),
        bias_constraint="non_neg",
        batch_norm_momentum=0.9,
        name="block",
    )
    assert layer.get_config()["padding"] == "valid"
    citizenship.check_config_round_trip(layer)
    clone = DepthwiseSeparableConv2D.from_config(layer.get_config())
    assert clone.kernel_size == (3, 5) and clone.strides == (2, 1)
    assert clone.activation is keras.activations.relu6


def trained_model():
    keras.utils.set_random_seed(1)
    model = small_model(strides=2, depth_multiplier=2)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = [np.array(w) for w in model.get_weights()]
    model.fit(randn(4, 7, 9, 3), randn(4, 4, 5, 4), batch_size=4, epochs=1, verbose=0)
    after = model.get_weights()
    # One step moved the kernels and the batch-norm moving statistics.
    assert all(not np.allclose(a, b) for a, b in zip(before, after, strict=True))
    return model


def test_fit_one_step_and_keras_file_round_trip(tmp_path):
    citizenship.check_keras_file_round_trip(trained_model(), randn(2, 7, 9, 3), tmp_path)


def test_saved_model_round_trip(tmp_path):
    citizenship.check_saved_model_round_trip(small_model(), randn(2, 7, 9, 3), tmp_path)


def test_sequential_and_subclassed_models():
    sequential = keras.Sequential(
        [
            keras.Input((7, 9, 3)),
            DepthwiseSeparableConv2D(4, 3, strides=2),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
        ]
    )

    class Classifier(keras.Model):
        def __init__(self):
            super().__init__()
            self.block = DepthwiseSeparableConv2D(4, 3, normalization=None)
            self.pool = keras.layers.GlobalAveragePooling2D()

        def call(self, inputs):
            return self.pool(self.block(inputs))

    inputs = randn(4, 7, 9, 3)
    for model, targets in [(sequential, randn(4, 2)), (Classifier(), randn(4, 4))]:
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        model(inputs)
        before = [np.array(w) for w in model.trainable_weights]
        model.fit(inputs, targets, batch_size=4, epochs=1, verbose=0)
        moved = [
            not np.allclose(a, b) for a, b in zip(before, model.trainable_weights, strict=True)
        ]
        assert all(moved)


def test_mixed_precision():
    citizenship.check_mixed_precision(
        lambda: small_model(depth_multiplier=2), randn(2, 7, 9, 3), randn(2, 7, 9, 4)
    )


def test_jit_compile():
    citizenship.check_jit_compile(
        lambda: small_model(strides=2), randn(2, 7, 9, 3), randn(2, 4, 5, 4)
    )


def test_mirrored_strategy():
    # Batch normalization computes its statistics per replica (half the global batch), so
    # a mirrored step only equals a one-device step without it (or with synchronized BN).
    citizenship.check_mirrored_strategy(
        """
        from kcnn.layers import DepthwiseSeparableConv2D

        def model_fn():
            inputs = keras.Input((7, 9, 3))
            outputs = DepthwiseSeparableConv2D(4, 3, depth_multiplier=2, normalization=None)(
                inputs
            )
            return keras.Model(inputs, outputs)

        rng = np.random.default_rng(0)
        inputs = rng.standard_normal((4, 7, 9, 3)).astype("float32")
        targets = rng.standard_normal((4, 7, 9, 4)).astype("float32")
        """
    )


def test_tflite_builtins(tmp_path):
    model = small_model(strides=2, depth_multiplier=2)
    citizenship.check_tflite_builtins(model, randn(1, 7, 9, 3), tmp_path)


@pytest.mark.parametrize(
    "kernel_size, strides, padding, dilation, multiplier",
    [
        (3, 1, "same", 1, 1),
        (3, 2, "same", 1, 2),
        ((2, 3), 2, "same", 1, 1),
        (3, (2, 1), "valid", 1, 2),
        (3, 1, "valid", 2, 2),
        ((3, 2), 1, "same", (2, 1), 1),
    ],
)
def test_bare_factorisation_matches_numpy_reference(
    kernel_size, strides, padding, dilation, multiplier
):
    layer = bare_layer(
        4,
        kernel_size,
        strides=strides,
        padding=padding,
        dilation_rate=dilation,
        depth_multiplier=multiplier,
        bias_initializer="random_normal",
    )
    x = randn(2, 9, 7, 3)
    outputs = np.asarray(layer(x))
    expected = depthwise_separable_reference(
        x,
        np.asarray(layer.depthwise.kernel, np.float64),
        np.asarray(layer.depthwise.bias, np.float64),
        np.asarray(layer.pointwise.kernel, np.float64)[0, 0],
        np.asarray(layer.pointwise.bias, np.float64),
        layer.strides,
        padding,
        layer.dilation_rate,
    )
    assert outputs.shape == expected.shape
    np.testing.assert_allclose(outputs, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("use_bias", [True, False])
def test_bare_factorisation_equals_keras_separable_conv2d(use_bias):
    kwargs = dict(strides=2, padding="same", depth_multiplier=2)
    layer = bare_layer(5, 3, use_bias=use_bias, **kwargs)
    separable = keras.layers.SeparableConv2D(5, 3, use_bias=use_bias, **kwargs)
    x = randn(2, 9, 7, 3)
    layer.build(x.shape)
    separable.build(x.shape)
    layer.depthwise.kernel.assign(separable.depthwise_kernel)
    layer.pointwise.kernel.assign(separable.pointwise_kernel)
    if use_bias:
        bias = randn(5)
        separable.bias.assign(bias)
        # The depthwise bias of the bare block is redundant with the pointwise one.
        layer.depthwise.bias.assign(np.zeros(6, "float32"))
        layer.pointwise.bias.assign(bias)
    np.testing.assert_allclose(np.asarray(layer(x)), np.asarray(separable(x)), atol=1e-5)


def test_batch_normalization_and_activation_order():
    layer = DepthwiseSeparableConv2D(4, 3, activation="relu")
    x = randn(2, 7, 9, 3)
    layer.build(x.shape)
    for norm in (layer.depthwise_norm, layer.pointwise_norm):
        size = norm.gamma.shape[0]
        norm.gamma.assign(1.0 + np.abs(randn(size)))
        norm.beta.assign(randn(size))
        norm.moving_mean.assign(randn(size))
        norm.moving_variance.assign(1.0 + np.abs(randn(size)))

    def inference_norm(values, norm):
        return (values - norm.moving_mean) / np.sqrt(
            norm.moving_variance + norm.epsilon
        ) * norm.gamma + norm.beta

    depthwise = np.maximum(inference_norm(layer.depthwise(x), layer.depthwise_norm), 0)
    expected = np.maximum(inference_norm(layer.pointwise(depthwise), layer.pointwise_norm), 0)
    np.testing.assert_allclose(layer(x, training=False), expected, atol=1e-5)


def test_gradients():
    # tanh between the stages makes the block non-linear in x and in both kernels.
    layer = DepthwiseSeparableConv2D(
        3, 3, strides=2, depth_multiplier=2, normalization=None, activation="tanh", dtype="float64"
    )
    x = tf.constant(RNG.standard_normal((2, 5, 6, 2)))
    layer.build(x.shape)

    def check(function, *values):
        theoretical, numerical = tf.test.compute_gradient(function, list(values), delta=1e-5)
        for got, want in zip(theoretical, numerical, strict=True):
            assert np.abs(got).max() > 0
            np.testing.assert_allclose(got, want, atol=1e-6)

    check(lambda inputs: layer(inputs), x)

    def with_kernels(depthwise_kernel, pointwise_kernel):
        mapping = [(layer.depthwise.kernel, depthwise_kernel)]
        mapping.append((layer.pointwise.kernel, pointwise_kernel))
        with keras.StatelessScope(state_mapping=mapping):
            return layer(x)

    check(with_kernels, layer.depthwise.kernel.value, layer.pointwise.kernel.value)


def test_analysis_counts_textbook_params_and_macs():
    inputs = keras.Input((15, 17, 3))
    x = DepthwiseSeparableConv2D(8, 3, strides=2, depth_multiplier=2, name="first")(inputs)
    x = DepthwiseSeparableConv2D(4, 3, dilation_rate=2, normalization=None, name="second")(x)
    model = keras.Model(inputs, x)
    analysis = analyze(model)
    records = {record.name: record for record in analysis.layers}
    first, second = records["first"], records["second"]
    # "same" padding with stride 2: ceil(15 / 2) = 8, ceil(17 / 2) = 9.
    assert first.output_shape == (None, 8, 9, 8)
    assert first.params == 3 * 3 * 3 * 2 + 3 * 2 * 8 + 4 * (3 * 2) + 4 * 8
    assert first.macs == 8 * 9 * (3 * 3 * 3 * 2 + 3 * 2 * 8)
    assert (first.receptive_field, first.jump) == (1 + (3 - 1) * 1 * 1, 2)
    assert second.params == 3 * 3 * 8 + 8 * 4 + 8 + 4
    assert second.macs == 8 * 9 * (3 * 3 * 8 + 8 * 4)
    assert (second.receptive_field, second.jump) == (3 + (3 - 1) * 2 * 2, 2)
    assert analysis.total_params == model.count_params()
    assert analysis.total_macs == first.macs + second.macs
    assert analysis.unknown_layers == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(filters=0),
            "`filters` must be a positive int. Received: filters=0",
        ),
        (
            dict(kernel_size=(3, 0)),
            "`kernel_size` must be a positive int or a tuple of 2 positive ints. "
            "Received: kernel_size=(3, 0)",
        ),
        (
            dict(kernel_size=(3, 3, 3)),
            "`kernel_size` must be a positive int or a tuple of 2 positive ints. "
            "Received: kernel_size=(3, 3, 3)",
        ),
        (
            dict(strides=1.5),
            "`strides` must be a positive int or a tuple of 2 positive ints. Received: strides=1.5",
        ),
        (
            dict(dilation_rate=(1, -1)),
            "`dilation_rate` must be a positive int or a tuple of 2 positive ints. "
            "Received: dilation_rate=(1, -1)",
        ),
        (
            dict(strides=2, dilation_rate=2),
            "`strides` > 1 is not supported together with `dilation_rate` > 1. "
            "Received: strides=(2, 2), dilation_rate=(2, 2)",
        ),
        (
            dict(padding="causal"),
            '`padding` must be "valid" or "same". Received: padding=\'causal\'',
        ),
        (
            dict(depth_multiplier=True),
            "`depth_multiplier` must be a positive int. Received: depth_multiplier=True",
        ),
        (
            dict(normalization="layer"),
            "`normalization` must be \"batch\" or None. Received: normalization='layer'",
        ),
    ],
)
def test_bad_arguments(kwargs, message):
    arguments = dict(filters=4, kernel_size=3) | kwargs
    with pytest.raises(ValueError, match=re.escape(message)):
        DepthwiseSeparableConv2D(**arguments)


@pytest.mark.parametrize("shape", [(2, 8, 3), (2, 8, 8, None)])
def test_bad_input_shape(shape):
    message = (
        "`DepthwiseSeparableConv2D` expects a 4D input (batch, height, width, channels) with "
        f"a known number of channels. Received: input_shape={shape}"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        DepthwiseSeparableConv2D(4, 3).build(shape)
