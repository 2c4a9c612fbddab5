import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import kcnn  # noqa: F401  (registers the kcnn layers, as a user's import would)
from kcnn.analysis import analyze
from kcnn.layers import DeformableConv2D

from ..ops.deform_reference import bilinear
from ..ops.deform_reference import deform_conv2d as reference
from . import citizenship

RNG = np.random.default_rng(0)


def randn(*shape):
    return RNG.standard_normal(shape).astype("float32")


def self_offset_model(layer, shape=(7, 9, 3)):
    inputs = keras.Input(shape)
    return keras.Model(inputs, layer(inputs))


def external_model(layer, shape=(7, 9, 3), out=(7, 9), groups=1, masked=True):
    x = keras.Input(shape)
    offsets = keras.Input((*out, 18 * groups))
    inputs = [x, offsets] + ([keras.Input((*out, 9 * groups))] if masked else [])
    return keras.Model(inputs, layer(inputs))


@pytest.mark.parametrize("modulated, factor", [(True, 0.5), (False, 1.0)])
def test_starts_as_a_regular_convolution(modulated, factor):
    layer = DeformableConv2D(4, 3, strides=2, modulated=modulated, bias_initializer="ones")
    x = randn(2, 7, 9, 3)
    y = np.asarray(layer(x))
    conv = tf.nn.conv2d(x, layer.kernel, 2, "SAME")
    np.testing.assert_allclose(y, factor * np.asarray(conv) + 1.0, atol=1e-5)
    predicted = 3 if modulated else 2
    assert layer.offset_kernel.shape == (3, 3, 3, predicted * 9)
    assert not np.any(np.asarray(layer.offset_kernel)) and not np.any(layer.offset_bias)


@pytest.mark.parametrize("groups, masked, padding", [(1, True, "same"), (3, False, 1)])
def test_external_offsets_match_numpy_reference(groups, masked, padding):
    layer = DeformableConv2D(4, 3, padding=padding, offset_groups=groups, activation="relu")
    x = randn(2, 7, 9, 3)
    offsets = 1.5 * randn(2, 7, 9, 18 * groups)
    mask = RNG.random((2, 7, 9, 9 * groups)).astype("float32")
    inputs = [x, offsets] + ([mask] if masked else [])
    y = np.asarray(layer(inputs))
    expected = reference(
        x, offsets, layer.kernel, layer.bias, mask if masked else None, pad=((1, 1), (1, 1))
    )
    np.testing.assert_allclose(y, np.maximum(expected, 0.0), atol=1e-4)
    assert layer.offset_kernel is None  # no predictor of its own


def test_predicted_offsets_match_numpy_reference():
    layer = DeformableConv2D(3, 3, offset_groups=2, offset_initializer="random_normal")
    x = randn(1, 6, 5, 4)
    y = np.asarray(layer(x))
    raw = np.asarray(tf.nn.conv2d(x, layer.offset_kernel, 1, "SAME")) + layer.offset_bias
    offsets, mask = raw[..., :36], 1.0 / (1.0 + np.exp(-raw[..., 36:]))
    expected = reference(x, offsets, layer.kernel, layer.bias, mask, pad=((1, 1), (1, 1)))
    np.testing.assert_allclose(y, expected, atol=1e-4)


def test_learns_a_fractional_shift():
    # The target is the image sampled at (y + 0.4, x - 0.3). A 1x1 deformable conv with a
    # fixed identity kernel can only fit it by learning those offsets, so its offset
    # predictor must end near them: the offset gradient is real.
    image = np.cumsum(np.cumsum(RNG.random((4, 12, 12, 1)), axis=1), axis=2) / 30.0
    target = np.zeros_like(image)
    for b in range(4):
        for i in range(12):
            for j in range(12):
                target[b, i, j] = bilinear(image[b], i + 0.4, j - 0.3)
    layer = DeformableConv2D(1, 1, modulated=False, use_bias=False, kernel_initializer="ones")
    model = self_offset_model(layer, (12, 12, 1))
    layer.kernel.trainable = False
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    interior = np.s_[:, 2:-2, 2:-2]
    weights = np.zeros((4, 12, 12))
    weights[interior] = 1.0
    model.fit(
        image.astype("float32"),
        target.astype("float32"),
        sample_weight=weights,
        epochs=100,
        batch_size=4,
        verbose=0,
    )
    raw = np.asarray(tf.nn.conv2d(image.astype("float32"), layer.offset_kernel, 1, "SAME"))
    offsets = (raw + layer.offset_bias)[interior]
    np.testing.assert_allclose(offsets.reshape(-1, 2).mean(axis=0), [0.4, -0.3], atol=0.05)


