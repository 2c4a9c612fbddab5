import keras
import numpy as np
import pytest

import kcnn  # noqa: F401  (registers the kcnn layers, as a user's import would)
from kcnn.data import irregular_masks
from kcnn.layers import PartialConv2D
from kcnn.models import MODELS, ConvUNetInpaint, PConvUNet, model_names

from ..layers import citizenship

SIZE = 32


def tiny(builder=PConvUNet, size=SIZE, **kwargs):
    return builder((size, size, 3), width=4, depth=3, **kwargs)


def inputs(batch=2, size=SIZE, seed=0, area_range=(0.2, 0.4)):
    rng = np.random.default_rng(seed)
    masks = irregular_masks(batch, size, area_range, seed=seed).astype(np.float32)
    images = rng.random((batch, size, size, 3), dtype=np.float32)
    return [images * masks, masks]


def window_any(mask, kernel, stride):
    """1 where a `kernel` window (TensorFlow SAME padding, padding counts as hole) holds a
    valid pixel of any channel: the mask update of a partial convolution."""
    valid = mask.max(axis=-1)
    batch, height, width = valid.shape
    out_h, out_w = -(-height // stride), -(-width // stride)
    top = max((out_h - 1) * stride + kernel - height, 0) // 2
    left = max((out_w - 1) * stride + kernel - width, 0) // 2
    result = np.zeros((batch, out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            rows = slice(max(i * stride - top, 0), max(i * stride - top + kernel, 0))
            cols = slice(max(j * stride - left, 0), max(j * stride - left + kernel, 0))
            result[:, i, j] = valid[:, rows, cols].max(axis=(1, 2))
    return result[..., None]


def mask_outputs(model):
    """A model returning the mask output of every PartialConv2D layer, by layer name."""
    layers = [layer for layer in model.layers if isinstance(layer, PartialConv2D)]
    return [layer.name for layer in layers], keras.Model(
        model.inputs, [layer.output[1] for layer in layers]
    )


def test_registered_for_inpainting_with_paper_layout():
    assert {"pconv_unet", "conv_unet_inpaint"} <= set(model_names("inpainting"))
    assert MODELS["pconv_unet"].builder is PConvUNet
    model = PConvUNet((64, 64, 3), width=8, depth=4)
    assert [tuple(x.shape) for x in model.inputs] == [(None, 64, 64, 3), (None, 64, 64, 1)]
    assert model.output_shape == (None, 64, 64, 3)
    names = {layer.name: layer for layer in model.layers}
    # Kernels 7, 5, 5, 3 and filters w, 2w, 4w, 8w in the encoder; 3x3 in the decoder.
    for level, (kernel, filters) in enumerate(
        zip((7, 5, 5, 3), (8, 16, 32, 64), strict=True), start=1
    ):
        layer = names[f"encoder{level}"]
        assert layer.kernel_size == (kernel, kernel) and layer.filters == filters
        assert layer.strides == (2, 2) and layer.multi_channel
    assert "encoder1_bn" not in names and "encoder2_bn" in names and "encoder1_relu" in names
    assert names["decoder2"].filters == 8 and names["decoder2_leaky_relu"].negative_slope == 0.2
    assert names["output"].filters == 3 and names["output"].kernel_size == (3, 3)
    # The last layer sees the input image and mask beside the upsampled features.
    assert names["decoder1_skip"].input[1] is model.inputs[0]
    assert "output_bn" not in names and "output_leaky_relu" not in names


def test_skip_masks_are_upsampled_concatenated_and_updated():
    model = tiny()
    names, probe = mask_outputs(model)
    image, mask = inputs(area_range=(0.5, 0.6))
    # A hole large enough to reach the coarsest level: only a 3x3 corner is known.
    mask[0] = 0.0
    mask[0, :3, :3] = 1.0
    image = image * mask
    masks = dict(zip(names, [np.asarray(m) for m in probe([image, mask])], strict=True))
    expected = {}
    previous = np.repeat(mask, 3, axis=-1)
    for level, kernel in zip((1, 2, 3), (7, 5, 5), strict=True):
        expected[f"encoder{level}"] = window_any(previous, kernel, 2)
        previous = expected[f"encoder{level}"]
    skip_masks = {0: mask, 1: expected["encoder1"], 2: expected["encoder2"]}
    for level, name in ((2, "decoder3"), (1, "decoder2"), (0, "output")):
        upsampled = previous.repeat(2, axis=1).repeat(2, axis=2)
        expected[name] = window_any(np.concatenate([upsampled, skip_masks[level]], -1), 3, 1)
        previous = expected[name]
    for name, want in expected.items():
        got = masks[name]
        # One channel per filter, all equal (multi-channel masks, as NVIDIA's reference).
        np.testing.assert_array_equal(got, np.repeat(got[..., :1], got.shape[-1], axis=-1))
        np.testing.assert_array_equal(got[..., :1], want, err_msg=name)
    # The hole survives to the coarsest level; the decoder grows the valid region back.
    assert masks["encoder3"][0].min() == 0 and masks["output"][1].min() == 1
    assert masks["output"][0, ..., 0].sum() > masks["decoder2"][0, ..., 0].sum() > 9


@pytest.mark.parametrize("builder", [PConvUNet, ConvUNetInpaint])
def test_output_ignores_what_the_holes_hold(builder):
    model = tiny(builder)
    image, mask = inputs()
    noise = np.random.default_rng(5).random(image.shape, dtype=np.float32)
    filled = image + (1 - mask) * noise
    np.testing.assert_allclose(
        model.predict([filled, mask], verbose=0), model.predict([image, mask], verbose=0), atol=1e-6
    )


def test_sizes_the_depth_does_not_divide_and_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"divisible by 2\*\*depth = 8"):
        PConvUNet((36, 32, 3), width=4, depth=3)
    with pytest.raises(ValueError, match="`width` must be a positive int. Received: width=0"):
        PConvUNet((32, 32, 3), width=0)
    with pytest.raises(ValueError, match="`depth` must be a positive int. Received: depth=1.5"):
        ConvUNetInpaint((32, 32, 3), depth=1.5)
    with pytest.raises(
        ValueError,
        match="`float_decoder_levels` must be a non-negative int. "
        "Received: float_decoder_levels=-1",
    ):
        PConvUNet((32, 32, 3), width=4, depth=3, float_decoder_levels=-1)
    with pytest.raises(
        ValueError,
        match="`float_encoder_levels` must be a non-negative int. "
        "Received: float_encoder_levels=True",
    ):
        PConvUNet((32, 32, 3), width=4, depth=3, float_encoder_levels=True)
    assert PConvUNet((None, None, 3), width=4, depth=2).output_shape == (None, None, None, 3)


def test_float_levels_are_config_and_leave_the_keras_outputs_alone():
    # The float levels only name a scope for int8 exports: same weights, same outputs.
    keras.utils.set_random_seed(0)
    model = tiny(float_encoder_levels=0, float_decoder_levels=0)
    scoped = PConvUNet.from_config(
        {**model.get_config(), "float_encoder_levels": 2, "float_decoder_levels": 3}
    )
    assert scoped.get_config()["float_encoder_levels"] == 2
    assert scoped.get_config()["float_decoder_levels"] == 3
    assert tiny().get_config()["float_decoder_levels"] == 4  # the defaults
    assert tiny().get_config()["float_encoder_levels"] == 1
    scoped.set_weights(model.get_weights())
    np.testing.assert_array_equal(
        scoped.predict(inputs(), verbose=0), model.predict(inputs(), verbose=0)
    )


def test_baseline_has_the_same_size():
    pconv, conv = PConvUNet((64, 64, 3)), ConvUNetInpaint((64, 64, 3))
    assert pconv.count_params() == 2_911_412
    # Only the mask channel's weights in the first and last layers differ.
    assert conv.count_params() - pconv.count_params() == 7 * 7 * 32 + 3 * 3 * 3 * 1


@pytest.mark.parametrize("builder", [PConvUNet, ConvUNetInpaint])
def test_keras_file_saved_model_and_tflite_builtins(builder, tmp_path):
    model = tiny(builder)
    x = inputs()
    citizenship.check_keras_file_round_trip(model, x, tmp_path)
    citizenship.check_saved_model_round_trip(model, x, tmp_path)
    citizenship.check_tflite_builtins(model, x, tmp_path, atol=1e-5)


def test_mixed_precision_keeps_a_float32_output():
    model = citizenship.built_with_mixed_precision(tiny)
    assert model.get_layer("encoder2").compute_dtype == "float16"
    output = model(inputs(), training=False)
    assert output.dtype == "float32" and np.all(np.isfinite(output))
