"""DeepLabV3+ on kcnn backbones: contract, NumPy references for the ASPP, citizenship."""

import keras
import numpy as np
import pytest

from kcnn.analysis import analyze
from kcnn.backbones import build_backbone
from kcnn.models import MODELS, DeepLabV3Plus, model_names

from ..backbones.tiny import TINY
from ..layers import citizenship, conv_reference

CLASSES = 3


def tiny_backbone(size=None, output_stride=16, filters=(4, 4, 8, 8, 8, 8)):
    shape = (None, None, 3) if size is None else (*size, 3)
    return build_backbone(
        "plain_cnn",
        input_shape=shape,
        filters=filters,
        convs_per_level=1,
        output_stride=output_stride,
    )


def tiny_deeplab(size=None, output_stride=16, **kwargs):
    arguments = dict(atrous_rates=(1, 2), aspp_filters=8, low_level_filters=4, decoder_filters=8)
    arguments.update(kwargs)
    backbone = tiny_backbone(size, output_stride)
    return DeepLabV3Plus(backbone, CLASSES, output_stride=output_stride, **arguments)


def images(shape, seed=0):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def atrous_conv2d_same(x, kernel, rate):
    """float64 loops: output (i, j) sums the taps x[i + (p - k // 2) * rate, ...] inside the
    map ("same" zero padding), for an odd square kernel."""
    x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
    batch, height, width, _ = x.shape
    size = kernel.shape[0]
    outputs = np.zeros((batch, height, width, kernel.shape[-1]))
    for i in range(height):
        for j in range(width):
            for p in range(size):
                for q in range(size):
                    row, col = i + (p - size // 2) * rate, j + (q - size // 2) * rate
                    if 0 <= row < height and 0 <= col < width:
                        outputs[:, i, j] += x[:, row, col] @ kernel[p, q]
    return outputs


def test_registered_for_segmentation_on_a_backbone():
    assert "deeplabv3plus" in model_names("segmentation")
    entry = MODELS["deeplabv3plus"]
    assert entry.builder is DeepLabV3Plus and entry.uses_backbone


@pytest.mark.parametrize(
    "output_stride, shapes",
    [(8, [(33, 17), (48, 40)]), (16, [(33, 17), (48, 40)]), (32, [(48, 40), (64, 32)])],
)
def test_probabilities_at_the_input_size_for_any_size(output_stride, shapes):
    model = tiny_deeplab(output_stride=output_stride, separable=output_stride == 8)
    for shape in shapes:
        output = model(images((2, *shape, 3)))
        assert output.shape == (2, *shape, CLASSES) and output.dtype == "float32"
        np.testing.assert_allclose(np.sum(output, axis=-1), 1.0, rtol=1e-5)
    fixed = tiny_deeplab(size=(33, 17))
    assert fixed.output_shape == (None, 33, 17, CLASSES)


def test_the_aspp_reads_the_deepest_level_of_the_output_stride():
    # A dilated plain_cnn's deepest map has the output stride, and that stride's key.
    for output_stride, level in ((8, "P3"), (16, "P4"), (32, "P5")):
        model = tiny_deeplab(output_stride=output_stride)
        assert (model.aspp_level, model.aspp_stride) == (level, output_stride)
        assert model.backbone.get_layer("level5_conv1_act").output is model.backbone.output[level]
        assert model.low_level_stride == 4
    # Undilated: the deepest level of stride <= 16 is P4; at a fixed size as well.
    undilated = DeepLabV3Plus(tiny_backbone(output_stride=None), CLASSES, aspp_filters=4)
    assert (undilated.aspp_level, undilated.aspp_stride) == ("P4", 16)
    resnet = build_backbone("resnet18", input_shape=(48, 40, 3), **TINY["resnet18"])
    for output_stride, level in ((8, "P3"), (16, "P4"), (32, "P5")):
        model = DeepLabV3Plus(resnet, CLASSES, output_stride=output_stride, aspp_filters=4)
        assert (model.aspp_level, model.aspp_stride) == (level, output_stride)
    assert model(images((1, 48, 40, 3))).shape == (1, 48, 40, CLASSES)


def _set_batch_norm(layer, rng):
    channels = layer.gamma.shape[0]
    layer.set_weights(
        [
            rng.uniform(0.5, 1.5, channels),  # gamma
            rng.normal(0.0, 0.5, channels),  # beta
            rng.normal(0.0, 0.5, channels),  # moving mean
            rng.uniform(0.5, 2.0, channels),  # moving variance
        ]
    )


def test_atrous_branch_and_image_pooling_match_numpy():
    # Output stride 8 at 64x48: the ASPP reads an 8x6 map, so rate 3 reaches real pixels.
    model = tiny_deeplab(output_stride=8, atrous_rates=(1, 3))
    rng = np.random.default_rng(1)
    for name in ("aspp_atrous2_bn", "aspp_image_conv_bn"):
        _set_batch_norm(model.get_layer(name), rng)
    probe = keras.Model(
        model.input,
        [
            model.get_layer("aspp_conv1x1").input,
            model.get_layer("aspp_atrous2_relu").output,
            model.get_layer("aspp_image_broadcast").output,
        ],
    )
    features, atrous, image_level = (np.asarray(value) for value in probe(images((2, 64, 48, 3))))
    assert features.shape == (2, 8, 6, 8)

    def bn_relu(x, name):
        layer = model.get_layer(name)
        return conv_reference.relu(
            conv_reference.batch_norm(x, *layer.get_weights(), layer.epsilon)
        )

    (kernel,) = model.get_layer("aspp_atrous2").get_weights()
    expected = bn_relu(atrous_conv2d_same(features, kernel, rate=3), "aspp_atrous2_bn")
    np.testing.assert_allclose(atrous, expected, atol=1e-5)
    # Image-level features: mean over the map, 1x1 conv, BN, ReLU, the same at every pixel.
    (kernel,) = model.get_layer("aspp_image_conv").get_weights()
    pooled = features.astype(np.float64).mean(axis=(1, 2)) @ kernel[0, 0]
    expected = bn_relu(pooled, "aspp_image_conv_bn")[:, None, None, :]
    np.testing.assert_allclose(image_level, np.broadcast_to(expected, (2, 8, 6, 8)), atol=1e-5)


def test_analysis_sees_every_layer():
    model = tiny_deeplab(size=(64, 64), output_stride=8, separable=True)
    analysis = analyze(model)
    assert analysis.unknown_layers == []
    assert analysis.total_params == model.count_params()
    records = {record.name: record for record in analysis.layers}
    # Depthwise 3x3 over 8 channels, then 1x1 from 8 to 8 filters, at 8x8 positions.
    assert records["aspp_atrous1"].macs == 8 * 8 * (3 * 3 * 8 + 8 * 8)
    assert records["aspp_image_broadcast"].receptive_field == 64


def test_keras_file_round_trip_and_tflite_builtins(tmp_path):
    model = tiny_deeplab(size=(32, 32), output_stride=8)
    config = model.get_config()
    assert config["atrous_rates"] == [1, 2] and config["low_level"] == "P2"
    x = images((2, 32, 32, 3))
    citizenship.check_keras_file_round_trip(model, x, tmp_path)
    restored = keras.saving.load_model(tmp_path / "model.keras")
    assert type(restored) is DeepLabV3Plus
    restored_config = restored.get_config()
    assert restored_config.keys() == config.keys()
    assert {key: restored_config[key] for key in config if key != "backbone"} == {
        key: config[key] for key in config if key != "backbone"
    }
    assert restored.aspp_level == "P3" and restored.aspp_stride == 8
    citizenship.check_tflite_builtins(model, x, tmp_path, atol=1e-5)


def test_one_training_step_lowers_the_loss():
    keras.utils.set_random_seed(0)
    model = tiny_deeplab(size=(32, 32), output_stride=8, dropout=0.0)
    # Eager: tracing the step would take most of the test's time, and the step is the same.
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss="sparse_categorical_crossentropy",
        run_eagerly=True,
    )
    x = images((4, 32, 32, 3))
    y = (x[..., 0] > 0.5).astype("int32") + (x[..., 1] > 0.5).astype("int32")
    loss = keras.losses.SparseCategoricalCrossentropy()

    def training_loss():
        # Training mode: batch statistics, so only the step's weight update moves it.
        return float(loss(y, model(x, training=True)))

    before = training_loss()
    model.train_on_batch(x, y)
    assert training_loss() < before


