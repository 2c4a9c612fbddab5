import keras
import numpy as np
import pytest

import kcnn.backbones as backbones_module
from kcnn.analysis import analyze
from kcnn.backbones import (
    BACKBONES,
    build_backbone,
    level_stride,
    plain_cnn,
    pyramid_backbone,
    pyramid_model,
    sorted_levels,
)
from kcnn.backbones import pyramid as pyramid_module
from kcnn.backbones.hub import HUB_BUILDERS
from kcnn.tasks import build_classifier

from ..layers import conv_reference
from .tiny import ONE_PER_FAMILY, TINY

SIZE = 64


def _shapes(backbone, size=SIZE, channels=3):
    outputs = backbone(np.zeros((1, size, size, channels), "float32"))
    return {key: tuple(value.shape[1:3]) for key, value in outputs.items()}


# "valid" stems (CSPDarkNet, Xception) make a map one pixel smaller than size / stride;
# nothing else may.
SLACK = {"csp_darknet53": 1, "csp_darknet_tiny": 1, "xception": 1}
# The finest level each family gives: VGG's first block runs at full resolution, HGNetV2's
# stem (stride 4) is one layer, so its stride-2 map is inside it.
FINEST = {"vgg16": "P0", "hgnetv2_b0": "P2"}


# One per family, and the deeper or wider variants whose levels differ (bottleneck ResNet,
# MobileNetV3-Large).
@pytest.mark.parametrize("name", [*ONE_PER_FAMILY, "resnet50", "mobilenetv3_large"])
def test_hub_backbone_levels_have_the_stride_of_their_key(name):
    backbone = build_backbone(name)
    shapes = _shapes(backbone)
    finest = int(FINEST.get(name, "P1")[1:])
    assert sorted_levels(shapes) == [f"P{k}" for k in range(finest, 6)]
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


def _level_layers(backbone):
    """Each level's layer by its place in the model (automatic names differ per build)."""
    return {
        key: backbone.layers.index(tensor._keras_history[0])
        for key, tensor in backbone.output.items()
    }


@pytest.mark.parametrize("name", ["mobilenetv3_small", "csp_darknet_tiny"])
def test_a_second_build_reuses_the_levels_a_fresh_measurement_finds(name, monkeypatch):
    # At 32x32 a 1x1 map is ambiguous: the first build measures on a twin of unknown size,
    # the second (another size, same arguments) takes the positions it found and probes
    # nothing; both must pick the layers that measuring afresh picks.
    monkeypatch.setattr(backbones_module, "_LEVEL_POSITIONS", {})
    first = build_backbone(name, (32, 32, 3), **TINY[name])
    probes = []
    measure = pyramid_module._choose_levels
    monkeypatch.setattr(
        pyramid_module, "_choose_levels", lambda *args: probes.append(args) or measure(*args)
    )
    second = build_backbone(name, (64, 64, 3), **TINY[name])
    assert probes == []
    monkeypatch.setattr(backbones_module, "_LEVEL_POSITIONS", {})
    fresh = build_backbone(name, (64, 64, 3), **TINY[name])
    assert len(probes) == 1
    assert second.pyramid_positions == fresh.pyramid_positions == first.pyramid_positions
    assert _level_layers(second) == _level_layers(fresh)
    assert _shapes(second) == _shapes(fresh)
    # Another input depth is another key: measured, not taken from the first.
    build_backbone(name, (64, 64, 1), **TINY[name])
    assert len(probes) == 2


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
    assert set(BACKBONES) == {"plain_cnn", "block_cnn", *HUB_BUILDERS}
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


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_weights_load_from_a_local_keras_hub_preset_folder(tmp_path, name):
    # A fixed input size: the levels are measured on a twin of unknown size.
    image = np.random.default_rng(0).random((1, SIZE, SIZE, 3), dtype=np.float32)
    raw = HUB_BUILDERS[name]((SIZE, SIZE, 3), **TINY[name])
    raw.save_to_preset(str(tmp_path / "preset"))
    restored = build_backbone(name, weights=tmp_path / "preset")
    expected = pyramid_model(raw, reference=HUB_BUILDERS[name]((None, None, 3), **TINY[name]))
    expected = expected(image)
    assert sorted_levels(restored.output) == sorted_levels(expected)
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


def test_new_families_match_the_published_parameter_counts():
    # Without classifier top: keras.applications' VGG16 (14,714,688) and Xception
    # (20,861,480); DenseNet-121 is keras.applications' 7,037,504 less the final batch norm
    # (4 x 1024), which follows the last level; the pyramid ends at P5.
    counts = {"vgg16": 14_714_688, "xception": 20_861_480, "densenet121": 7_033_408}
    for name, expected in counts.items():
        assert build_backbone(name).count_params() == expected, name
    # HGNetV2-B0's stages end at 64, 256, 512 and 1024 channels (PaddleClas B0).
    channels = {key: value.shape[-1] for key, value in build_backbone("hgnetv2_b0").output.items()}
    assert channels == {"P2": 64, "P3": 256, "P4": 512, "P5": 1024}


def _raw_resnet(image_shape):
    import keras_hub

    return keras_hub.models.ResNetBackbone(
        image_shape=image_shape,
        block_type="basic_block",
        use_pre_activation=False,
        **TINY["resnet18"],
        stackwise_num_strides=[1, 2, 2, 2],
        input_conv_kernel_sizes=[7],
    )


