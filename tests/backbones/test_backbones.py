import keras
import numpy as np
import pytest

from kcnn.backbones import (
    BACKBONES,
    build_backbone,
    level_stride,
    plain_cnn,
    pyramid_model,
    sorted_levels,
)
from kcnn.backbones.hub import HUB_BUILDERS
from kcnn.tasks import build_classifier

SIZE = 64


def _shapes(backbone, size=SIZE, channels=3):
    outputs = backbone(np.zeros((1, size, size, channels), "float32"))
    return {key: tuple(value.shape[1:3]) for key, value in outputs.items()}


# "valid" stems (CSPDarkNet) make a map one pixel smaller than size / stride; nothing else may.
SLACK = {"csp_darknet53": 1, "csp_darknet_tiny": 1}


@pytest.mark.parametrize(
    "name",
    [
        "resnet18",
        "resnet50",
        "mobilenetv3_small",
        "mobilenetv3_large",
        "efficientnet_b0",
        "csp_darknet_tiny",
    ],
)
def test_hub_backbone_levels_have_the_stride_of_their_key(name):
    backbone = build_backbone(name)
    shapes = _shapes(backbone)
    assert sorted_levels(shapes) == ["P1", "P2", "P3", "P4", "P5"]
    for key, (height, width) in shapes.items():
        expected = SIZE / level_stride(key)
        assert abs(height - expected) <= SLACK.get(name, 0), (key, height)
        assert abs(width - expected) <= SLACK.get(name, 0), (key, width)


def test_pyramid_levels_are_the_deepest_maps_at_each_stride():
    # ResNet-50's P2 must be the output of the last block of the first stack (256 channels),
    # not the first 1x1 conv of the next stack, which also runs at stride 4.
    backbone = build_backbone("resnet50")
    channels = {key: value.shape[-1] for key, value in backbone.output.items()}
    assert channels == {"P1": 64, "P2": 256, "P3": 512, "P4": 1024, "P5": 2048}


def test_adapter_fixes_cspnet_stage_keys_and_mobilenet_missing_pyramid():
    raw_csp = HUB_BUILDERS["csp_darknet_tiny"]((SIZE, SIZE, 3))
    raw_stage0 = raw_csp.pyramid_outputs["P2"]  # keras-hub keys stage 0 as P2 ...
    assert raw_stage0.shape[1] == SIZE // 2 - 1  # ... but it has stride 2
    wrapped = pyramid_model(raw_csp)
    assert wrapped.pyramid_outputs["P1"] is raw_stage0

    raw_mobilenet = HUB_BUILDERS["mobilenetv3_small"]((None, None, 3))
    assert not getattr(raw_mobilenet, "pyramid_outputs", None)
    assert sorted_levels(pyramid_model(raw_mobilenet).output) == ["P1", "P2", "P3", "P4", "P5"]


def test_plain_cnn_levels_and_weights_are_shared_with_the_pyramid():
    backbone = plain_cnn(input_shape=(None, None, 1), filters=(4, 8, 16), convs_per_level=1)
    assert _shapes(backbone, size=32, channels=1) == {"P0": (32, 32), "P1": (16, 16), "P2": (8, 8)}
    # 1 conv per level, 3x3, no bias (batch norm follows), plus 4 BN weights per channel.
    expected = (3 * 3 * 1 * 4 + 4 * 4) + (3 * 3 * 4 * 8 + 4 * 8) + (3 * 3 * 8 * 16 + 4 * 16)
    assert backbone.count_params() == expected


def test_every_listed_backbone_has_a_builder():
    assert set(BACKBONES) == {"plain_cnn", *HUB_BUILDERS}
    for name in ("resnet34", "resnet101", "resnet152", "efficientnet_b2", "csp_darknet53"):
        assert name in BACKBONES


@pytest.mark.parametrize("name", ["plain_cnn", "resnet18"])
def test_weights_load_from_a_local_file(tmp_path, name):
    image = np.random.default_rng(0).random((1, SIZE, SIZE, 3), dtype=np.float32)
    source = build_backbone(name, input_shape=(SIZE, SIZE, 3))
    path = tmp_path / f"{name}.weights.h5"
    source.save_weights(path)
    fresh = build_backbone(name, input_shape=(SIZE, SIZE, 3))
    restored = build_backbone(name, input_shape=(SIZE, SIZE, 3), weights=path)
    key = sorted_levels(source.output)[-1]
    assert not np.allclose(fresh(image)[key], source(image)[key])  # random init differs
    for level, value in source(image).items():
        np.testing.assert_array_equal(restored(image)[level], value)


def test_weights_load_from_a_local_keras_hub_preset_folder(tmp_path):
    image = np.random.default_rng(0).random((1, SIZE, SIZE, 3), dtype=np.float32)
    raw = HUB_BUILDERS["resnet18"]((None, None, 3))
    raw.save_to_preset(str(tmp_path / "preset"))
    restored = build_backbone("resnet18", weights=tmp_path / "preset")
    expected = pyramid_model(raw)(image)
    for level, value in restored(image).items():
        np.testing.assert_allclose(value, expected[level], atol=1e-6)


def test_bad_arguments_name_the_argument(tmp_path):
    with pytest.raises(ValueError, match="`name` must be one of .* Received: name='vgg99'"):
        build_backbone("vgg99")
    with pytest.raises(FileNotFoundError, match="No file at: .*missing.weights.h5"):
        build_backbone("plain_cnn", weights=tmp_path / "missing.weights.h5")
    wrong = tmp_path / "weights.bin"
    wrong.write_bytes(b"x")
    with pytest.raises(ValueError, match="must be a Keras weights file ending in '.weights.h5'"):
        build_backbone("plain_cnn", weights=wrong)
    with pytest.raises(ValueError, match=r"`input_shape` must be \(height, width, channels\)"):
        build_backbone("plain_cnn", input_shape=(32, 32))
    with pytest.raises(ValueError, match="`filters` must be a non-empty sequence"):
        plain_cnn(filters=(8, 0))
    with pytest.raises(ValueError, match="A pyramid level key must look like 'P<k>'"):
        level_stride("stage_0")


def test_classifier_on_a_hub_backbone_round_trips_through_a_keras_file(tmp_path):
    backbone = build_backbone("mobilenetv3_small", input_shape=(32, 32, 3))
    model = build_classifier(backbone, num_classes=4, dropout=0.1)
    images = np.random.default_rng(1).random((2, 32, 32, 3), dtype=np.float32)
    expected = model.predict(images, verbose=0)
    np.testing.assert_allclose(expected.sum(axis=-1), 1.0, rtol=1e-5)
    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(restored.predict(images, verbose=0), expected, atol=1e-6)


def test_classifier_rejects_bad_arguments():
    backbone = build_backbone("plain_cnn", input_shape=(16, 16, 1), filters=(4, 8))
    with pytest.raises(ValueError, match="`num_classes` must be an int >= 2"):
        build_classifier(backbone, num_classes=1)
    with pytest.raises(ValueError, match=r"`level` must be one of .*'P0', 'P1'.*level='P4'"):
        build_classifier(backbone, num_classes=3, level="P4")
