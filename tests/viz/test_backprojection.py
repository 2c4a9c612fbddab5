"""DeconvNet projection, guided backpropagation and guided Grad-CAM against float64 NumPy
passes written from the papers (Zeiler & Fergus 2014; Springenberg et al. 2015)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kcnn.analysis import analyze
from kcnn.layers import ResidualBlock
from kcnn.viz import (
    backward_rule,
    deconvnet_projection,
    explain,
    grad_cam,
    guided_backprop,
    guided_grad_cam,
    plot_saliency,
    signed_display,
)

RNG = np.random.default_rng(7)
KERNEL1 = RNG.normal(size=(3, 3, 1, 2))
KERNEL2 = RNG.normal(size=(3, 3, 2, 3))
DENSE = RNG.normal(size=(12, 4))


def two_layer_network():
    """conv 3x3 (ReLU) -> 2x2 max-pool -> conv 3x3 -> ReLU -> dense softmax, on 10x10."""
    inputs = keras.Input((10, 10, 1))
    x = keras.layers.Conv2D(2, 3, activation="relu", name="conv1")(inputs)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Conv2D(3, 3, name="conv2")(x)
    x = keras.layers.ReLU(name="relu2")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(4, activation="softmax", name="dense")(x)
    model = keras.Model(inputs, outputs)
    model.get_layer("conv1").set_weights([KERNEL1, np.array([0.1, -0.1])])
    model.get_layer("conv2").set_weights([KERNEL2, np.array([0.2, 0.0, -0.2])])
    model.get_layer("dense").set_weights([DENSE, np.zeros(4)])
    return model


def conv(x, kernel, bias):
    k = kernel.shape[0]
    height, width = x.shape[0] - k + 1, x.shape[1] - k + 1
    out = np.zeros((height, width, kernel.shape[-1]))
    for i in range(height):
        for j in range(width):
            out[i, j] = np.tensordot(x[i : i + k, j : j + k], kernel, axes=3) + bias
    return out


def conv_transposed(signal, kernel, input_size):
    """Zeiler & Fergus's "filtering": each output value spreads its filter over its window."""
    k = kernel.shape[0]
    out = np.zeros((*input_size, kernel.shape[2]))
    for i in range(signal.shape[0]):
        for j in range(signal.shape[1]):
            out[i : i + k, j : j + k] += np.tensordot(kernel, signal[i, j], axes=([3], [0]))
    return out


def pool_with_switches(x):
    pooled = np.zeros((x.shape[0] // 2, x.shape[1] // 2, x.shape[2]))
    switches = {}
    for i in range(pooled.shape[0]):
        for j in range(pooled.shape[1]):
            for c in range(x.shape[2]):
                window = x[2 * i : 2 * i + 2, 2 * j : 2 * j + 2, c]
                a, b = np.unravel_index(np.argmax(window), (2, 2))
                pooled[i, j, c] = window[a, b]
                switches[i, j, c] = (2 * i + a, 2 * j + b)
    return pooled, switches


def unpool(signal, switches, size):
    out = np.zeros((*size, signal.shape[2]))
    for (i, j, c), (y, x) in switches.items():
        out[y, x, c] = signal[i, j, c]
    return out


def rectify(signal, forward_input, rule):
    if rule == "deconvnet":
        return np.maximum(signal, 0.0)
    if rule == "guided":
        return signal * (forward_input > 0) * (signal > 0)
    return signal * (forward_input > 0)


def reference(image, rule, seed_at_relu2=None, class_index=None):
    """The whole network forward and back in float64, one step of the papers at a time."""
    z1 = conv(image.astype(np.float64), KERNEL1, np.array([0.1, -0.1]))
    pooled, switches = pool_with_switches(np.maximum(z1, 0.0))
    z2 = conv(pooled, KERNEL2, np.array([0.2, 0.0, -0.2]))
    if seed_at_relu2 is None:
        logits = np.maximum(z2, 0.0).reshape(-1) @ DENSE
        class_index = int(np.argmax(logits)) if class_index is None else class_index
        signal = DENSE[:, class_index].reshape(z2.shape)
    else:
        signal = seed_at_relu2(np.maximum(z2, 0.0))
    signal = conv_transposed(rectify(signal, z2, rule), KERNEL2, pooled.shape[:2])
    signal = unpool(signal, switches, z1.shape[:2])
    return conv_transposed(rectify(signal, z1, rule), KERNEL1, image.shape[:2])


@pytest.fixture(scope="module")
def network_and_image():
    return two_layer_network(), RNG.random((10, 10, 1)).astype("float32")


def test_guided_backprop_of_a_class_score_equals_the_definition(network_and_image):
    model, image = network_and_image
    for class_index in (None, 2):
        expected = reference(image, "guided", class_index=class_index)
        actual = guided_backprop(model, image, class_index)
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)
    # The guided picture is not the plain gradient: the rule changed something.
    plain = reference(image, "backprop")
    assert np.abs(guided_backprop(model, image) - plain).max() > 1e-2


def test_deconvnet_projection_of_a_unit_equals_the_hand_computed_projection(network_and_image):
    model, image = network_and_image

    def strongest_of_channel_1(activations):
        seed = np.zeros_like(activations)
        position = np.unravel_index(np.argmax(activations[..., 1]), activations.shape[:2])
        seed[(*position, 1)] = activations[(*position, 1)]
        return seed

    expected = reference(image, "deconvnet", seed_at_relu2=strongest_of_channel_1)
    actual = deconvnet_projection(model, "relu2", 1, image)
    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)

    # A chosen position, and the class-score form (Springenberg et al.'s deconvnet column).
    def at_0_1(activations):
        seed = np.zeros_like(activations)
        seed[0, 1, 2] = activations[0, 1, 2]
        return seed

    np.testing.assert_allclose(
        deconvnet_projection(model, "relu2", 2, image, position=(0, 1)),
        reference(image, "deconvnet", seed_at_relu2=at_0_1),
        rtol=1e-4,
        atol=1e-5,
    )
    np.testing.assert_allclose(
        explain(model, image, "deconvnet", class_index=1),
        reference(image, "deconvnet", class_index=1),
        rtol=1e-4,
        atol=1e-5,
    )


