import keras
import numpy as np
import pytest

from kcnn.data import (
    LIST_AUGMENTATIONS,
    PCALighting,
    augmentation_layers,
    make_dataset,
    pca_lighting_basis,
)
from kcnn.training import config_from_dict

RNG = np.random.default_rng(0)


def colour_images(count=40, size=12):
    """Correlated RGB pixels: a shared grey level plus small independent channel noise."""
    grey = RNG.random((count, size, size, 1))
    noise = RNG.normal(0, 0.05, (count, size, size, 3)) * [1.0, 2.0, 0.5]
    return (np.clip(grey * [0.9, 0.7, 0.5] + noise, 0, 1) * 255).round().astype(np.uint8)


def test_pca_basis_is_the_eigen_decomposition_of_the_pixel_covariance():
    images = colour_images()
    eigenvalues, eigenvectors = pca_lighting_basis(images)
    covariance = np.cov(images.reshape(-1, 3).T / 255.0, bias=True)
    for value, vector in zip(eigenvalues, eigenvectors.T, strict=True):
        np.testing.assert_allclose(covariance @ vector, value * vector, atol=1e-6)
    np.testing.assert_allclose(eigenvectors.T @ eigenvectors, np.eye(3), atol=1e-6)
    assert eigenvalues[0] > 10 * eigenvalues[1] > 0  # the grey axis dominates
    np.testing.assert_allclose(
        sorted(eigenvalues), sorted(np.linalg.eigvalsh(covariance)), rtol=1e-5
    )


def test_pca_lighting_shifts_each_image_along_the_components_by_alpha_times_lambda():
    eigenvalues = np.array([0.2, 0.02, 0.005], np.float32)
    eigenvectors = np.linalg.qr(RNG.normal(size=(3, 3)))[0].astype(np.float32)
    layer = PCALighting(eigenvalues, eigenvectors, seed=3)
    images = np.full((2000, 4, 4, 3), 0.5, np.float32)  # far from 0 and 1: no clipping
    shifted = np.asarray(layer(images, training=True)) - images
    # One shift per image, the same at every pixel.
    np.testing.assert_allclose(
        shifted, np.broadcast_to(shifted[:, :1, :1], shifted.shape), atol=1e-6
    )
    alphas = (shifted[:, 0, 0] @ eigenvectors) / eigenvalues  # back to the paper's α_i
    np.testing.assert_allclose(alphas.std(axis=0), 0.1, rtol=0.1)
    np.testing.assert_allclose(alphas.mean(axis=0), 0.0, atol=0.01)
    assert np.abs(np.corrcoef(alphas.T) - np.eye(3)).max() < 0.1
    np.testing.assert_array_equal(layer(images, training=False), images)
    clipped = np.asarray(PCALighting([1.0], [[1.0]], std=5.0, seed=0)(images[:50, ..., :1]))
    assert clipped.min() == 0.0 and clipped.max() == 1.0
    again = PCALighting.from_config(layer.get_config())
    np.testing.assert_array_equal(again(images[:8]), PCALighting(**_args(layer))(images[:8]))


def _args(layer):
    return {k: layer.get_config()[k] for k in ("eigenvalues", "eigenvectors", "std", "seed")}


def _batches(dataset, epochs=2):
    return np.concatenate([np.asarray(images) for _ in range(epochs) for images, _ in dataset])


@pytest.mark.parametrize("augment", [list(LIST_AUGMENTATIONS), ["rotation", "flip"]])
def test_a_list_of_augmentations_is_seeded_and_reproducible(augment):
    images, labels = colour_images(48, 16), np.arange(48) % 3

    def build(seed):
        return make_dataset(images, labels, 16, shuffle=True, seed=seed, augment=augment)

    first, again, other = _batches(build(0)), _batches(build(0)), _batches(build(1))
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)
    assert not np.allclose(first[:48], first[48:])  # each epoch draws anew
    assert first.min() >= 0 and first.max() <= 1


def test_each_listed_layer_is_keras_s_own_where_keras_has_one():
    layers = augmentation_layers(list(LIST_AUGMENTATIONS), colour_images(4), seed=0)
    names = [type(layer).__name__ for layer in layers]
    assert names == [
        "RandomFlip",
        "RandomZoom",
        "RandomTranslation",
        "RandomRotation",
        "RandomBrightness",
        "RandomContrast",
        "PCALighting",
        "RandomErasing",
    ]
    assert isinstance(layers[0], keras.layers.RandomFlip)


def test_flip_alone_mirrors_or_keeps_each_image():
    images = colour_images(32, 8)
    batch = _batches(make_dataset(images, np.zeros(32), 32, augment=["flip"]), epochs=1)
    unit = images / np.float32(255)
    kept = np.all(np.isclose(batch, unit), axis=(1, 2, 3))
    mirrored = np.all(np.isclose(batch, unit[:, :, ::-1]), axis=(1, 2, 3))
    assert np.all(kept | mirrored) and kept.any() and mirrored.any()


def test_random_erasing_replaces_one_rectangle_in_about_half_the_images():
    # Zhong et al. (2017): probability 0.5, area 2-40% of the image; with Keras's draw of
    # each side as sqrt(U(0.02, 0.4)), the expected area is (E sqrt U)^2 = 0.193.
    count, size = 400, 32
    images = np.full((count, size, size, 3), 128, np.uint8)
    batch = _batches(make_dataset(images, np.zeros(count), count, augment=["random_erasing"]), 1)
    changed = np.any(batch != np.float32(128 / 255), axis=-1)
    erased = changed.any(axis=(1, 2))
    assert 0.42 < erased.mean() < 0.58
    areas = []
    for image in changed[erased]:
        rows, cols = np.flatnonzero(image.any(axis=1)), np.flatnonzero(image.any(axis=0))
        box = image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        assert box.mean() > 0.97  # one rectangle (a noise value may land on 128 / 255)
        areas.append(box.size / size**2)
    assert 0.015 < min(areas) and max(areas) < 0.45
    expected = ((2 / 3) * (0.4**1.5 - 0.02**1.5) / 0.38) ** 2
    assert abs(np.mean(areas) - expected) < 0.03
    assert batch.min() >= 0 and batch.max() <= 1


def test_bad_lists_name_the_entry_and_configs_take_lists():
    images = colour_images(4)
    with pytest.raises(ValueError, match=r"Received: 'jitter' in augment=\['flip', 'jitter'\]"):
        make_dataset(images, np.zeros(4), augment=["flip", "jitter"])
    with pytest.raises(ValueError, match=r"must name at least one of"):
        make_dataset(images, np.zeros(4), augment=[])
    config = config_from_dict({"data": {"augment": ["flip", "pca_lighting"]}})
    assert config.data.augment == ["flip", "pca_lighting"]
