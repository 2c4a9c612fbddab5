"""FFT convolution against a float64 NumPy loop, keras.layers.Conv2D and its gradients."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from kcnn.ops import fft_conv2d
from kcnn.ops.fft_conv import fast_fft_length

RNG = np.random.default_rng(0)


def correlation_reference(x, w, padding):
    """y(b, i, j, o) = sum_(u, v, c) x(b, i + u, j + v, c) w(u, v, c, o), float64, NHWC.

    Written from the definition: "same" pads zeros by TensorFlow's rule (total k - 1, the
    smaller half before), then every output sums its window in a loop over the taps.
    """
    x, w = x.astype(np.float64), w.astype(np.float64)
    kernel_h, kernel_w = w.shape[:2]
    if padding == "same":
        pads = [(0, 0), ((kernel_h - 1) // 2, kernel_h // 2), ((kernel_w - 1) // 2, kernel_w // 2)]
        x = np.pad(x, [*pads, (0, 0)])
    out_h, out_w = x.shape[1] - kernel_h + 1, x.shape[2] - kernel_w + 1
    y = np.zeros((x.shape[0], out_h, out_w, w.shape[3]))
    for u in range(kernel_h):
        for v in range(kernel_w):
            y += x[:, u : u + out_h, v : v + out_w, :] @ w[u, v]
    return y


def conv2d_layer(kernel, padding):
    layer = keras.layers.Conv2D(kernel.shape[3], kernel.shape[:2], padding=padding, use_bias=False)
    layer.build((None, None, None, kernel.shape[2]))
    layer.kernel.assign(kernel)
    return layer


def relative_error(actual, expected):
    return float(np.max(np.abs(np.asarray(actual) - expected)) / np.max(np.abs(expected)))


CASES = [
    # height, width, channels, filters, kernel, padding
    (7, 9, 3, 4, (3, 3), "same"),
    (7, 9, 3, 4, (3, 3), "valid"),
    (8, 6, 2, 3, (4, 2), "same"),  # even kernel: TF pads the extra row and column after
    (8, 6, 2, 3, (2, 5), "valid"),
    (5, 11, 2, 2, (5, 4), "same"),
    (6, 6, 1, 2, (6, 6), "valid"),  # kernel as large as the input: one output
    (4, 5, 2, 2, (7, 6), "same"),  # kernel larger than the input
]


@pytest.mark.parametrize("height, width, channels, filters, kernel, padding", CASES)
def test_fft_conv2d_matches_a_numpy_loop_and_conv2d(
    height, width, channels, filters, kernel, padding
):
    x = RNG.normal(size=(2, height, width, channels)).astype(np.float32)
    w = RNG.normal(size=(*kernel, channels, filters)).astype(np.float32)
    expected = correlation_reference(x, w, padding)
    outputs = fft_conv2d(x, w, padding=padding)
    assert outputs.shape == expected.shape and outputs.dtype == tf.float32
    assert relative_error(outputs, expected) < 1e-5
    conv = np.asarray(conv2d_layer(w, padding)(x), np.float64)
    assert relative_error(outputs, conv) < 1e-4


def test_bias_and_channels_first_give_the_channels_last_result_transposed():
    x = RNG.normal(size=(2, 6, 7, 3)).astype(np.float32)
    w = RNG.normal(size=(3, 4, 3, 5)).astype(np.float32)
    b = RNG.normal(size=(5,)).astype(np.float32)
    expected = correlation_reference(x, w, "same") + b
    last = fft_conv2d(x, w, "same", bias=b)
    first = fft_conv2d(np.transpose(x, (0, 3, 1, 2)), w, "same", "channels_first", bias=b)
    assert first.shape == (2, 5, 6, 7)
    assert relative_error(last, expected) < 1e-5
    assert relative_error(np.transpose(first, (0, 2, 3, 1)), expected) < 1e-5


def test_unknown_spatial_size_in_a_graph():
    x = RNG.normal(size=(1, 9, 7, 2)).astype(np.float32)
    w = RNG.normal(size=(4, 3, 2, 3)).astype(np.float32)
    for padding in ("same", "valid"):
        function = tf.function(
            lambda inputs, padding=padding: fft_conv2d(inputs, w, padding),
            input_signature=[tf.TensorSpec((None, None, None, 2), tf.float32)],
        )
        assert relative_error(function(x), correlation_reference(x, w, padding)) < 1e-5


def test_float16_inputs_are_transformed_in_float32():
    x = RNG.normal(size=(1, 6, 6, 2)).astype(np.float16)
    w = RNG.normal(size=(3, 3, 2, 2)).astype(np.float16)
    outputs = fft_conv2d(x, w, "same")
    assert outputs.dtype == tf.float16
    assert relative_error(outputs, correlation_reference(x, w, "same")) < 2e-3


@pytest.mark.parametrize("kernel, padding", [((3, 2), "same"), ((2, 3), "valid")])
def test_gradients_match_conv2d(kernel, padding):
    x = RNG.normal(size=(2, 6, 5, 3)).astype(np.float32)
    w = RNG.normal(size=(*kernel, 3, 2)).astype(np.float32)
    # A loss that weighs every output differently, so a misplaced output changes the gradient.
    weights = RNG.normal(size=correlation_reference(x, w, padding).shape).astype(np.float32)
    layer = conv2d_layer(w, padding)
    x, w = tf.constant(x), tf.constant(w)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, w])
        fft_loss = tf.reduce_sum(fft_conv2d(x, w, padding) * weights)
        conv_loss = tf.reduce_sum(layer(x) * weights)
    fft_grads = tape.gradient(fft_loss, [x, w])
    conv_grads = tape.gradient(conv_loss, [x, layer.kernel])
    for name, got, want in zip(("inputs", "kernel"), fft_grads, conv_grads, strict=True):
        assert relative_error(got, want.numpy()) < 1e-4, name


def test_gradients_match_finite_differences_in_float64():
    x = RNG.normal(size=(1, 4, 5, 2))
    w = RNG.normal(size=(2, 3, 2, 2))
    b = RNG.normal(size=(2,))
    theoretical, numerical = tf.test.compute_gradient(
        lambda x, w, b: fft_conv2d(x, w, "same", bias=b), [x, w, b], delta=1e-6
    )
    for name, got, want in zip(("inputs", "kernel", "bias"), theoretical, numerical, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0, err_msg=name)


def test_fast_fft_length_has_only_the_factors_2_3_and_5():
    assert [fast_fft_length(n) for n in (1, 2, 7, 11, 66, 97, 121)] == [1, 2, 8, 12, 72, 100, 125]


BAD_ARGUMENTS = [
    ({"padding": "full"}, '`padding` must be "valid" or "same". Received: padding=\'full\''),
    (
        {"data_format": "NHWC"},
        '`data_format` must be "channels_last" or "channels_first". Received: data_format=\'NHWC\'',
    ),
    (
        {"inputs": np.zeros((6, 6, 2))},
        "`inputs` must be 4-D (batch and 2 spatial axes, channels_last). "
        "Received: inputs.shape=(6, 6, 2)",
    ),
    (
        {"kernel": np.zeros((3, 3, 2))},
        "`kernel` must be 4-D (kernel_height, kernel_width, in_channels, out_channels). "
        "Received: kernel.shape=(3, 3, 2)",
    ),
    (
        {"kernel": np.zeros((3, 3, 4, 1))},
        "`kernel` must have as many input channels (axis 2) as `inputs` (axis 3, "
        "channels_last). Received: kernel.shape=(3, 3, 4, 1), 2 input channels",
    ),
    (
        {"kernel": np.zeros((7, 3, 2, 1))},
        '`kernel` must not be larger than the input with padding="valid". '
        "Received: kernel size (7, 3), input size (6, 6)",
    ),
    (
        {"bias": np.zeros((2,))},
        "`bias` must have shape (1,), the kernel's output channels. Received: bias.shape=(2,)",
    ),
]


@pytest.mark.parametrize("overrides, message", BAD_ARGUMENTS)
def test_bad_arguments_are_refused_with_a_message_naming_them(overrides, message):
    arguments = {
        "inputs": np.zeros((1, 6, 6, 2), np.float32),
        "kernel": np.zeros((3, 3, 2, 1), np.float32),
        **overrides,
    }
    with pytest.raises(ValueError, match=re.escape(message)):
        fft_conv2d(**arguments)


def test_a_channel_mismatch_in_channels_first_names_axis_1():
    with pytest.raises(ValueError, match=re.escape("`inputs` (axis 1, channels_first)")):
        fft_conv2d(np.zeros((1, 3, 6, 6)), np.zeros((3, 3, 2, 1)), data_format="channels_first")