@pytest.mark.parametrize(
    "padding, strides, dilation, shape, expected",
    [
        ("same", 2, 1, (7, 9), (4, 5)),
        ("valid", 1, 2, (7, 9), (3, 5)),
        (1, 2, 1, (7, 9), (4, 5)),
        ((0, 2), 1, 1, (7, 9), (5, 11)),
    ],
)
def test_output_shapes(padding, strides, dilation, shape, expected):
    layer = DeformableConv2D(2, 3, strides=strides, padding=padding, dilation_rate=dilation)
    y = layer(np.zeros((1, *shape, 3), "float32"))
    assert tuple(y.shape) == (1, *expected, 2)
    assert layer.compute_output_shape((None, *shape, 3)) == (None, *expected, 2)


def test_unknown_batch_and_spatial_dimensions():
    model = self_offset_model(
        DeformableConv2D(2, 3, offset_initializer="random_normal"), (None, None, 3)
    )
    for height, width in ((5, 7), (8, 6)):
        x = randn(3, height, width, 3)
        y = model.predict(x, verbose=0)
        assert y.shape == (3, height, width, 2)


def test_config_round_trip():
    layer = DeformableConv2D(
        4,
        (3, 2),
        strides=(2, 1),
        padding=(1, 0),
        dilation_rate=1,
        offset_groups=3,
        modulated=False,
        use_bias=False,
        activation="relu",
        kernel_regularizer="l2",
        jit_compile=False,
        name="dcn",
    )
    citizenship.check_config_round_trip(layer)
    assert DeformableConv2D.from_config(layer.get_config()).padding == ((1, 1), (0, 0))


@pytest.mark.parametrize("external", [False, True])
def test_fit_one_step_and_file_round_trips(tmp_path, external):
    if external:
        model = external_model(DeformableConv2D(4, 3, activation="relu"))
        inputs = [randn(2, 7, 9, 3), randn(2, 7, 9, 18), RNG.random((2, 7, 9, 9), "float32")]
    else:
        model = self_offset_model(DeformableConv2D(4, 3, offset_initializer="random_normal"))
        inputs = randn(2, 7, 9, 3)
    model.compile(optimizer="adam", loss="mse")
    model.fit(inputs, randn(2, 7, 9, 4), epochs=1, verbose=0)
    citizenship.check_keras_file_round_trip(model, inputs, tmp_path)
    citizenship.check_saved_model_round_trip(model, inputs, tmp_path)


def test_sequential_and_subclassed_models():
    x = randn(2, 6, 6, 3)
    sequential = keras.Sequential([keras.Input((6, 6, 3)), DeformableConv2D(4, 3)])
    assert sequential(x).shape == (2, 6, 6, 4)

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.offsets = keras.layers.Conv2D(18, 3, padding="same")
            self.dcn = DeformableConv2D(4, 3)

        def call(self, x):
            return self.dcn([x, self.offsets(x)])

    net = Net()
    net.compile(optimizer="sgd", loss="mse")
    assert np.isfinite(net.train_on_batch(x, randn(2, 6, 6, 4)))
    assert len(net.trainable_weights) == 4


def test_training_updates_the_offset_predictor():
    model = self_offset_model(DeformableConv2D(4, 3))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    layer = model.layers[-1]
    model.train_on_batch(randn(2, 7, 9, 3), randn(2, 7, 9, 4))
    assert np.any(np.asarray(layer.offset_kernel)) and np.any(np.asarray(layer.offset_bias))


def test_mixed_precision():
    citizenship.check_mixed_precision(
        lambda: self_offset_model(DeformableConv2D(4, 3, offset_initializer="random_normal")),
        randn(2, 7, 9, 3),
        randn(2, 7, 9, 4),
    )


@pytest.mark.parametrize("layer_jit", [None, False])
def test_jit_compile(layer_jit):
    citizenship.check_jit_compile(
        lambda: self_offset_model(
            DeformableConv2D(
                4, 3, strides=2, offset_initializer="random_normal", jit_compile=layer_jit
            )
        ),
        randn(2, 7, 9, 3),
        randn(2, 4, 5, 4),
    )