@pytest.mark.parametrize("image_shape", [(16, 16, 3), (None, None, 3)])
def test_pyramid_backbone_adapts_a_keras_hub_instance_and_keeps_a_kcnn_one(image_shape):
    raw = _raw_resnet(image_shape)
    adapted = pyramid_backbone(raw)
    # Same layers and weights, keyed by measured stride. At 16x16 both P4 and P5 are 1x1
    # maps; probing the model itself would call the P5 map P4 and drop P5, so a fixed-size
    # instance is measured on a twin of unknown input size built from its config.
    assert sorted_levels(adapted.output) == ["P1", "P2", "P3", "P4", "P5"]
    assert adapted.count_params() == raw.count_params()
    image = np.random.default_rng(0).random((1, 16, 16, 3), dtype=np.float32)
    features = adapted(image)
    for key, value in features.items():
        assert value.shape[1] == -(-16 // level_stride(key))  # "same" padding: ceil
    np.testing.assert_allclose(features["P5"], raw(image), atol=1e-6)
    assert not np.allclose(features["P4"], features["P5"])
    assert build_classifier(raw, num_classes=3)(image).shape == (1, 3)
    if image_shape[0] is not None:
        assert "P5" not in pyramid_model(raw).output  # what the twin prevents
    assert pyramid_backbone(adapted) is adapted
    kcnn_backbone = build_backbone("plain_cnn", filters=(4, 8))
    assert pyramid_backbone(kcnn_backbone) is kcnn_backbone
    with pytest.raises(TypeError, match="`backbone` must be a keras.Model.*Received: str"):
        pyramid_backbone("resnet18")


def _atrous_kernel(kernel, rate):
    """The kernel with `rate - 1` zeros between its taps: an atrous conv as a plain one."""
    size = (kernel.shape[0] - 1) * rate + 1
    atrous = np.zeros((size, size, *kernel.shape[2:]))
    atrous[::rate, ::rate] = kernel
    return atrous


@pytest.mark.parametrize("output_stride", [1, 2])
def test_dilated_plain_cnn_loads_the_plain_weights_and_matches_a_numpy_atrous_conv(
    output_stride,
):
    arguments = dict(filters=(2, 3, 4), convs_per_level=1, normalization=None)
    plain = plain_cnn(input_shape=(None, None, 2), **arguments)
    dilated = plain_cnn(input_shape=(None, None, 2), output_stride=output_stride, **arguments)
    assert [(w.path, w.shape) for w in dilated.weights] == [
        (w.path, w.shape) for w in plain.weights
    ]
    dilated.set_weights(plain.get_weights())
    image = np.random.default_rng(0).random((2, 13, 9, 2), dtype=np.float32)
    # Each level's own map, read off its last layer (the pyramid keeps the deepest per key).
    levels = keras.Model(
        dilated.input, [dilated.get_layer(f"level{i}_conv1_act").output for i in range(3)]
    )
    dilated_levels = [np.asarray(level) for level in levels(image)]
    plain_maps, dilated_maps = plain(image), dilated(image)
    # Levels past the output stride keep its resolution; the deepest of them has its key.
    assert _shapes(plain, 32, 2) == {"P0": (32, 32), "P1": (16, 16), "P2": (8, 8)}
    expected = {key: (32 // level_stride(key),) * 2 for key in plain.output}
    expected = {key: size for key, size in expected.items() if level_stride(key) <= output_stride}
    assert _shapes(dilated, 32, 2) == expected
    deepest = f"P{output_stride.bit_length() - 1}"
    np.testing.assert_array_equal(dilated_maps[deepest], dilated_levels[2])
    if output_stride == 2:
        np.testing.assert_allclose(dilated_levels[1], plain_maps["P1"], atol=1e-6)
    # Level 2 skipped a pooling of 2 after the output stride (and level 1 one more at 1).
    rate = 4 // output_stride
    kernel, bias = dilated.get_layer("level2_conv1").get_weights()
    reference = conv_reference.relu(
        conv_reference.conv2d(dilated_levels[1], _atrous_kernel(kernel, rate), bias, pad=rate)
    )
    np.testing.assert_allclose(dilated_levels[2], reference, atol=1e-5)


def test_dilated_plain_cnn_keeps_the_receptive_field_of_its_convolutions():
    def field_of_p5(output_stride):
        backbone = plain_cnn(
            input_shape=(64, 64, 3),
            filters=(4, 4, 4, 4, 4, 4),
            convs_per_level=1,
            output_stride=output_stride,
        )
        records = {record.name: record for record in analyze(backbone).layers}
        return records["level5_conv1"].receptive_field, records["level5_conv1"].jump

    # Araujo et al. 2019: a 3x3 conv adds 2 * dilation * jump, a 2x2 pool adds jump and
    # doubles it. Plain: conv 3; per level pool + conv, 3 + (1 + 4) + (2 + 8) + (4 + 16)
    # + (8 + 32) + (16 + 64) = 158 at jump 32. Stride 16: P5 skips its pool (-16) and its
    # conv, dilated 2 at jump 16, adds 2 * 2 * 16 = 64 as before: 142 at jump 16. Stride
    # 8: P4 and P5 skip their pools (-8, -16), their convs (dilated 2 and 4 at jump 8)
    # add 32 and 64: 134 at jump 8.
    assert field_of_p5(None) == (158, 32)
    assert field_of_p5(16) == (142, 16)
    assert field_of_p5(8) == (134, 8)


@pytest.mark.parametrize("output_stride", [0, 12, 16.0, True, "16"])
def test_plain_cnn_rejects_an_output_stride_that_is_not_a_power_of_2(output_stride):
    with pytest.raises(ValueError, match=r"`output_stride` must be None or a power of 2"):
        plain_cnn(filters=(4, 8), output_stride=output_stride)
