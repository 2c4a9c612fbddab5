import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import kcnn  # noqa: F401  (registers the kcnn layers, as a user's import would)
from kcnn.analysis import analyze
from kcnn.layers import BottleneckBlock

from . import citizenship
from .test_residual_block import block_weights, randomize_batch_norms, residual_reference

RNG = np.random.default_rng(0)


@pytest.mark.parametrize(
    "shape, filters, strides, expansion, projected",
    [
        ((2, 6, 6, 8), 2, 1, 4, False),
        ((2, 6, 6, 4), 2, 1, 4, True),
        ((2, 8, 8, 8), 2, 2, 4, True),
        ((1, 7, 9, 3), 3, 2, 2, True),
    ],
)
def test_matches_numpy_reference(shape, filters, strides, expansion, projected):
    block = BottleneckBlock(filters, strides=strides, expansion=expansion)
    x = RNG.standard_normal(shape).astype("float32")
    block(x)
    randomize_batch_norms(block)
    assert (block.projection is not None) == projected
    outputs = block(x, training=False)
    convolutions, projection = block_weights(block)
    # 1x1, 3x3 with the stride ("ResNet v1.5"), 1x1 to filters * expansion.
    assert [kernel.shape[0] for kernel, _, _ in convolutions] == [1, 3, 1]
    assert [stride for _, stride, _ in convolutions] == [1, strides, 1]
    expected = residual_reference(x, convolutions, projection, strides, block.epsilon)
    np.testing.assert_allclose(outputs, expected, atol=1e-4)
    assert outputs.shape == block.compute_output_shape(shape)
    assert outputs.shape[-1] == filters * expansion


def test_resnet50_first_block_parameters():
    # conv2_block1 of ResNet-50: 64 -> 64 -> 64 -> 256 with a 1x1 projection 64 -> 256.
    block = BottleneckBlock(64)
    block.build((None, 56, 56, 64))
    weights = 64 * 64 + 9 * 64 * 64 + 64 * 256 + 64 * 256
    norms = 64 + 64 + 256 + 256
    trainable = sum(int(np.prod(w.shape)) for w in block.trainable_weights)
    assert trainable == weights + 2 * norms  # torchvision's 75,008
    assert trainable == 75_008
    assert block.count_params() == weights + 4 * norms


def test_gradients():
    block = BottleneckBlock(2, strides=2, expansion=2, dtype="float64")
    x = tf.constant(RNG.standard_normal((1, 5, 4, 3)))
    block(x)
    randomize_batch_norms(block)
    theoretical, numerical = tf.test.compute_gradient(
        lambda inputs: block(inputs, training=False), [x], delta=1e-6
    )
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-6)


def small_model():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    x = BottleneckBlock(2, strides=2, name="block")(x)
    x = BottleneckBlock(2, name="identity_block")(x)
    return keras.Model(inputs, keras.layers.Conv2D(2, 1)(x))


def test_config_fit_and_file_round_trips(tmp_path):
    block = BottleneckBlock(8, strides=2, expansion=2, kernel_initializer="he_uniform")
    citizenship.check_config_round_trip(block)
    assert block.get_config()["expansion"] == 2
    model = small_model()
    assert model.get_layer("identity_block").projection is None
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
    records = {r.name: r for r in analysis.layers}
    block = records["block"]
    # conv1 1x1 at 8x8, conv2 3x3/2 and conv3 1x1 at 4x4, projection 1x1/2 at 4x4.
    assert block.macs == 64 * 8 * 2 + 16 * 9 * 2 * 2 + 16 * 2 * 8 + 16 * 8 * 8
    # After a 3x3 conv (field 3), the 3x3 at stride 1 in input pixels adds 2; jump 2.
    assert (block.receptive_field, block.jump) == (5, 2)
    assert (records["identity_block"].receptive_field, records["identity_block"].jump) == (9, 2)
    assert analysis.total_params == model.count_params()
    assert analysis.unknown_layers == []


def test_bad_arguments():
    message = "`expansion` must be a positive int. Received: expansion=0"
    with pytest.raises(ValueError, match=re.escape(message)):
        BottleneckBlock(4, expansion=0)
    message = "`filters` must be a positive int. Received: filters=2.5"
    with pytest.raises(ValueError, match=re.escape(message)):
        BottleneckBlock(2.5)
