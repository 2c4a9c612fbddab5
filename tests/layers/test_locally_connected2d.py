import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import kcnn  # noqa: F401  (registers the kcnn layers, as a user's import would)
from kcnn.analysis import analyze
from kcnn.layers import LocallyConnected2D

from . import citizenship

RNG = np.random.default_rng(0)


def randn(*shape, dtype="float32"):
    return RNG.standard_normal(shape).astype(dtype)


def output_size_and_pad_before(size, kernel, stride, padding):
    """Output length and zeros added before the input, by TensorFlow's SAME / VALID rules."""
    if padding == "valid":
        return (size - kernel) // stride + 1, 0
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2


def locally_connected_reference(x, kernel, bias, kernel_size, strides, padding, data_format):
    """Keras 2's unshared convolution in float64, by loops over output positions and taps.

    Kernel rows follow Keras 2's layout: position `row * out_w + col`, then the window
    flattened as (k_h, k_w, C) with channels last or (C, k_h, k_w) with channels first.
    """
    x = np.asarray(x, np.float64)
    if data_format == "channels_first":
        x = x.transpose(0, 2, 3, 1)
    batch, height, width, channels = x.shape
    kernel_h, kernel_w = kernel_size
    filters = kernel.shape[-1]
    out_h, top = output_size_and_pad_before(height, kernel_h, strides[0], padding)
    out_w, left = output_size_and_pad_before(width, kernel_w, strides[1], padding)
    outputs = np.zeros((batch, out_h, out_w, filters))
    for row in range(out_h):
        for col in range(out_w):
            position = row * out_w + col
            for i in range(kernel_h):
                for j in range(kernel_w):
                    x_row = row * strides[0] + i - top
                    x_col = col * strides[1] + j - left
                    if not (0 <= x_row < height and 0 <= x_col < width):
                        continue  # a zero of the padding
                    for c in range(channels):
                        if data_format == "channels_last":
                            feature = (i * kernel_w + j) * channels + c
                        else:
                            feature = (c * kernel_h + i) * kernel_w + j
                        outputs[:, row, col, :] += np.outer(
                            x[:, x_row, x_col, c], kernel[position, feature]
                        )
    if data_format == "channels_last":
        return outputs if bias is None else outputs + bias
    outputs = outputs.transpose(0, 3, 1, 2)
    # Keras 2's bias_add reshaped the (rows, cols, filters) bias to (filters, rows, cols).
    return outputs if bias is None else outputs + bias.reshape(filters, out_h, out_w)


def to_format(shape_last, data_format):
    """`(batch, height, width, channels)` in the layout of `data_format`."""
    batch, height, width, channels = shape_last
    if data_format == "channels_last":
        return shape_last
    return (batch, channels, height, width)


def small_model(data_format="channels_last", **kwargs):
    inputs = keras.Input(to_format((None, 7, 6, 3), data_format)[1:], name="image")
    outputs = LocallyConnected2D(4, 3, data_format=data_format, **kwargs)(inputs)
    return keras.Model(inputs, outputs)


def keras2_param_count(height, width, channels, filters, kernel, strides, use_bias=True):
    """Keras 2's count for "valid" padding: out_h * out_w * (k_h * k_w * C_in + 1) * filters."""
    out_h = (height - kernel[0]) // strides[0] + 1
    out_w = (width - kernel[1]) // strides[1] + 1
    bias = out_h * out_w * filters if use_bias else 0
    return out_h * out_w * kernel[0] * kernel[1] * channels * filters + bias


