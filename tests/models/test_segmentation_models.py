import keras
import keras_hub
import numpy as np
import pytest

import kcnn  # noqa: F401
from kcnn.analysis import analyze
from kcnn.backbones import build_backbone
from kcnn.models import FCN, MODELS, SegNet, UNet, model_names
from kcnn.models.fcn import BilinearUpsamplingInitializer

from ..backbones.tiny import TINY
from ..layers import citizenship


def tiny_unet(size=32, **kwargs):
    backbone = build_backbone("plain_cnn", input_shape=(size, size, 3), filters=(4, 8, 16))
    return UNet(backbone, num_classes=3, decoder_filters=(8, 4), **kwargs)


def tiny_segnet(size=(32, 32)):
    return SegNet((*size, 3), num_classes=3, filters=(4, 8), convs_per_stage=(1, 1))


def tiny_fcn(size=None):
    backbone = build_backbone("plain_cnn", input_shape=(size, size, 3), filters=(4, 8, 16))
    return FCN(backbone, num_classes=3, skip_levels=1)


def images(shape, seed=0):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def test_registry_names_every_segmentation_model():
    assert {"unet", "segnet", "fcn"} <= set(model_names("segmentation"))
    assert MODELS["unet"].uses_backbone and not MODELS["segnet"].uses_backbone


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv3_small", "efficientnet_b0"])
def test_unet_fits_keras_hub_backbones(name):
    backbone = build_backbone(name, input_shape=(64, 64, 3))
    model = UNet(backbone, num_classes=4, decoder_filters=(16, 8))
    output = model(images((1, 64, 64, 3)))
    assert output.shape == (1, 64, 64, 4)
    np.testing.assert_allclose(np.sum(output, axis=-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("size", [64, 96])
def test_unet_on_csp_darknet_whose_stride_2_level_is_a_pixel_short(size):
    # CSPDarkNet's "valid" stem makes P1 size / 2 - 1 (31 at 64); the decoder pads the
    # upsampled P2 to it, and the output has the input's size.
    backbone = build_backbone("csp_darknet_tiny", input_shape=(size, size, 3))
    assert backbone.output["P1"].shape[1] == size // 2 - 1
    model = UNet(backbone, num_classes=3, decoder_filters=(8,))
    output = model(images((1, size, size, 3)))
    assert output.shape == (1, size, size, 3)
    np.testing.assert_allclose(np.sum(output, axis=-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("shape", [(30, 22), (33, 17)])
@pytest.mark.parametrize("upsampling", ["transpose", "bilinear"])
def test_unet_at_sizes_the_stride_does_not_divide(shape, upsampling):
    # plain_cnn's 2x2 pooling floors odd sizes (33 -> 16 -> 8), "same"-padded keras-hub
    # stems ceil them (17 -> 9 -> 5 ...); each upsampled map is cropped or padded to its
    # skip and the output to the input.
    for backbone in (
        build_backbone("plain_cnn", input_shape=(*shape, 3), filters=(4, 8, 16)),
        build_backbone("resnet18", input_shape=(*shape, 3), **TINY["resnet18"]),
    ):
        model = UNet(backbone, num_classes=3, decoder_filters=(8, 4), upsampling=upsampling)
        assert model(images((1, *shape, 3))).shape == (1, *shape, 3)
    free = UNet(build_backbone("plain_cnn", filters=(4, 8, 16)), 3, decoder_filters=(4,))
    assert free(images((1, *shape, 3))).shape == (1, *shape, 3)
    with pytest.raises(ValueError, match="`upsampling` must be one of"):
        tiny_unet(upsampling="nearest")


def _raw_keras_hub_resnet(size):
    return keras_hub.models.ResNetBackbone(
        image_shape=(size, size, 3),
        block_type="basic_block",
        use_pre_activation=False,
        stackwise_num_strides=[1, 2, 2, 2],
        input_conv_kernel_sizes=[7],
        **TINY["resnet18"],
    )


def test_segmentation_models_take_a_keras_hub_backbone_as_it_is(tmp_path):
    # What a user has after keras_hub.models.Backbone.from_preset(folder): no kcnn wrapper.
    raw = _raw_keras_hub_resnet(64)
    image = images((1, 64, 64, 3))
    for model in (UNet(raw, num_classes=3, decoder_filters=(8,)), FCN(raw, num_classes=3)):
        assert model.backbone.output.keys() == {"P1", "P2", "P3", "P4", "P5"}
        # The backbone's own layers (and weights) are the model's encoder.
        assert raw.get_layer("conv1_conv") in model.backbone.layers
        expected = np.asarray(model(image))
        assert expected.shape == (1, 64, 64, 3)
        path = tmp_path / f"{model.name}.keras"
        model.save(path)
        restored = keras.saving.load_model(path)
        assert type(restored) is type(model)
        np.testing.assert_allclose(restored(image), expected, atol=1e-6)


def test_separable_decoder_saves_parameters_and_macs():
    standard, separable = analyze(tiny_unet(64)), analyze(tiny_unet(64, separable=True))
    assert separable.total_params < standard.total_params
    assert separable.total_macs < 0.7 * standard.total_macs
    # The first decoder block's conv at 32x32: 3x3 over 8 upsampled + 8 skip channels (P1)
    # to 8 filters; separable: 3x3 depthwise over 16 channels, then 1x1 from 16 to 8.
    layer = {record.name: record for record in standard.layers}["decoder0_conv1"]
    assert layer.params == 3 * 3 * 16 * 8 and layer.macs == 32 * 32 * 3 * 3 * 16 * 8
    sep = {record.name: record for record in separable.layers}["decoder0_conv1"]
    assert sep.macs == 32 * 32 * (3 * 3 * 16 + 16 * 8)


def test_segnet_restores_odd_sizes_and_unknown_sizes():
    assert tiny_segnet((30, 22))(images((2, 30, 22, 3))).shape == (2, 30, 22, 3)
    flexible = tiny_segnet((None, None))
    for shape in [(1, 17, 9, 3), (2, 32, 32, 3)]:
        assert flexible(images(shape)).shape == shape[:3] + (3,)


def test_fcn_runs_on_any_input_size():
    model = tiny_fcn()
    for shape in [(1, 30, 22, 3), (1, 64, 48, 3), (2, 7, 9, 3)]:
        output = model(images(shape))
        assert output.shape == shape[:3] + (3,)
    with pytest.raises(ValueError, match="`skip_levels` must be an int in"):
        FCN(build_backbone("plain_cnn", filters=(4, 8)), num_classes=3, skip_levels=2)


def test_fcn_upsampler_starts_as_bilinear_interpolation():
    kernel = np.asarray(BilinearUpsamplingInitializer()((4, 4, 2, 2)))
    profile = np.array([0.25, 0.75, 0.75, 0.25])  # the paper's factor-2 kernel
    np.testing.assert_allclose(kernel[:, :, 0, 0], np.outer(profile, profile))
    np.testing.assert_array_equal(kernel[:, :, 0, 1], 0)
    # A constant map stays constant inside the image after upsampling.
    layer = keras.layers.Conv2DTranspose(
        1,
        4,
        strides=2,
        padding="same",
        use_bias=False,
        kernel_initializer=BilinearUpsamplingInitializer(),
    )
    upsampled = np.asarray(layer(np.ones((1, 6, 6, 1), "float32")))
    np.testing.assert_allclose(upsampled[0, 1:-1, 1:-1, 0], 1.0, atol=1e-6)


@pytest.mark.parametrize(
    "builder", [tiny_unet, tiny_segnet, tiny_fcn], ids=["unet", "segnet", "fcn"]
)
def test_round_trips_and_tflite_builtins(builder, tmp_path):
    model = builder() if builder is not tiny_fcn else tiny_fcn(32)
    x = images((2, 32, 32, 3))
    citizenship.check_keras_file_round_trip(model, x, tmp_path)
    citizenship.check_saved_model_round_trip(model, x, tmp_path)
    citizenship.check_tflite_builtins(model, x, tmp_path, atol=1e-5)


def test_every_model_trains_one_step_under_mirrored_strategy():
    for name in ("tiny_unet", "tiny_segnet", "tiny_fcn"):
        citizenship.check_mirrored_strategy(
            f"""
            import importlib
            module = importlib.import_module("tests.models.test_segmentation_models")
            def model_fn():
                # batch norm statistics are per replica; freeze them so one step must agree
                model = module.{name}() if "{name}" != "tiny_fcn" else module.tiny_fcn(32)
                for layer in model._flatten_layers():
                    if isinstance(layer, keras.layers.BatchNormalization):
                        layer.trainable = False
                return model
            inputs = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
            targets = np.random.default_rng(1).random((4, 32, 32, 3), dtype=np.float32)
            """
        )