def test_mixed_precision_keeps_float32_probabilities():
    model = citizenship.built_with_mixed_precision(lambda: tiny_deeplab(output_stride=8))
    assert model.get_layer("aspp_image_broadcast").compute_dtype == "float16"
    output = model(images((1, 40, 24, 3)))
    assert output.dtype == "float32"
    np.testing.assert_allclose(np.sum(output, axis=-1), 1.0, rtol=1e-3)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(num_classes=1), r"`num_classes` must be an int >= 2. Received: num_classes=1"),
        (dict(output_stride=12), r"`output_stride` must be one of \(8, 16, 32\)"),
        (dict(output_stride=16.0), r"Received: output_stride=16.0"),
        (dict(atrous_rates=(6, 0)), r"`atrous_rates` must be .* Received: atrous_rates=\(6, 0\)"),
        (dict(atrous_rates=()), r"`atrous_rates` must be a non-empty sequence of positive ints"),
        (dict(atrous_rates=6), r"Received: atrous_rates=6"),
        (dict(atrous_rates=(1.5,)), r"Received: atrous_rates=\(1.5,\)"),
        (dict(aspp_filters=0), r"`aspp_filters` must be a positive int"),
        (dict(low_level_filters=-1), r"`low_level_filters` must be a positive int"),
        (dict(decoder_filters=None), r"`decoder_filters` must be a positive int"),
        (dict(separable="yes"), r"`separable` must be a bool"),
        (dict(dropout=1.0), r"`dropout` must be a number in \[0, 1\). Received: dropout=1.0"),
        (dict(low_level="P7"), r"`low_level` must be a level of 'plain_cnn' \(\['P0',"),
        # The ASPP level (P4, stride 16) must be coarser than the skip.
        (dict(low_level="P4"), r"`output_stride`=16 needs a level .* coarser than `low_level`"),
    ],
)
def test_bad_arguments_name_the_argument(arguments, message):
    arguments = dict(dict(num_classes=CLASSES, aspp_filters=4), **arguments)
    with pytest.raises(ValueError, match=message):
        DeepLabV3Plus(tiny_backbone(), **arguments)


def test_a_backbone_too_shallow_for_the_skip_is_named():
    shallow = tiny_backbone(output_stride=None, filters=(4, 4, 8))  # P0..P2, stride <= 4
    with pytest.raises(ValueError, match=r"`output_stride`=8 needs a level of 'plain_cnn'"):
        DeepLabV3Plus(shallow, CLASSES, output_stride=8)