def test_mirrored_strategy():
    citizenship.check_mirrored_strategy(
        """
        from kcnn.layers import DeformableConv2D

        def model_fn():
            inputs = keras.Input((6, 7, 3))
            layer = DeformableConv2D(
                4, 3, offset_groups=3, activation="relu",
                offset_initializer=keras.initializers.RandomNormal(stddev=0.3, seed=1),
            )
            return keras.Model(inputs, layer(inputs))

        rng = np.random.default_rng(0)
        inputs = rng.standard_normal((4, 6, 7, 3)).astype("float32")
        targets = rng.standard_normal((4, 6, 7, 4)).astype("float32")
        """
    )


@pytest.mark.parametrize("external", [False, True])
def test_tflite_builtins(tmp_path, external):
    if external:
        model = external_model(DeformableConv2D(4, 3, strides=2, padding=1), out=(4, 5))
        inputs = [randn(1, 7, 9, 3), 2 * randn(1, 4, 5, 18), RNG.random((1, 4, 5, 9), "float32")]
    else:
        model = self_offset_model(
            DeformableConv2D(
                4,
                3,
                offset_groups=3,
                offset_initializer=keras.initializers.RandomNormal(stddev=0.5),
            )
        )
        inputs = randn(1, 7, 9, 3)
    citizenship.check_tflite_builtins(model, inputs, tmp_path, atol=1e-4)


def test_analysis_counts_params_and_macs():
    model = self_offset_model(DeformableConv2D(8, 3, strides=2), (16, 16, 4))
    result = analyze(model)
    record = next(r for r in result.layers if r.class_name == "DeformableConv2D")
    positions, taps = 8 * 8, 9
    assert record.params == (taps * 4 * 8 + 8) + (taps * 4 * 27 + 27)
    assert record.params == model.count_params()
    # main conv + bilinear sampling (4 corners + the mask) + offset predictor
    assert record.macs == positions * taps * 4 * (8 + 5 + 27)
    assert record.receptive_field is None  # data-dependent


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"filters": 0}, "`filters` must be a positive int. Received: filters=0"),
        (
            {"kernel_size": (3, 0)},
            "`kernel_size` must be a positive int or a tuple of 2 positive ints. "
            "Received: kernel_size=(3, 0)",
        ),
        (
            {"padding": "full"},
            '`padding` must be "valid", "same", a non-negative int or a tuple of 2 non-negative '
            "ints. Received: padding='full'",
        ),
        ({"offset_groups": 0}, "`offset_groups` must be a positive int. Received: offset_groups=0"),
        (
            {"jit_compile": "yes"},
            "`jit_compile` must be None or a bool. Received: jit_compile='yes'",
        ),
    ],
)
def test_bad_arguments(kwargs, message):
    arguments = {"filters": 4, "kernel_size": 3, **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        DeformableConv2D(**arguments)


@pytest.mark.parametrize(
    "shapes, message",
    [
        (
            [(1, 7, 9)],
            "`x` must be a 4D tensor (batch, height, width, channels). Received: x.shape=(1, 7, 9)",
        ),
        (
            [(1, 7, 9, 4)],
            "`offset_groups` must divide the input channels (4). Received: offset_groups=3",
        ),
        (
            [(1, 7, 9, 3), (1, 7, 8, 54)],
            "`offsets` must have shape (1, 7, 9, 54) for x.shape=(1, 7, 9, 3) (offset_groups=3, "
            "kernel_size=(3, 3)). Received: offsets.shape=(1, 7, 8, 54)",
        ),
        (
            [(1, 7, 9, 3), (1, 7, 9, 54), (1, 7, 9, 9)],
            "`mask` must have shape (1, 7, 9, 27) for x.shape=(1, 7, 9, 3) (offset_groups=3, "
            "kernel_size=(3, 3)). Received: mask.shape=(1, 7, 9, 9)",
        ),
    ],
)
def test_bad_inputs(shapes, message):
    layer = DeformableConv2D(2, 3, offset_groups=3)
    tensors = [np.zeros(shape, "float32") for shape in shapes]
    with pytest.raises(ValueError, match=re.escape(message)):
        layer(tensors if len(tensors) > 1 else tensors[0])


def test_called_differently_from_how_it_was_built():
    layer = DeformableConv2D(2, 3)
    layer(np.zeros((1, 5, 5, 3), "float32"))
    message = (
        "`DeformableConv2D` was built on `x` alone and must be called the same way. "
        "Received: 2 input(s)"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        layer([np.zeros((1, 5, 5, 3), "float32"), np.zeros((1, 5, 5, 18), "float32")])
