import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import kcnn  # noqa: F401  (registers the kcnn layers, as a user's import would)
from kcnn.analysis import analyze
from kcnn.layers import PartialConv2D

from . import citizenship

RNG = np.random.default_rng(0)


def randn(*shape, dtype="float32"):
    return RNG.standard_normal(shape).astype(dtype)


def random_mask(batch, height, width, channels, block=(slice(1, 6), slice(2, 7))):
    """Binary mask with scattered holes and one block hole large enough to empty windows."""
    mask = (RNG.random((batch, height, width, channels)) > 0.4).astype("float32")
    mask[:, block[0], block[1], :] = 0.0
    return mask


def output_size_and_pad_before(size, kernel, stride, dilation, padding):
    """Output length and zeros added before the input, by TensorFlow's SAME / VALID rules."""
    span = (kernel - 1) * dilation + 1
    if padding == "valid":
        return (size - span) // stride + 1, 0
    out = -(-size // stride)
    total = max((out - 1) * stride + span - size, 0)
    return out, total // 2


def window_sums(x, mask, kernel, strides, padding, dilation):
    """Per output position: W * (x . mask) and sum(mask) over the window (padding is hole).

    Direct float64 loops over output positions and kernel taps. A single-channel mask
    applies to every input channel.
    """
    x, mask = x.astype(np.float64), mask.astype(np.float64)
    batch, height, width, channels = x.shape
    kernel_h, kernel_w, _, filters = kernel.shape
    out_h, top = output_size_and_pad_before(height, kernel_h, strides[0], dilation[0], padding)
    out_w, left = output_size_and_pad_before(width, kernel_w, strides[1], dilation[1], padding)
    products = np.zeros((batch, out_h, out_w, filters))
    counts = np.zeros((batch, out_h, out_w))
    for b in range(batch):
        for i in range(out_h):
            for j in range(out_w):
                for p in range(kernel_h):
                    for q in range(kernel_w):
                        row = i * strides[0] + p * dilation[0] - top
                        col = j * strides[1] + q * dilation[1] - left
                        if not (0 <= row < height and 0 <= col < width):
                            continue
                        pixel_mask = np.broadcast_to(mask[b, row, col], (channels,))
                        products[b, i, j] += (x[b, row, col] * pixel_mask) @ kernel[p, q]
                        counts[b, i, j] += mask[b, row, col].sum()
    return products, counts


def partial_conv_reference(x, mask, kernel, bias, strides, padding, dilation):
    """Liu et al. (2018), eqs. (1) and (2), for a binary mask."""
    products, counts = window_sums(x, mask, kernel, strides, padding, dilation)
    full_window = kernel.shape[0] * kernel.shape[1] * mask.shape[-1]
    valid = counts > 0
    scale = np.where(valid, full_window / np.where(valid, counts, 1.0), 0.0)
    outputs = np.where(valid[..., None], products * scale[..., None] + bias, 0.0)
    return outputs, valid[..., None].astype(np.float64)


def nvidia_reference(x, mask, kernel, bias, strides, padding, dilation):
    """`PartialConv2d.forward` of github.com/NVIDIA/partialconv, transcribed to NumPy."""
    products, update_mask = window_sums(x, mask, kernel, strides, padding, dilation)
    slide_winsize = kernel.shape[0] * kernel.shape[1] * mask.shape[-1]
    mask_ratio = slide_winsize / (update_mask + 1e-8)
    update_mask = np.clip(update_mask, 0, 1)
    mask_ratio = mask_ratio * update_mask
    raw_out = products + bias
    output = (raw_out - bias) * mask_ratio[..., None] + bias
    output = output * update_mask[..., None]
    return output, update_mask[..., None]


def layer_weights(layer):
    bias = np.asarray(layer.bias, np.float64) if layer.use_bias else 0.0
    return np.asarray(layer.kernel, np.float64), bias


def two_input_model(layer, height=7, width=9, channels=3, mask_channels=1):
    image = keras.Input((height, width, channels), name="image")
    mask = keras.Input((height, width, mask_channels), name="mask")
    outputs, new_mask = layer([image, mask])
    return keras.Model([image, mask], [outputs, new_mask])


def test_output_shapes_and_weights():
    layer = PartialConv2D(6, 3, strides=2)
    outputs, new_mask = layer([randn(2, 7, 9, 3), random_mask(2, 7, 9, 1)])
    assert tuple(outputs.shape) == (2, 4, 5, 6)
    assert tuple(new_mask.shape) == (2, 4, 5, 1)
    assert layer.compute_output_shape([(2, 7, 9, 3), (2, 7, 9, 1)]) == (
        (2, 4, 5, 6),
        (2, 4, 5, 1),
    )
    assert layer.count_params() == 3 * 3 * 3 * 6 + 6

    multi = PartialConv2D(5, (3, 2), padding="valid", multi_channel=True, use_bias=False)
    outputs, new_mask = multi([randn(1, 7, 9, 3), random_mask(1, 7, 9, 3)])
    assert tuple(outputs.shape) == (1, 5, 8, 5)
    # The reference's mask updater has `out_channels` channels, all equal.
    assert tuple(new_mask.shape) == (1, 5, 8, 5)
    np.testing.assert_array_equal(new_mask, np.repeat(new_mask[..., :1], 5, axis=-1))
    assert multi.count_params() == 3 * 2 * 3 * 5


@pytest.mark.parametrize("multi_channel", [False, True])
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_unknown_batch_and_spatial_dimensions(multi_channel, padding):
    layer = PartialConv2D(4, 3, strides=2, padding=padding, multi_channel=multi_channel)
    mask_channels = 3 if multi_channel else 1
    new_mask_channels = 4 if multi_channel else 1
    unknown = [(None, None, None, 3), (None, None, None, mask_channels)]
    assert layer.compute_output_shape(unknown) == (
        (None, None, None, 4),
        (None, None, None, new_mask_channels),
    )
    symbolic = layer([keras.Input((None, None, 3)), keras.Input((None, None, mask_channels))])
    assert [tuple(tensor.shape) for tensor in symbolic] == [
        (None, None, None, 4),
        (None, None, None, new_mask_channels),
    ]
    for height, width in [(7, 9), (8, 5)]:
        shapes = [(2, height, width, 3), (2, height, width, mask_channels)]
        real = layer([randn(*shapes[0]), random_mask(*shapes[1])])
        assert tuple(tuple(tensor.shape) for tensor in real) == layer.compute_output_shape(shapes)


def test_config_round_trip():
    layer = PartialConv2D(
        8,
        (3, 5),
        strides=(2, 1),
        padding="VALID",
        multi_channel=True,
        use_bias=False,
        activation="relu",
        kernel_initializer="he_normal",
        kernel_regularizer=keras.regularizers.L2(1e-4),
        bias_constraint="non_neg",
        name="pconv",
    )
    assert layer.get_config()["padding"] == "valid"
    citizenship.check_config_round_trip(layer)
    clone = PartialConv2D.from_config(layer.get_config())
    assert clone.kernel_size == (3, 5) and clone.strides == (2, 1) and clone.multi_channel
    assert clone.activation is keras.activations.relu


def test_fit_one_step_and_file_round_trips(tmp_path):
    keras.utils.set_random_seed(1)
    model = two_input_model(PartialConv2D(4, 3, strides=2, bias_initializer="random_normal"))
    inputs = [randn(4, 7, 9, 3), random_mask(4, 7, 9, 1)]
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=["mse", None])
    before = [np.array(w) for w in model.get_weights()]
    model.fit(inputs, [randn(4, 4, 5, 4), None], batch_size=4, epochs=1, verbose=0)
    assert all(not np.allclose(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    citizenship.check_keras_file_round_trip(model, inputs, tmp_path)
    citizenship.check_saved_model_round_trip(model, inputs, tmp_path)


def test_subclassed_model():
    class Encoder(keras.Model):
        def __init__(self):
            super().__init__()
            self.first = PartialConv2D(4, 3, strides=2, activation="relu")
            self.second = PartialConv2D(2, 3)

        def call(self, inputs):
            x, mask = self.first(inputs)
            x, _ = self.second([x, mask])
            return x

    model = Encoder()
    inputs = [randn(4, 7, 9, 3), random_mask(4, 7, 9, 1)]
    model(inputs)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = [np.array(w) for w in model.trainable_weights]
    model.fit(inputs, randn(4, 4, 5, 2), batch_size=4, epochs=1, verbose=0)
    moved = [not np.allclose(a, b) for a, b in zip(before, model.trainable_weights, strict=True)]
    assert all(moved)


def test_mixed_precision():
    def model_fn():
        image, mask = keras.Input((7, 9, 3)), keras.Input((7, 9, 1))
        outputs, _ = PartialConv2D(4, 3, strides=2)([image, mask])
        return keras.Model([image, mask], outputs)

    inputs = [randn(2, 7, 9, 3), random_mask(2, 7, 9, 1)]
    citizenship.check_mixed_precision(model_fn, inputs, randn(2, 4, 5, 4))


def test_float16_keeps_every_hole_and_stays_finite():
    # 300 mask channels: full windows hold 3 * 3 * 300 = 2700 entries, more than float16
    # counts exactly (2048), and windows with a single valid entry have ratio 2700.
    x = randn(1, 5, 5, 300)
    mask = np.zeros((1, 5, 5, 300), "float32")
    mask[0, 0, 0, 0] = 1.0
    mask[0, 3:, 3:, :] = 1.0
    layer = PartialConv2D(2, 3, multi_channel=True, bias_initializer="random_normal")
    half = PartialConv2D.from_config(layer.get_config() | {"dtype": "mixed_float16"})
    outputs, new_mask = (np.asarray(tensor) for tensor in layer([x, mask]))
    half.build([x.shape, mask.shape])
    half.set_weights(layer.get_weights())
    half_outputs, half_mask = half([x, mask])
    assert half_outputs.dtype == "float16" and half_mask.dtype == "float16"
    assert np.all(np.isfinite(half_outputs))
    np.testing.assert_array_equal(np.asarray(half_mask, np.float32), new_mask)
    assert 0 < new_mask.sum() < new_mask.size
    scale = np.abs(outputs).max()
    np.testing.assert_allclose(np.asarray(half_outputs, np.float32), outputs, atol=1e-2 * scale)


def test_jit_compile():
    inputs = [randn(2, 7, 9, 3), random_mask(2, 7, 9, 1)]
    citizenship.check_jit_compile(
        lambda: two_input_model(PartialConv2D(4, 3, strides=2)),
        inputs,
        [randn(2, 4, 5, 4), np.ones((2, 4, 5, 1), "float32")],
    )


def test_mirrored_strategy():
    citizenship.check_mirrored_strategy(
        """
        from kcnn.layers import PartialConv2D

        def model_fn():
            image, mask = keras.Input((7, 9, 3)), keras.Input((7, 9, 3))
            outputs, _ = PartialConv2D(4, 3, multi_channel=True)([image, mask])
            return keras.Model([image, mask], outputs)

        rng = np.random.default_rng(0)
        mask = (rng.random((4, 7, 9, 3)) > 0.5).astype("float32")
        inputs = [rng.standard_normal((4, 7, 9, 3)).astype("float32"), mask]
        targets = rng.standard_normal((4, 7, 9, 4)).astype("float32")
        """
    )


@pytest.mark.parametrize("multi_channel", [False, True])
def test_tflite_builtins(tmp_path, multi_channel):
    mask_channels = 3 if multi_channel else 1
    layer = PartialConv2D(4, 3, strides=2, multi_channel=multi_channel)
    model = two_input_model(layer, mask_channels=mask_channels)
    inputs = [randn(1, 7, 9, 3), random_mask(1, 7, 9, mask_channels)]
    citizenship.check_tflite_builtins(model, inputs, tmp_path)


@pytest.mark.parametrize(
    "kernel_size, strides, padding, dilation, multi_channel, use_bias",
    [
        (3, 1, "same", 1, False, True),
        (3, 2, "same", 1, False, True),
        (3, 2, "valid", 1, True, True),
        (3, 1, "same", 2, True, False),
        ((2, 3), 2, "same", 1, False, True),
        ((3, 2), 1, "valid", (2, 1), True, True),
        (5, 1, "same", 1, False, False),
    ],
)
def test_matches_numpy_reference(kernel_size, strides, padding, dilation, multi_channel, use_bias):
    layer = PartialConv2D(
        4,
        kernel_size,
        strides=strides,
        padding=padding,
        dilation_rate=dilation,
        multi_channel=multi_channel,
        use_bias=use_bias,
        bias_initializer="random_normal",
    )
    x = randn(2, 9, 11, 3)
    mask = random_mask(2, 9, 11, 3 if multi_channel else 1)
    outputs, new_mask = layer([x, mask])
    kernel, bias = layer_weights(layer)
    expected, expected_mask = partial_conv_reference(
        x, mask, kernel, bias, layer.strides, padding, layer.dilation_rate
    )
    # The test covers windows without any valid pixel as well as valid ones.
    assert 0 < expected_mask.sum() < expected_mask.size
    np.testing.assert_allclose(outputs, expected, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(new_mask, np.broadcast_to(expected_mask, new_mask.shape))


@pytest.mark.parametrize("multi_channel", [False, True])
def test_soft_mask_matches_nvidia_reference(multi_channel):
    layer = PartialConv2D(3, 3, multi_channel=multi_channel, bias_initializer="random_normal")
    x = randn(1, 7, 9, 3)
    mask = RNG.random((1, 7, 9, 3 if multi_channel else 1)).astype("float32")
    mask[mask < 0.3] = 0.0
    # Windows whose mask sums below 1 (clamped new mask) and to exactly 0 (hole).
    mask[:, :4, :4] *= 0.05
    mask[:, 4:, 5:] = 0.0
    outputs, new_mask = layer([x, mask])
    kernel, bias = layer_weights(layer)
    expected, expected_mask = nvidia_reference(x, mask, kernel, bias, (1, 1), "same", (1, 1))
    assert np.any((expected_mask > 0) & (expected_mask < 1)) and np.any(expected_mask == 0)
    np.testing.assert_allclose(outputs, expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(new_mask, np.broadcast_to(expected_mask, new_mask.shape), atol=1e-6)


def grow_valid_region(valid):
    """One 3x3 stride-1 "same" layer: a pixel becomes valid if a neighbour (or itself) is."""
    height, width = valid.shape
    padded = np.pad(valid, 1, constant_values=False)
    grown = np.zeros_like(valid)
    for di in range(3):
        for dj in range(3):
            grown |= padded[di : di + height, dj : dj + width]
    return grown


def test_stacked_layers_shrink_the_hole():
    valid = np.ones((15, 15), bool)
    valid[3:12, 3:12] = False  # a 9x9 hole in the middle
    x = randn(1, 15, 15, 2)
    mask = valid[None, :, :, None].astype("float32")
    expected = valid
    for hole_side in (7, 5, 3):
        x, mask = PartialConv2D(2, 3)([x, mask])
        expected = grow_valid_region(expected)
        np.testing.assert_array_equal(np.asarray(mask)[0, :, :, 0], expected.astype("float32"))
        assert (~expected).sum() == hole_side**2
        # Inside the hole the output is exactly 0, bias included.
        assert np.all(np.asarray(x)[0][~expected] == 0.0)


@pytest.mark.parametrize("multi_channel", [False, True])
def test_all_valid_mask_equals_conv2d(multi_channel):
    x = randn(2, 7, 9, 3)
    mask = np.ones((2, 7, 9, 3 if multi_channel else 1), "float32")
    for padding, strides in [("same", 1), ("valid", 1), ("valid", 2)]:
        layer = PartialConv2D(
            4,
            3,
            strides=strides,
            padding=padding,
            multi_channel=multi_channel,
            bias_initializer="random_normal",
        )
        conv = keras.layers.Conv2D(4, 3, strides=strides, padding=padding)
        outputs, new_mask = layer([x, mask])
        conv.build(x.shape)
        conv.set_weights(layer.get_weights())
        expected = np.asarray(conv(x))
        assert np.all(np.asarray(new_mask) == 1.0)
        if padding == "valid":
            np.testing.assert_allclose(outputs, expected, atol=1e-5)
            continue
        np.testing.assert_allclose(outputs[:, 1:-1, 1:-1], expected[:, 1:-1, 1:-1], atol=1e-5)
        # Zero padding counts as hole: a corner window sees 4 of 9 pixels, ratio 9 / 4.
        bias = np.asarray(layer.bias)
        corner = (expected[:, 0, 0] - bias) * 9 / 4 + bias
        np.testing.assert_allclose(outputs[:, 0, 0], corner, atol=1e-5)


def test_activation_applies_after_masking():
    x, mask = randn(1, 7, 9, 3), random_mask(1, 7, 9, 1)
    linear = PartialConv2D(4, 3, bias_initializer="random_normal")
    sigmoid = PartialConv2D.from_config(linear.get_config() | {"activation": "sigmoid"})
    outputs, new_mask = linear([x, mask])
    sigmoid.build([x.shape, mask.shape])
    sigmoid.set_weights(linear.get_weights())
    activated, activated_mask = sigmoid([x, mask])
    assert np.any(np.asarray(new_mask) == 0)
    np.testing.assert_allclose(activated, keras.activations.sigmoid(outputs), atol=1e-6)
    np.testing.assert_array_equal(activated_mask, new_mask)


def test_gradients():
    # tanh makes the output non-linear in x and in the kernel; the mask is a constant.
    layer = PartialConv2D(3, 3, strides=2, activation="tanh", dtype="float64")
    x = tf.constant(RNG.standard_normal((2, 5, 6, 2)))
    mask = tf.constant(random_mask(2, 5, 6, 1, block=(slice(0, 3), slice(0, 3))), tf.float64)
    layer.build([x.shape, mask.shape])

    def check(function, value):
        theoretical, numerical = tf.test.compute_gradient(function, [value], delta=1e-5)
        assert np.abs(theoretical[0]).max() > 0
        np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-6)
        return theoretical[0]

    jacobian = check(lambda inputs: layer([inputs, mask])[0], x)
    # Pixels in holes do not influence the output.
    holes = np.broadcast_to(np.asarray(mask) == 0, x.shape).reshape(-1)
    assert np.all(jacobian[:, holes] == 0) and np.any(jacobian[:, ~holes] != 0)

    def with_kernel(kernel):
        with keras.StatelessScope(state_mapping=[(layer.kernel, kernel)]):
            return layer([x, mask])[0]

    check(with_kernel, layer.kernel.value)


def test_no_gradient_flows_through_the_mask_update():
    layer = PartialConv2D(2, 3)
    x, mask = tf.constant(randn(1, 5, 5, 3)), tf.constant(random_mask(1, 5, 5, 1))
    with tf.GradientTape() as tape:
        tape.watch(mask)
        _, new_mask = layer([x, mask])
    assert tape.gradient(new_mask, mask) is None


def test_mask_dtype_is_cast():
    x, mask = randn(1, 5, 7, 3), random_mask(1, 5, 7, 1)
    layer = PartialConv2D(2, 3)
    outputs, new_mask = layer([x, mask])
    bool_outputs, bool_mask = layer([x, mask.astype(bool)])
    assert bool_mask.dtype == "float32"
    np.testing.assert_array_equal(bool_outputs, outputs)
    np.testing.assert_array_equal(bool_mask, new_mask)


def test_analysis_counts_params_macs_and_receptive_field():
    image, mask = keras.Input((15, 17, 3)), keras.Input((15, 17, 1))
    x, new_mask = PartialConv2D(8, 3, strides=2, name="first")([image, mask])
    x, _ = PartialConv2D(4, 3, dilation_rate=2, name="second")([x, new_mask])
    model = keras.Model([image, mask], x)
    analysis = analyze(model)
    records = {record.name: record for record in analysis.layers}
    first, second = records["first"], records["second"]
    # "same" padding with stride 2: ceil(15 / 2) = 8, ceil(17 / 2) = 9.
    assert first.output_shape == ((None, 8, 9, 8), (None, 8, 9, 1))
    assert first.params == 3 * 3 * 3 * 8 + 8
    assert first.macs == 8 * 9 * 3 * 3 * 3 * 8
    assert (first.receptive_field, first.jump) == (1 + (3 - 1) * 1 * 1, 2)
    assert second.params == 3 * 3 * 8 * 4 + 4
    assert second.macs == 8 * 9 * 3 * 3 * 8 * 4
    assert (second.receptive_field, second.jump) == (3 + (3 - 1) * 2 * 2, 2)
    assert analysis.total_params == model.count_params()
    assert analysis.unknown_layers == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(filters=-1), "`filters` must be a positive int. Received: filters=-1"),
        (
            dict(kernel_size=(3, 0)),
            "`kernel_size` must be a positive int or a tuple of 2 positive ints. "
            "Received: kernel_size=(3, 0)",
        ),
        (
            dict(strides=(1, 2, 1)),
            "`strides` must be a positive int or a tuple of 2 positive ints. "
            "Received: strides=(1, 2, 1)",
        ),
        (
            dict(dilation_rate="2"),
            "`dilation_rate` must be a positive int or a tuple of 2 positive ints. "
            "Received: dilation_rate='2'",
        ),
        (
            dict(strides=(1, 2), dilation_rate=(2, 1)),
            "`strides` > 1 is not supported together with `dilation_rate` > 1. "
            "Received: strides=(1, 2), dilation_rate=(2, 1)",
        ),
        (
            dict(padding="full"),
            '`padding` must be "valid" or "same". Received: padding=\'full\'',
        ),
    ],
)
def test_bad_arguments(kwargs, message):
    arguments = dict(filters=4, kernel_size=3) | kwargs
    with pytest.raises(ValueError, match=re.escape(message)):
        PartialConv2D(**arguments)