@pytest.mark.parametrize("implementation", [1, 2])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_output_shapes_weights_and_keras2_param_count(implementation, data_format):
    layer = LocallyConnected2D(
        5, (3, 2), strides=(2, 1), data_format=data_format, implementation=implementation
    )
    outputs = layer(randn(*to_format((2, 9, 7, 3), data_format)))
    # (9 - 3) // 2 + 1 = 4 rows, (7 - 2) // 1 + 1 = 6 columns.
    assert tuple(outputs.shape) == to_format((2, 4, 6, 5), data_format)
    assert tuple(layer.kernel.shape) == (4 * 6, 3 * 2 * 3, 5)
    assert tuple(layer.bias.shape) == (4, 6, 5)
    assert layer.count_params() == keras2_param_count(9, 7, 3, 5, (3, 2), (2, 1))

    same = LocallyConnected2D(
        5, 3, strides=2, padding="same", use_bias=False, data_format=data_format
    )
    assert tuple(same(randn(*to_format((1, 9, 7, 3), data_format))).shape) == to_format(
        (1, 5, 4, 5), data_format
    )
    assert same.bias is None and same.count_params() == 5 * 4 * 3 * 3 * 3 * 5


def test_keras2_docstring_example_param_count():
    # Keras 2's docstring: a 3x3 layer with 64 filters on 32x32x3 images has
    # (30*30)*(3*3*3*64) + (30*30)*64 parameters and outputs (None, 30, 30, 64).
    model = keras.Sequential([keras.Input((32, 32, 3)), LocallyConnected2D(64, (3, 3))])
    assert model.output_shape == (None, 30, 30, 64)
    assert model.count_params() == (30 * 30) * (3 * 3 * 3 * 64) + (30 * 30) * 64


