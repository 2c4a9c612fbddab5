import keras
import numpy as np
import pytest

from kcnn.backbones import build_backbone
from kcnn.models import CenterSizeToCorners, build_localizer, get_model_entry

RNG = np.random.default_rng(0)


def small_localizer(num_classes=3, **kwargs):
    keras.utils.set_random_seed(0)
    backbone = build_backbone("plain_cnn", input_shape=(24, 20, 1), filters=(4, 8, 8))
    return build_localizer(backbone, num_classes, box_filters=4, box_units=8, **kwargs)


def test_center_size_to_corners_matches_numpy_and_stays_in_the_image():
    center_size = RNG.random((50, 4)).astype(np.float32)
    expected = np.concatenate(
        [center_size[:, :2] - center_size[:, 2:] / 2, center_size[:, :2] + center_size[:, 2:] / 2],
        axis=1,
    ).clip(0, 1)
    corners = np.asarray(CenterSizeToCorners()(center_size))
    np.testing.assert_allclose(corners, expected, atol=1e-7)
    assert np.all(corners[:, :2] <= corners[:, 2:])
    assert (expected == 0).any() and (expected == 1).any()  # the clipping was exercised


def test_output_is_a_box_then_class_probabilities_and_reloads(tmp_path):
    model = small_localizer(dropout=0.1)
    assert get_model_entry("localizer", "localization").builder is build_localizer
    x = RNG.random((5, 24, 20, 1), dtype=np.float32)
    outputs = np.asarray(model(x))
    assert outputs.shape == (5, 7) and outputs.dtype == np.float32
    np.testing.assert_allclose(outputs[:, 4:].sum(axis=1), 1.0, atol=1e-6)
    assert np.all((outputs[:, :4] >= 0) & (outputs[:, :4] <= 1))
    assert np.all(outputs[:, :2] <= outputs[:, 2:4])
    # The box part is the box head alone: the layer named "box".
    box = keras.Model(model.input, model.get_layer("box").output)(x)
    np.testing.assert_allclose(outputs[:, :4], box, atol=1e-7)
    model.save(tmp_path / "localizer.keras")
    reloaded = keras.saving.load_model(tmp_path / "localizer.keras")
    np.testing.assert_allclose(reloaded(x), outputs, atol=1e-6)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"`level` must be one of the backbone's levels"):
        small_localizer(level="P7")
    with pytest.raises(ValueError, match=r"`box_units` must be a positive int"):
        small_localizer_with(box_units=0)
    with pytest.raises(ValueError, match=r"needs a fixed input size"):
        build_localizer(build_backbone("plain_cnn", input_shape=(None, None, 1), filters=(4,)), 3)
    with pytest.raises(ValueError, match=r"`num_classes` must be an int >= 2"):
        small_localizer(num_classes=1)


def small_localizer_with(**kwargs):
    backbone = build_backbone("plain_cnn", input_shape=(24, 20, 1), filters=(4, 8))
    return build_localizer(backbone, 3, **kwargs)