def test_the_backprop_rule_is_the_plain_gradient(network_and_image):
    model, image = network_and_image
    inputs = tf.constant(image[np.newaxis])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(inputs)
        plain = model(inputs)[0, 1]
        with backward_rule(model, "backprop") as calls:
            ruled = model(inputs)[0, 1]
    assert calls[0] == 2  # conv1's activation and the ReLU layer
    np.testing.assert_allclose(
        tape.gradient(ruled, inputs), tape.gradient(plain, inputs), atol=1e-7
    )
    # Everything is put back afterwards.
    assert model.get_layer("conv1").activation is keras.activations.relu
    assert "call" not in model.get_layer("pool").__dict__
    assert keras.ops.relu.__module__.startswith("keras")


def receptive_box(record, position):
    """Rows and columns (inclusive) of a unit's field from `kcnn.analysis`."""
    r, jump, start = record.receptive_field, record.jump, record.start
    return [(start + p * jump - (r - 1) / 2, start + p * jump + (r - 1) / 2) for p in position]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_unit_projects_inside_its_receptive_field_only(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.MaxPooling2D(padding="same")(x)
    x = keras.layers.ZeroPadding2D(1)(x)
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(x)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="probe")(x)
    model = keras.Model(inputs, x)
    record = next(r for r in analyze(model).layers if r.name == "probe")
    image = np.random.default_rng(1).random((28, 28, 1)).astype("float32")
    activations = np.asarray(model(image[np.newaxis]))[0]
    for position in [(3, 3), (0, 0), (6, 5)]:
        channel = int(np.argmax(activations[position]))
        projection = deconvnet_projection(model, "probe", channel, image, position)[..., 0]
        rows, columns = np.nonzero(projection)
        assert rows.size, position
        (top, bottom), (left, right) = receptive_box(record, position)
        # Nothing outside the field (clipped to the image). How far inside it reaches depends
        # on the weights and the switches; the exact bound is tested in tests/analysis.
        assert rows.min() >= max(top, 0) and rows.max() <= min(bottom, 27), position
        assert columns.min() >= max(left, 0) and columns.max() <= min(right, 27), position
        assert rows.max() - rows.min() + 1 >= 6 and columns.max() - columns.min() + 1 >= 6
    assert (record.receptive_field, record.jump, record.start) == (16, 4, 0.5)


def test_residual_blocks_relus_are_replaced_too():
    inputs = keras.Input((8, 8, 3))
    x = ResidualBlock(4, name="block")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    image = np.random.default_rng(2).random((8, 8, 3)).astype("float32")
    with backward_rule(model, "guided") as calls:
        model(image[np.newaxis])
    assert calls[0] == 2  # relu(F) inside the block and relu(F(x) + x)
    plain = explain(model, image, "saliency")  # a magnitude map, for shape only
    assert guided_backprop(model, image).shape == (*plain.shape, 3)


def test_guided_grad_cam_is_the_product(network_and_image):
    model, image = network_and_image
    expected = guided_backprop(model, image) * grad_cam(model, image, "conv2")[..., None]
    np.testing.assert_allclose(guided_grad_cam(model, image, layer_name="conv2"), expected)
    figure = plot_saliency(image, {"guided": guided_backprop(model, image)})
    shown = figure.axes[1].images[0].get_array()
    np.testing.assert_allclose(shown, signed_display(guided_backprop(model, image))[..., 0])


def test_bad_arguments(network_and_image):
    model, image = network_and_image
    with pytest.raises(ValueError, match=r"`channel` must be an int in \[0, 3\)"):
        deconvnet_projection(model, "relu2", 3, image)
    with pytest.raises(ValueError, match=r"`position` must index the layer's output map"):
        deconvnet_projection(model, "relu2", 0, image, position=(2, 0))
    with pytest.raises(ValueError, match=r"`layer`='dense' must be a layer with a \(batch"):
        deconvnet_projection(model, "dense", 0, image)
    with pytest.raises(ValueError, match=r"Unknown `layer_name`='nope'"):
        deconvnet_projection(model, "nope", 0, image)
    with pytest.raises(ValueError, match=r"`channel` needs a `layer`"):
        deconvnet_projection(model, None, 0, image)
    with pytest.raises(ValueError, match=r"`rule` must be one of"):
        with backward_rule(model, "zeiler"):
            pass
    inputs = keras.Input((6, 6, 1))
    x = keras.layers.Conv2D(2, 3, activation="tanh")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    tanh_model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    with pytest.raises(ValueError, match=r"computes no ReLU through Keras"):
        guided_backprop(tanh_model, np.zeros((6, 6, 1), "float32"))