@pytest.mark.parametrize(
    "multi_channel, x_shape, mask_shape, message",
    [
        (
            False,
            (2, 7, 9),
            (2, 7, 9, 1),
            "`x` must be a 4D tensor (batch, height, width, channels). Received: x.shape=(2, 7, 9)",
        ),
        (
            False,
            (2, 7, 9, 3),
            (2, 7, 9),
            "`mask` must be a 4D tensor (batch, height, width, channels). "
            "Received: mask.shape=(2, 7, 9)",
        ),
        (
            False,
            (2, 7, 9, 3),
            (2, 7, 8, 1),
            "`mask` must have the spatial size of `x`. "
            "Received: x.shape=(2, 7, 9, 3), mask.shape=(2, 7, 8, 1)",
        ),
        (
            False,
            (2, 7, 9, 3),
            (2, 7, 9, 3),
            "`mask` must have 1 channel when `multi_channel=False`. "
            "Received: mask.shape=(2, 7, 9, 3)",
        ),
        (
            True,
            (2, 7, 9, 3),
            (2, 7, 9, 2),
            "`mask` must have as many channels as `x` when `multi_channel=True`. "
            "Received: x.shape=(2, 7, 9, 3), mask.shape=(2, 7, 9, 2)",
        ),
    ],
)
def test_bad_inputs(multi_channel, x_shape, mask_shape, message):
    x, mask = np.zeros(x_shape, "float32"), np.ones(mask_shape, "float32")
    with pytest.raises(ValueError, match=re.escape(message)):
        PartialConv2D(4, 3, multi_channel=multi_channel)([x, mask])
    symbolic = [keras.Input(batch_shape=x_shape), keras.Input(batch_shape=mask_shape)]
    with pytest.raises(ValueError, match=re.escape(message)):
        PartialConv2D(4, 3, multi_channel=multi_channel)(symbolic)
    built = PartialConv2D(4, 3, multi_channel=multi_channel)
    built.build([(2, 7, 9, 3), (2, 7, 9, 3 if multi_channel else 1)])
    with pytest.raises(ValueError, match=re.escape(message)):
        built([x, mask])