@pytest.mark.parametrize(
    "kernel_size, strides, padding, data_format, implementation",
    [
        (3, 1, "valid", "channels_last", 1),
        ((3, 2), (2, 1), "valid", "channels_last", 2),
        (3, 2, "same", "channels_last", 1),
        ((2, 3), (1, 2), "same", "channels_last", 2),
        ((3, 2), (2, 1), "valid", "channels_first", 1),
        (3, 1, "valid", "channels_first", 2),
        ((2, 3), 2, "same", "channels_first", 1),
        (3, 2, "same", "channels_first", 2),
    ],
)
def test_matches_numpy_reference(kernel_size, strides, padding, data_format, implementation):
    layer = LocallyConnected2D(
        4,
        kernel_size,
        strides=strides,
        padding=padding,
        data_format=data_format,
        implementation=implementation,
        bias_initializer="random_normal",
    )
    x = randn(*to_format((2, 7, 6, 3), data_format))
    outputs = np.asarray(layer(x))
    expected = locally_connected_reference(
        x,
        np.asarray(layer.kernel, np.float64),
        np.asarray(layer.bias, np.float64),
        layer.kernel_size,
        layer.strides,
        padding,
        data_format,
    )
    assert outputs.shape == expected.shape
    np.testing.assert_allclose(outputs, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_implementations_agree_and_share_weight_files(data_format, tmp_path):
    kwargs = dict(strides=2, padding="same", bias_initializer="random_normal")
    first = small_model(data_format, implementation=1, **kwargs)
    second = small_model(data_format, implementation=2, **kwargs)
    path = tmp_path / "locally_connected.weights.h5"
    first.save_weights(path)
    second.load_weights(path)
    x = randn(2, *first.input_shape[1:])
    np.testing.assert_allclose(second(x), first(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("strides, padding", [(1, "same"), (2, "same"), ((2, 1), "valid")])
def test_equals_conv2d_when_every_position_has_the_same_weights(strides, padding):
    conv = keras.layers.Conv2D(4, (3, 2), strides=strides, padding=padding)
    layer = LocallyConnected2D(4, (3, 2), strides=strides, padding=padding)
    x = randn(2, 8, 7, 3)
    expected = conv(x)
    layer.build(x.shape)
    positions = layer.kernel.shape[0]
    kernel = np.asarray(conv.kernel).reshape(1, -1, 4)
    layer.kernel.assign(np.repeat(kernel, positions, axis=0))
    layer.bias.assign(np.broadcast_to(np.asarray(conv.bias), layer.bias.shape))
    np.testing.assert_allclose(layer(x), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "strides, padding, data_format, implementation",
    [(2, "same", "channels_last", 1), (1, "valid", "channels_first", 2)],
)
def test_gradients(strides, padding, data_format, implementation):
    layer = LocallyConnected2D(
        2,
        2,
        strides=strides,
        padding=padding,
        data_format=data_format,
        implementation=implementation,
        activation="tanh",
        bias_initializer="random_normal",
        dtype="float64",
    )
    x = tf.constant(RNG.standard_normal(to_format((2, 4, 3, 2), data_format)))
    layer.build(x.shape)

    def check(function, *values):
        theoretical, numerical = tf.test.compute_gradient(function, list(values), delta=1e-5)
        for got, want in zip(theoretical, numerical, strict=True):
            assert np.abs(got).max() > 0
            np.testing.assert_allclose(got, want, atol=1e-6)

    check(lambda inputs: layer(inputs), x)

    def with_weights(kernel, bias):
        with keras.StatelessScope(state_mapping=[(layer.kernel, kernel), (layer.bias, bias)]):
            return layer(x)

    check(with_weights, layer.kernel.value, layer.bias.value)


def test_config_round_trip():
    layer = LocallyConnected2D(
        8,
        (3, 5),
        strides=(2, 1),
        padding="SAME",
        data_format="channels_first",
        activation="relu6",
        use_bias=False,
        kernel_initializer="he_normal",
        kernel_regularizer=keras.regularizers.L2(1e-4),
        activity_regularizer=keras.regularizers.L1(1e-5),
        bias_constraint="non_neg",
        implementation=2,
        name="local",
    )
    config = layer.get_config()
    assert config["padding"] == "same" and config["implementation"] == 2
    citizenship.check_config_round_trip(layer)
    clone = LocallyConnected2D.from_config(config)
    assert clone.kernel_size == (3, 5) and clone.strides == (2, 1)
    assert clone.data_format == "channels_first" and clone.activation is keras.activations.relu6
    assert isinstance(clone.activity_regularizer, keras.regularizers.L1)


def test_data_format_defaults_to_the_keras_config():
    previous = keras.config.image_data_format()
    keras.config.set_image_data_format("channels_first")
    try:
        layer = LocallyConnected2D(4, 3)
    finally:
        keras.config.set_image_data_format(previous)
    assert layer.data_format == "channels_first"
    assert LocallyConnected2D(4, 3).data_format == previous


def test_fit_one_step_and_keras_file_round_trip(tmp_path):
    keras.utils.set_random_seed(1)
    model = small_model(strides=2, bias_initializer="random_normal")
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = [np.array(w) for w in model.get_weights()]
    model.fit(randn(4, 7, 6, 3), randn(4, 3, 2, 4), batch_size=4, epochs=1, verbose=0)
    assert all(not np.allclose(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    citizenship.check_keras_file_round_trip(model, randn(2, 7, 6, 3), tmp_path)


def test_jit_compile():
    citizenship.check_jit_compile(
        lambda: small_model(strides=2, padding="same"), randn(2, 7, 6, 3), randn(2, 4, 3, 4)
    )


def test_mixed_precision():
    citizenship.check_mixed_precision(
        lambda: small_model(implementation=2), randn(2, 7, 6, 3), randn(2, 5, 4, 4)
    )


@pytest.mark.parametrize(
    "data_format, implementation", [("channels_last", 1), ("channels_first", 2)]
)
def test_tflite_builtins(data_format, implementation, tmp_path):
    # A zero bias then a ReLU: the case where the converter once dropped the ReLU of
    # implementation 2 (see `LocallyConnected2D._dense_matmul`).
    model = small_model(
        data_format, strides=2, padding="same", implementation=implementation, activation="relu"
    )
    x = randn(1, *model.input_shape[1:])
    citizenship.check_tflite_builtins(model, x, tmp_path)


def test_analysis_counts_params_macs_and_receptive_field():
    inputs = keras.Input((11, 9, 3))
    x = LocallyConnected2D(4, 3, name="first")(inputs)
    x = LocallyConnected2D(2, (3, 2), strides=2, padding="same", name="second")(x)
    model = keras.Model(inputs, x)
    analysis = analyze(model)
    records = {record.name: record for record in analysis.layers}
    first, second = records["first"], records["second"]
    assert first.output_shape == (None, 9, 7, 4)
    assert first.params == 9 * 7 * 3 * 3 * 3 * 4 + 9 * 7 * 4
    assert first.macs == 9 * 7 * 3 * 3 * 3 * 4
    assert (first.receptive_field, first.jump, first.start) == (3, 1, 1)
    # "same" with stride 2: ceil(9 / 2) = 5, ceil(7 / 2) = 4.
    assert second.output_shape == (None, 5, 4, 2)
    assert second.params == 5 * 4 * 3 * 2 * 4 * 2 + 5 * 4 * 2
    assert second.macs == 5 * 4 * 3 * 2 * 4 * 2
    assert (second.receptive_field, second.jump) == ((5, 4), 2)
    assert analysis.total_params == model.count_params()
    assert analysis.total_macs == first.macs + second.macs
    assert analysis.unknown_layers == []

    channels_first = keras.Input((3, 7, 6))
    outputs = LocallyConnected2D(4, 3, strides=2, data_format="channels_first", name="cf")(
        channels_first
    )
    record = analyze(keras.Model(channels_first, outputs), data_format="channels_first").layers[-1]
    assert record.macs == 3 * 2 * 3 * 3 * 3 * 4
    assert (record.receptive_field, record.jump) == (3, 2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(filters=0), "`filters` must be a positive int. Received: filters=0"),
        (
            dict(kernel_size=(3, 0)),
            "`kernel_size` must be a positive int or a tuple of 2 positive ints. "
            "Received: kernel_size=(3, 0)",
        ),
        (
            dict(strides=1.5),
            "`strides` must be a positive int or a tuple of 2 positive ints. Received: strides=1.5",
        ),
        (
            dict(padding="causal"),
            '`padding` must be "valid" or "same". Received: padding=\'causal\'',
        ),
        (
            dict(data_format="NHWC"),
            '`data_format` must be "channels_last", "channels_first" or None. '
            "Received: data_format='NHWC'",
        ),
        (
            dict(implementation=3),
            "`implementation` must be 1 (patches and a batched matmul) or 2 (one dense "
            "matmul); Keras 2's sparse implementation 3 is not supported. "
            "Received: implementation=3",
        ),
        (dict(implementation=True), "Received: implementation=True"),
    ],
)
def test_bad_arguments(kwargs, message):
    arguments = dict(filters=4, kernel_size=3) | kwargs
    with pytest.raises(ValueError, match=re.escape(message)):
        LocallyConnected2D(**arguments)


@pytest.mark.parametrize(
    "shape, data_format, layout",
    [
        ((2, 8, 3), "channels_last", "(batch, height, width, channels)"),
        ((None, None, 8, 3), "channels_last", "(batch, height, width, channels)"),
        ((None, 3, 8, None), "channels_first", "(batch, channels, height, width)"),
    ],
)
def test_bad_input_shape(shape, data_format, layout):
    message = (
        "`LocallyConnected2D` has weights for each output position, so it expects a 4D input "
        f"{layout} with a known height, width and number of channels. "
        f"Received: input_shape={shape}"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        LocallyConnected2D(4, 3, data_format=data_format).build(shape)


def test_kernel_larger_than_valid_input_and_other_sizes_are_rejected():
    with pytest.raises(ValueError, match=re.escape("The kernel does not fit in the input")):
        LocallyConnected2D(4, 5).build((1, 4, 8, 3))
    layer = LocallyConnected2D(4, 3)
    layer(randn(1, 6, 6, 3))
    # The weights belong to 4x4 output positions: another input size must not broadcast.
    with pytest.raises(ValueError, match="expected axis 1 of input shape to have value 6"):
        layer(randn(1, 7, 6, 3))
