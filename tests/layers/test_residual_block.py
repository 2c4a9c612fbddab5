import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import kcnn  # noqa: F401  (registers the kcnn layers, as a user's import would)
from kcnn.analysis import analyze
from kcnn.layers import ResidualBlock

from . import citizenship, conv_reference

RNG = np.random.default_rng(0)


def randomize_batch_norms(block):
    """Random gamma, beta and moving statistics, so inference-mode BN is not the identity."""
    norms = [norm for _, norm in block.branch]
    if block.projection_norm is not None:
        norms.append(block.projection_norm)
    for norm in norms:
        gamma, beta, mean, variance = (w.shape for w in norm.weights)
        norm.set_weights(
            [
                RNG.uniform(0.5, 1.5, gamma),
                RNG.normal(0, 0.5, beta),
                RNG.normal(0, 0.5, mean),
                RNG.uniform(0.5, 2.0, variance),
            ]
        )


def residual_reference(x, convolutions, projection, strides, epsilon):
    """He et al. (2016): relu(F(x) + shortcut(x)) in float64, inference-mode batch norm.

    `convolutions` is a list of `(kernel, stride, (gamma, beta, mean, variance))`, each
    convolution padded by k // 2 on every side; `projection` is None (identity) or
    `(kernel, batch_norm_weights)` of a 1x1 convolution of stride `strides`.
    """
    x = np.asarray(x, np.float64)
    y = x
    for index, (kernel, stride, norm) in enumerate(convolutions):
        y = conv_reference.conv2d(y, kernel, stride=stride, pad=kernel.shape[0] // 2)
        y = conv_reference.batch_norm(y, *norm, epsilon)
        if index < len(convolutions) - 1:
            y = conv_reference.relu(y)
    shortcut = x
    if projection is not None:
        kernel, norm = projection
        shortcut = conv_reference.conv2d(x, kernel, stride=strides)
        shortcut = conv_reference.batch_norm(shortcut, *norm, epsilon)
    return conv_reference.relu(y + shortcut)


def block_weights(block):
    def norm_weights(norm):
        return [np.asarray(w, np.float64) for w in norm.weights]

    convolutions = [
        (np.asarray(conv.kernel, np.float64), conv.strides[0], norm_weights(norm))
        for conv, norm in block.branch
    ]
    projection = None
    if block.projection is not None:
        projection = (
            np.asarray(block.projection.kernel, np.float64),
            norm_weights(block.projection_norm),
        )
    return convolutions, projection


@pytest.mark.parametrize(
    "shape, filters, strides, projected",
    [
        ((2, 6, 6, 4), 4, 1, False),
        ((2, 6, 6, 4), 6, 1, True),
        ((2, 8, 8, 3), 5, 2, True),
        ((1, 7, 9, 4), 4, 2, True),
    ],
)
def test_matches_numpy_reference(shape, filters, strides, projected):
    block = ResidualBlock(filters, strides=strides)
    x = RNG.standard_normal(shape).astype("float32")
    block(x)
    randomize_batch_norms(block)
    assert (block.projection is not None) == projected
    outputs = block(x, training=False)
    convolutions, projection = block_weights(block)
    expected = residual_reference(x, convolutions, projection, strides, block.epsilon)
    np.testing.assert_allclose(outputs, expected, atol=1e-4)
    assert outputs.shape == block.compute_output_shape(shape)
    # Odd sizes: ceil(size / stride), as torchvision's padding of 1 gives.
    assert outputs.shape[1:3] == tuple(-(-size // strides) for size in shape[1:3])


def test_parameter_count():
    block = ResidualBlock(8, strides=2)
    block.build((None, 10, 10, 4))
    convolutions = 9 * 4 * 8 + 9 * 8 * 8 + 4 * 8
    assert block.count_params() == convolutions + 3 * 4 * 8
    trainable = sum(int(np.prod(w.shape)) for w in block.trainable_weights)
    assert trainable == convolutions + 3 * 2 * 8


def test_training_uses_batch_statistics_and_updates_moving_ones():
    block = ResidualBlock(4)
    x = RNG.standard_normal((4, 5, 5, 4)).astype("float32") * 3 + 1
    block(x)
    mean_before = np.array(block.norm1.moving_mean)
    training, inference = block(x, training=True), block(x, training=False)
    assert not np.allclose(training, inference)
    assert not np.allclose(block.norm1.moving_mean, mean_before)


def test_gradients():
    block = ResidualBlock(3, strides=2, dtype="float64")
    x = tf.constant(RNG.standard_normal((1, 5, 4, 2)))
    block(x)
    randomize_batch_norms(block)
    theoretical, numerical = tf.test.compute_gradient(
        lambda inputs: block(inputs, training=False), [x], delta=1e-6
    )
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-6)


def small_model(block_fn=None):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = (block_fn or (lambda: ResidualBlock(6, strides=2, name="block")))()(x)
    return keras.Model(inputs, keras.layers.Conv2D(2, 1)(x))


def test_config_fit_and_file_round_trips(tmp_path):
    block = ResidualBlock(
        8, strides=(2, 1), kernel_regularizer=keras.regularizers.L2(1e-4), momentum=0.99
    )
    citizenship.check_config_round_trip(block)
    config = block.get_config()
    assert config["strides"] == (2, 1) and config["epsilon"] == 1e-5
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


def test_tflite_builtins(tmp_path):
    citizenship.check_tflite_builtins(
        small_model(), RNG.random((1, 8, 8, 3)).astype("float32"), tmp_path
    )


def test_analysis():
    model = small_model()
    analysis = analyze(model)
    record = next(r for r in analysis.layers if r.class_name == "ResidualBlock")
    block = model.get_layer("block")
    # conv1 3x3/2 and the 1x1/2 projection at 4x4, conv2 3x3 at 4x4.
    assert record.macs == 16 * (9 * 4 * 6) + 16 * (9 * 6 * 6) + 16 * (4 * 6)
    assert record.params == block.count_params()
    # After a 3x3 conv (field 3): + 2 (conv1) + 2 * 2 (conv2 at stride 2) = 9, jump 2.
    assert (record.receptive_field, record.jump) == (9, 2)
    assert analysis.total_params == model.count_params()
    assert analysis.unknown_layers == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(filters=0), "`filters` must be a positive int. Received: filters=0"),
        (
            dict(strides=(2, 0)),
            "`strides` must be a positive int or a tuple of 2 positive ints. "
            "Received: strides=(2, 0)",
        ),
        (dict(momentum=1.0), "`momentum` must be a float in [0, 1). Received: momentum=1.0"),
        (dict(epsilon=0), "`epsilon` must be a positive float. Received: epsilon=0"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ResidualBlock(**(dict(filters=4) | kwargs))


def test_unknown_channels():
    message = (
        "The number of channels of the inputs to `ResidualBlock` must be known. "
        "Received: input_shape=(None, 4, 4, None)"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        ResidualBlock(4).build((None, 4, 4, None))
