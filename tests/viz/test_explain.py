"""Explanations find what a trained model uses; computations match independent references."""

import keras
import numpy as np
import pytest

from kcnn.backbones import build_backbone
from kcnn.data import load_digits
from kcnn.tasks import build_classifier
from kcnn.viz import (
    conv_layer_names,
    deep_dream,
    explain,
    fgsm,
    find_layer,
    grad_cam,
    layer_output,
    occlusion_map,
    saliency_map,
)

SIDE = 16
REGION = (slice(0, SIDE // 2), slice(0, SIDE // 2))  # top-left quadrant


def make_region_images(count, seed):
    """16x16 grey noise; a bright bar somewhere in the top-left quadrant is horizontal
    (class 0) or vertical (class 1), so only that quadrant decides the class. The bar keeps
    two pixels from the quadrant's inner edges, the resolution of a stride-2 Grad-CAM."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 0.3, (count, SIDE, SIDE, 1)).astype("float32")
    labels = rng.integers(0, 2, count)
    for image, label in zip(images, labels, strict=True):
        top, left = rng.integers(0, 3, 2)
        if label == 0:
            image[top + 1, left : left + 4] = 1.0
        else:
            image[top : top + 4, left + 1] = 1.0
    return images, labels


def tiny_classifier(input_shape, num_classes, filters, convs_per_level=2):
    # kcnn's classifier: the backbone is a nested model, as in every kcnn run.
    backbone = build_backbone(
        "plain_cnn", input_shape=input_shape, filters=filters, convs_per_level=convs_per_level
    )
    return build_classifier(backbone, num_classes)


def fit(model, images, labels, epochs):
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.optimizer.build(model.trainable_variables)  # else fit traces its step twice
    model.fit(images, labels, epochs=epochs, batch_size=32, verbose=0)


@pytest.fixture(scope="module")
def region_model():
    keras.utils.set_random_seed(0)
    images, labels = make_region_images(512, seed=0)
    model = tiny_classifier((SIDE, SIDE, 1), 2, filters=(8, 16))
    fit(model, images, labels, epochs=8)
    test_images, test_labels = make_region_images(64, seed=1)
    accuracy = model.evaluate(test_images, test_labels, verbose=0)[1]
    assert accuracy >= 0.95
    return model, test_images[:12]


def _peak_in_region(values):
    row, column = np.unravel_index(np.argmax(values), values.shape)
    return row < SIDE // 2 and column < SIDE // 2


def _share_in_region(values):
    values = np.maximum(values, 0)
    return values[REGION].sum() / values.sum()


@pytest.mark.parametrize(
    "method",
    [
        lambda model, image: saliency_map(model, image),
        lambda model, image: saliency_map(model, image, smoothgrad_samples=16, noise=0.1),
        lambda model, image: occlusion_map(model, image, patch=4, stride=2),
        lambda model, image: grad_cam(model, image),
    ],
    ids=["saliency", "smoothgrad", "occlusion", "gradcam"],
)
def test_explanations_peak_in_the_region_that_decides_the_class(region_model, method):
    model, images = region_model
    maps = [method(model, image) for image in images]
    assert all(values.shape == (SIDE, SIDE) for values in maps)
    # A map that ignored the model would peak there for about a quarter of the images.
    assert sum(_peak_in_region(values) for values in maps) >= 11
    assert np.mean([_share_in_region(values) for values in maps]) > 0.3


def test_grad_cam_defaults_to_the_last_conv_layer_of_the_nested_backbone(region_model):
    model, images = region_model
    assert conv_layer_names(model) == [
        "level0_conv1",
        "level0_conv2",
        "level1_conv1",
        "level1_conv2",
    ]
    np.testing.assert_allclose(
        grad_cam(model, images[0]), grad_cam(model, images[0], "level1_conv2"), atol=1e-6
    )
    full_resolution = grad_cam(model, images[0], "level0_conv2")
    assert full_resolution.max() == pytest.approx(1.0) and full_resolution.min() >= 0.0


def test_saliency_of_a_linear_softmax_model_is_the_class_weights():
    # S_c = w_c . x + b_c (the input of the softmax), so dS_c/dx = w_c exactly.
    inputs = keras.Input((3, 4, 2))
    dense = keras.layers.Dense(3, activation="softmax")
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    weights = np.asarray(dense.kernel).reshape(3, 4, 2, 3)
    image = np.random.default_rng(0).random((3, 4, 2)).astype("float32")
    expected = np.abs(weights[..., 2]).max(axis=-1)
    np.testing.assert_allclose(saliency_map(model, image, class_index=2), expected, rtol=1e-5)
    # Default class: the top-scoring one.
    top = int(np.argmax(model(image[None])[0]))
    np.testing.assert_allclose(
        saliency_map(model, image), np.abs(weights[..., top]).max(axis=-1), rtol=1e-5
    )
    # The same layers as a Sequential model.
    sequential = keras.Sequential([keras.Input((3, 4, 2)), keras.layers.Flatten(), dense])
    np.testing.assert_allclose(saliency_map(sequential, image, class_index=2), expected, rtol=1e-5)


def test_grad_cam_matches_its_definition_inside_a_nested_model():
    # conv (linear) -> GAP -> dense: dS_c/dA_k = v_kc / (h w) at every position, so
    # alpha_k = v_kc / (h w) and the map is ReLU(sum_k alpha_k A_k), resized and scaled.
    inner_inputs = keras.Input((6, 6, 2))
    conv = keras.layers.Conv2D(5, 3, padding="same", name="features")
    inner = keras.Model(inner_inputs, conv(inner_inputs), name="backbone")
    inputs = keras.Input((6, 6, 2))
    dense = keras.layers.Dense(3, activation="softmax")
    model = keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D()(inner(inputs))))
    image = np.random.default_rng(1).normal(size=(6, 6, 2)).astype("float32")
    activations = np.asarray(conv(image[None]))[0].astype(np.float64)
    alpha = np.asarray(dense.kernel, np.float64)[:, 1] / 36.0
    expected = np.maximum(activations @ alpha, 0.0)
    expected /= expected.max()
    np.testing.assert_allclose(
        grad_cam(model, image, "features", class_index=1), expected, atol=1e-5
    )


def test_layer_output_of_a_nested_layer_equals_the_sub_model_output(region_model):
    model, images = region_model
    backbone = model.get_layer("plain_cnn")
    sub_model = keras.Model(backbone.input, backbone.get_layer("level1_conv1_act").output)
    np.testing.assert_allclose(
        layer_output(model, images, "level1_conv1_act", batch_size=5),
        np.asarray(sub_model(images)),
        atol=1e-6,
    )
    pooled = layer_output(model, images, "pool")
    assert pooled.shape == (12, 16)


def test_deep_dream_raises_the_layer_activation(region_model):
    model, images = region_model
    before = layer_output(model, images[:1], "level1_conv1_act").mean()
    dreamed = deep_dream(model, images[0], "level1_conv1_act", steps=10, step_size=0.02)
    after = layer_output(model, dreamed[None], "level1_conv1_act").mean()
    assert after > 1.2 * before
    assert dreamed.shape == images[0].shape and 0.0 <= dreamed.min() and dreamed.max() <= 1.0


@pytest.fixture(scope="module")
def digits_model():
    keras.utils.set_random_seed(0)
    (x_train, y_train), (x_test, y_test) = load_digits()
    x_train, x_test = x_train.astype("float32") / 255.0, x_test.astype("float32") / 255.0
    model = tiny_classifier((8, 8, 1), 10, filters=(16, 32), convs_per_level=1)
    fit(model, x_train, y_train, epochs=10)
    correct = model.predict(x_test, verbose=0).argmax(-1) == y_test
    assert correct.mean() >= 0.9
    return model, x_test[correct], y_test[correct]


def test_fgsm_flips_most_predictions_within_epsilon(digits_model):
    model, images, labels = digits_model
    epsilon = 0.1
    adversarial = fgsm(model, images, labels, epsilon)
    assert np.abs(adversarial - images).max() <= epsilon + 1e-6
    assert adversarial.min() >= 0.0 and adversarial.max() <= 1.0
    flipped = (model.predict(adversarial, verbose=0).argmax(-1) != labels).mean()
    assert flipped > 0.5
    # The gradient's sign is what does it: random signs of the same size flip far fewer.
    signs = np.random.default_rng(0).choice([-1.0, 1.0], size=images.shape)
    noisy = np.clip(images + epsilon * signs, 0.0, 1.0).astype("float32")
    assert (model.predict(noisy, verbose=0).argmax(-1) != labels).mean() < flipped / 3


def test_bad_arguments_name_themselves(region_model):
    model, images = region_model
    with pytest.raises(ValueError, match=r"`image` must have the shape of one model input"):
        saliency_map(model, np.zeros((8, 8, 1), "float32"))
    with pytest.raises(ValueError, match=r"`image` must be floats"):
        grad_cam(model, np.zeros((SIDE, SIDE, 1), "uint8"))
    with pytest.raises(ValueError, match=r"Unknown `layer_name`='nope'.*level1_conv2"):
        grad_cam(model, images[0], "nope")
    with pytest.raises(ValueError, match=r"`layer_name`='predictions' must name a layer with"):
        grad_cam(model, images[0], "predictions")
    with pytest.raises(ValueError, match=r"`class_index` must be None or an int in \[0, 2\)"):
        saliency_map(model, images[0], class_index=2)
    with pytest.raises(ValueError, match=r"`patch` must fit in the image"):
        occlusion_map(model, images[0], patch=17)
    with pytest.raises(ValueError, match=r"`method` must be one of .*Received: method='lime'"):
        explain(model, images[0], "lime")
    with pytest.raises(ValueError, match=r"`labels` must be 12 ints in \[0, 2\)"):
        fgsm(model, images, np.zeros(3, int), 0.1)
    with pytest.raises(ValueError, match=r"`epsilon` must be >= 0"):
        fgsm(model, images, np.zeros(12, int), -0.1)
    with pytest.raises(
        ValueError, match=r"`images` must have a batch of model inputs \(N, 16, 16, 1\)"
    ):
        layer_output(model, images[0], "pool")
    assert find_layer(model, "level0_conv1").name == "level0_conv1"