def test_input_that_is_not_a_pair():
    x = np.zeros((2, 7, 9, 3), "float32")
    single = (
        "`PartialConv2D` must be called on a list of two tensors `[x, mask]`. "
        "Received: a single input of shape (2, 7, 9, 3)"
    )
    triple = (
        "`PartialConv2D` must be called on a list of two tensors `[x, mask]`. "
        "Received: inputs=a list of 3 tensors"
    )
    with pytest.raises(ValueError, match=re.escape(single)):
        PartialConv2D(4, 3)(x)
    with pytest.raises(ValueError, match=re.escape(triple)):
        PartialConv2D(4, 3)([x, x, x])
    built = PartialConv2D(4, 3)
    built([x, np.ones((2, 7, 9, 1), "float32")])
    with pytest.raises(ValueError, match=re.escape(single)):
        built(x)
    with pytest.raises(ValueError, match=re.escape(triple)):
        built([x, x, x])
    wider = "`x` must have 3 channels, as when the layer was built. Received: x.shape=(2, 7, 9, 4)"
    with pytest.raises(ValueError, match=re.escape(wider)):
        built([np.zeros((2, 7, 9, 4), "float32"), np.ones((2, 7, 9, 1), "float32")])
    unknown_channels = (
        "The number of channels of `x` must be known to build `PartialConv2D`. "
        "Received: x.shape=(None, 7, 9, None)"
    )
    with pytest.raises(ValueError, match=re.escape(unknown_channels)):
        PartialConv2D(4, 3).build([(None, 7, 9, None), (None, 7, 9, 1)])
