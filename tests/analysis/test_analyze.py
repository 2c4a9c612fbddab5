import importlib
import json
import math

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from kcnn.analysis import (
    LayerGeometry,
    ModelAnalysis,
    analyze,
    print_analysis,
    register_layer_analyzer,
)

# The package re-exports the function `analyze`, which shadows the module of the same name.
analyze_module = importlib.import_module("kcnn.analysis.analyzers")


def by_name(analysis):
    return {record.name: record for record in analysis.layers}


def small_cnn():
    inputs = keras.Input((32, 32, 3), name="image")
    x = layers.Conv2D(8, 3, name="conv1")(inputs)
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.Conv2D(16, 3, dilation_rate=2, name="dilated")(x)
    x = layers.SeparableConv2D(32, 3, name="separable")(x)
    x = layers.Conv2DTranspose(8, 3, strides=2, name="transpose")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(10, name="head")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


def test_hand_computed_model():
    analysis = analyze(small_cnn())
    # (name, output shape, params, MACs, receptive field, jump), worked out by hand:
    # r_out = r_in + (k - 1) * d * j_in and j_out = j_in * s; transpose: j_out = j_in / s,
    # r_out = r_in + (k - 1) * d * j_out; global pooling covers the 32-pixel input.
    expected = [
        ("image", (None, 32, 32, 3), 0, 0, 1, 1),
        # 32 - 3 + 1 = 30.
        ("conv1", (None, 30, 30, 8), 3 * 3 * 3 * 8 + 8, 30 * 30 * 3 * 3 * 3 * 8, 1 + 2 * 1, 1),
        ("pool", (None, 15, 15, 8), 0, 0, 3 + 1 * 1, 1 * 2),
        # Dilated kernel spans 2 * (3 - 1) + 1 = 5: 15 - 5 + 1 = 11.
        (
            "dilated",
            (None, 11, 11, 16),
            3 * 3 * 8 * 16 + 16,
            11 * 11 * 3 * 3 * 8 * 16,
            4 + (3 - 1) * 2 * 2,
            2,
        ),
        (
            "separable",
            (None, 9, 9, 32),
            3 * 3 * 16 + 16 * 32 + 32,
            9 * 9 * 3 * 3 * 16 + 9 * 9 * 16 * 32,
            12 + (3 - 1) * 1 * 2,
            2,
        ),
        # (9 - 1) * 2 + 3 = 19; every one of the 9 * 9 inputs scatters a 3x3x32x8 kernel.
        (
            "transpose",
            (None, 19, 19, 8),
            3 * 3 * 32 * 8 + 8,
            9 * 9 * 3 * 3 * 32 * 8,
            16 + (3 - 1) * 1 * (2 / 2),
            2 / 2,
        ),
        ("gap", (None, 8), 0, 0, 32, None),
        ("head", (None, 10), 8 * 10 + 10, 8 * 10, 32, None),
    ]
    got = [
        (r.name, r.output_shape, r.params, r.macs, r.receptive_field, r.jump)
        for r in analysis.layers
    ]
    assert got == expected
    assert analysis.total_params == 4482 == small_cnn().count_params()
    assert analysis.total_macs == 194400 + 139392 + 53136 + 186624 + 80
    assert analysis.unknown_layers == []
    assert [type(r.receptive_field) for r in analysis.layers[:6]] == [int] * 6


def test_table_dict_and_str():
    analysis = analyze(small_cnn())
    table = analysis.to_table()
    lines = table.splitlines()
    assert lines[0].split() == [
        "Layer",
        "Type",
        "Output",
        "shape",
        "Params",
        "MACs",
        "RF",
        "Jump",
        "Start",
    ]
    assert lines[-1].split() == ["Total", "4,482", "573,632"]
    assert any(line.split()[:2] == ["dilated", "Conv2D"] for line in lines)
    assert str(analysis) == table
    assert len({len(line) for line in lines if line.startswith("=")}) == 1
    restored = json.loads(json.dumps(analysis.to_dict()))
    assert restored["total_params"] == 4482
    assert restored["layers"][1]["output_shape"] == [None, 30, 30, 8]
    assert restored["layers"][6]["jump"] is None


def test_print_analysis(capsys):
    print_analysis(small_cnn())
    assert capsys.readouterr().out.strip() == analyze(small_cnn()).to_table()


def stacked_3x3(count):
    inputs = keras.Input((16, 16, 1))
    x = inputs
    for _ in range(count):
        x = layers.Conv2D(1, 3, padding="same")(x)
    return keras.Model(inputs, x)


@pytest.mark.parametrize("count, expected", [(1, 3), (2, 5), (3, 7)])
def test_stacked_3x3_convs_vgg(count, expected):
    # Simonyan & Zisserman 2014: two 3x3 convs see 5x5, three see 7x7.
    record = analyze(stacked_3x3(count)).layers[-1]
    assert (record.receptive_field, record.jump) == (expected, 1)


def test_alexnet_receptive_fields():
    # Krizhevsky et al. 2012 layer sizes; Araujo et al. 2019 (Distill) list r = 195 after pool5.
    inputs = keras.Input((227, 227, 3))
    x = layers.Conv2D(2, 11, strides=4, name="conv1")(inputs)
    x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)
    x = layers.Conv2D(2, 5, padding="same", name="conv2")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool2")(x)
    for index in (3, 4, 5):
        x = layers.Conv2D(2, 3, padding="same", name=f"conv{index}")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool5")(x)
    records = by_name(analyze(keras.Model(inputs, x)))
    expected = {
        "conv1": (11, 4, 55),
        "pool1": (11 + 2 * 4, 4 * 2, 27),
        "conv2": (19 + 4 * 8, 8, 27),
        "pool2": (51 + 2 * 8, 16, 13),
        "conv3": (67 + 2 * 16, 16, 13),
        "conv4": (131, 16, 13),
        "conv5": (163, 16, 13),
        "pool5": (195, 32, 6),
    }
    for name, (receptive_field, jump, size) in expected.items():
        record = records[name]
        assert (record.receptive_field, record.jump, record.output_shape[1]) == (
            receptive_field,
            jump,
            size,
        ), name


def test_conv_macs_with_groups_depthwise_1d_3d_and_dense():
    inputs = keras.Input((10, 10, 4))
    grouped = layers.Conv2D(8, 3, groups=2, name="grouped")(inputs)
    depthwise = layers.DepthwiseConv2D(3, depth_multiplier=2, name="depthwise")(inputs)
    per_pixel = layers.Dense(5, name="per_pixel")(inputs)
    records = by_name(analyze(keras.Model(inputs, [grouped, depthwise, per_pixel])))
    assert records["grouped"].macs == 8 * 8 * 3 * 3 * (4 // 2) * 8
    assert records["grouped"].params == 3 * 3 * 2 * 8 + 8
    assert records["depthwise"].macs == 8 * 8 * 3 * 3 * 4 * 2
    assert records["per_pixel"].macs == 10 * 10 * 4 * 5
    assert (records["per_pixel"].receptive_field, records["per_pixel"].jump) == (1, 1)

    sequence = keras.Input((20, 3))
    conv1d = layers.Conv1D(4, 5, strides=2, name="conv1d")(sequence)
    records = by_name(analyze(keras.Model(sequence, conv1d)))
    assert records["conv1d"].macs == 8 * 5 * 3 * 4
    assert (records["conv1d"].receptive_field, records["conv1d"].jump) == (5, 2)

    volume = keras.Input((6, 6, 6, 2))
    conv3d = layers.Conv3D(3, 3, name="conv3d")(volume)
    records = by_name(analyze(keras.Model(volume, conv3d)))
    assert records["conv3d"].macs == 4 * 4 * 4 * 3 * 3 * 3 * 2 * 3
    assert records["conv3d"].receptive_field == 3


def test_non_square_kernel_reports_tuple():
    inputs = keras.Input((12, 12, 1))
    x = layers.Conv2D(1, (3, 5), strides=(1, 2), name="wide")(inputs)
    record = by_name(analyze(keras.Model(inputs, x)))["wide"]
    assert (record.receptive_field, record.jump) == ((3, 5), (1, 2))


@pytest.mark.parametrize(
    "interpolation, expected_receptive_field",
    # Conv 3x3 stride 2 gives r = 3, j = 2; nearest upsampling keeps r, bilinear reads two
    # neighbouring inputs, one input step j = 2 apart.
    [("nearest", 3), ("bilinear", 3 + 2)],
)
def test_upsampling(interpolation, expected_receptive_field):
    inputs = keras.Input((16, 16, 1))
    x = layers.Conv2D(1, 3, strides=2, padding="same")(inputs)
    x = layers.UpSampling2D(2, interpolation=interpolation, name="up")(x)
    record = by_name(analyze(keras.Model(inputs, x)))["up"]
    assert (record.receptive_field, record.jump, record.macs) == (expected_receptive_field, 1, 0)


def test_transpose_conv_fractional_jump_is_a_float():
    inputs = keras.Input((8, 8, 1))
    x = layers.Conv2DTranspose(1, 4, strides=2, name="up")(inputs)
    record = by_name(analyze(keras.Model(inputs, x)))["up"]
    # j = 1 / 2; r = 1 + (4 - 1) * 0.5.
    assert (record.receptive_field, record.jump) == (2.5, 0.5)


def test_merge_takes_largest_receptive_field():
    inputs = keras.Input((16, 16, 2))
    shortcut = layers.Conv2D(2, 1, name="shortcut")(inputs)
    residual = layers.Conv2D(2, 3, padding="same")(inputs)
    residual = layers.Conv2D(2, 3, padding="same")(residual)
    added = layers.Add(name="add")([shortcut, residual])
    joined = layers.Concatenate(name="concat")([shortcut, added])
    records = by_name(analyze(keras.Model(inputs, joined)))
    assert records["shortcut"].receptive_field == 1
    assert records["add"].receptive_field == 5
    assert records["concat"].receptive_field == 5


def make_backbone():
    inputs = keras.Input((None, None, 3), name="backbone_input")
    x = layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.ReLU(name="relu")(x)
    x = layers.Conv2D(16, 3, strides=2, padding="same", name="down")(x)
    return keras.Model(inputs, x, name="backbone")


def test_nested_functional_and_sequential_models():
    backbone = make_backbone()
    block = keras.Sequential(
        [keras.Input((8, 8, 16)), layers.Conv2D(4, 1, name="squeeze")], name="block"
    )
    inputs = keras.Input((16, 16, 3), name="image")
    x = backbone(inputs)
    x = block(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(2, name="head")(x)
    model = keras.Model(inputs, outputs)
    analysis = analyze(model)
    records = by_name(analysis)

    assert analysis.total_params == model.count_params()
    assert list(records) == [
        "image",
        "backbone/stem",
        "backbone/bn",
        "backbone/relu",
        "backbone/down",
        "block/squeeze",
        "gap",
        "head",
    ]
    # The backbone was built for any image size; the classifier's 16x16 input fixes it.
    assert records["backbone/stem"].output_shape == (None, 16, 16, 8)
    assert records["backbone/stem"].macs == 16 * 16 * 3 * 3 * 3 * 8
    assert records["backbone/bn"].params == 4 * 8
    assert records["backbone/down"].macs == 8 * 8 * 3 * 3 * 8 * 16
    assert records["block/squeeze"].macs == 8 * 8 * 16 * 4
    assert analysis.total_macs == (
        16 * 16 * 3 * 3 * 3 * 8 + 8 * 8 * 3 * 3 * 8 * 16 + 8 * 8 * 16 * 4 + 4 * 2
    )
    assert (records["backbone/down"].receptive_field, records["backbone/down"].jump) == (5, 2)
    assert (records["block/squeeze"].receptive_field, records["block/squeeze"].jump) == (5, 2)
    assert records["gap"].receptive_field == 16


def test_shared_layer_counts_params_once_and_macs_per_call():
    shared = layers.Conv2D(4, 3, padding="same", name="shared")
    inputs = keras.Input((8, 8, 4))
    outputs = shared(shared(inputs))
    model = keras.Model(inputs, outputs)
    analysis = analyze(model)
    records = by_name(analysis)
    assert records["shared"].params == 3 * 3 * 4 * 4 + 4
    assert records["shared@1"].params == 0
    assert records["shared"].macs == records["shared@1"].macs == 8 * 8 * 3 * 3 * 4 * 4
    assert records["shared@1"].receptive_field == 5
    assert analysis.total_params == model.count_params()


def test_sequential_models():
    built = keras.Sequential([keras.Input((8, 8, 1)), layers.Conv2D(2, 3, name="conv")])
    assert by_name(analyze(built))["conv"].macs == 6 * 6 * 3 * 3 * 1 * 2

    unbuilt = keras.Sequential([layers.Conv2D(2, 3, name="conv"), layers.Flatten(name="flat")])
    with pytest.raises(TypeError, match="has no input shape yet"):
        analyze(unbuilt)
    records = by_name(analyze(unbuilt, input_shape=(8, 8, 1)))
    assert records["conv"].macs == 6 * 6 * 3 * 3 * 1 * 2
    assert records["flat"].receptive_field == 8


def test_input_shape_for_unknown_spatial_dims():
    backbone = make_backbone()
    with pytest.raises(ValueError, match=r"Cannot count the MACs of layer 'stem'.*input_shape"):
        analyze(backbone)
    records = by_name(analyze(backbone, input_shape=(10, 10, 3)))
    assert records["down"].output_shape == (None, 5, 5, 16)
    assert records["down"].macs == 5 * 5 * 3 * 3 * 8 * 16
    with pytest.raises(ValueError, match=r"`input_shape` does not fit the model input"):
        analyze(backbone, input_shape=(10, 10, 4))
    with pytest.raises(ValueError, match=r"Received: input_shape=\[\(8, 8, 3\), \(8, 8, 3\)\]"):
        analyze(backbone, input_shape=[(8, 8, 3), (8, 8, 3)])


def test_subclassed_model_raises():
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = layers.Conv2D(2, 3)

        def call(self, inputs):
            return self.conv(inputs)

    with pytest.raises(TypeError, match="needs a functional or Sequential model"):
        analyze(Subclassed())


class ConvBlock(layers.Layer):
    """A block with sub-layers and no functional graph."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = layers.Conv2D(4, 3, padding="same")

    def build(self, input_shape):
        self.conv.build(input_shape)

    def call(self, inputs):
        return self.conv(inputs)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 4)


def conv_block_model():
    inputs = keras.Input((8, 8, 2))
    x = ConvBlock(name="block")(inputs)
    x = layers.Conv2D(1, 3, padding="same", name="after")(x)
    return keras.Model(inputs, x)


def test_layer_with_sub_layers_and_no_rule_is_walked_by_its_calls_and_reported():
    # Its sub-layer calls are recorded (params and MACs exact); which call feeds which is
    # unknown, so the receptive field stops there and the block is reported.
    model = conv_block_model()
    analysis = analyze(model)
    records = by_name(analysis)
    assert analysis.unknown_layers == ["block"]
    inner = records[f"block/{model.get_layer('block').conv.name}"]
    assert inner.params == 3 * 3 * 2 * 4 + 4
    assert inner.macs == 8 * 8 * 3 * 3 * 2 * 4
    assert inner.output_shape == (None, 8, 8, 4)
    assert records["block"].params == 0 and records["block"].macs == 0
    assert records["after"].receptive_field is None
    assert records["after"].macs == 8 * 8 * 3 * 3 * 4 * 1
    assert analysis.total_params == model.count_params()
    assert "Not fully analysed" in analysis.to_table()
    assert "block" in analysis.to_table().splitlines()[-1]


def test_registered_analyzer(monkeypatch):
    monkeypatch.setattr(analyze_module, "_ANALYZERS", dict(analyze_module._ANALYZERS))

    @register_layer_analyzer(ConvBlock)
    def conv_block_analyzer(layer, input_shapes, output_shapes):
        assert input_shapes == [(None, 8, 8, 2)] and output_shapes == [(None, 8, 8, 4)]
        return 8 * 8 * 3 * 3 * 2 * 4, LayerGeometry.sliding(3)

    analysis = analyze(conv_block_model())
    records = by_name(analysis)
    assert analysis.unknown_layers == []
    assert records["block"].macs == 8 * 8 * 3 * 3 * 2 * 4
    assert (records["block"].receptive_field, records["after"].receptive_field) == (3, 5)


def test_registered_analyzer_with_bad_result(monkeypatch):
    monkeypatch.setattr(analyze_module, "_ANALYZERS", dict(analyze_module._ANALYZERS))
    register_layer_analyzer(ConvBlock, lambda layer, inputs, outputs: (-1, None))
    with pytest.raises(TypeError, match=r"The analyzer of ConvBlock must return"):
        analyze(conv_block_model())
    with pytest.raises(TypeError, match=r"`layer_class` must be a class"):
        register_layer_analyzer("ConvBlock")
    with pytest.raises(ValueError, match=r"`kind` must be one of .*Received: kind='wavy'"):
        LayerGeometry("wavy")


def test_unregistered_shape_change_and_matmul_are_reported():
    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(2, 3, padding="same", name="conv")(inputs)
    x = layers.Resizing(8, 8, name="resize")(x)
    x = layers.Conv2D(2, 3, padding="same", name="after")(x)
    y = keras.ops.matmul(x, keras.ops.ones((2, 2)))
    analysis = analyze(keras.Model(inputs, y))
    records = by_name(analysis)
    assert analysis.unknown_layers == ["resize", analysis.layers[-1].name]
    assert records["resize"].receptive_field is None
    assert records["after"].receptive_field is None


RESNET_ARGS = dict(
    input_conv_filters=[64],
    input_conv_kernel_sizes=[7],
    stackwise_num_filters=[64, 32],  # keras-hub requires 64 filters in the first stack.
    stackwise_num_blocks=[1, 1],
    stackwise_num_strides=[1, 2],
    block_type="basic_block",
)


def independent_conv_macs(model):
    """Sum H_out * W_out * kh * kw * (C_in / groups) * C_out over every Conv2D of `model`."""
    total = 0
    for layer in model._flatten_layers(include_self=False):
        if type(layer) is layers.Conv2D:
            height, width = layer.output.shape[1:3]
            total += height * width * math.prod(layer.kernel.shape)
    return total


@pytest.mark.parametrize("use_pre_activation", [False, True])
def test_keras_hub_resnet_backbone(use_pre_activation):
    backbone = keras_hub.models.ResNetBackbone(
        **RESNET_ARGS, use_pre_activation=use_pre_activation, image_shape=(32, 32, 3)
    )
    analysis = analyze(backbone)
    assert analysis.total_params == backbone.count_params()
    assert analysis.total_macs == independent_conv_macs(backbone) > 0
    assert analysis.unknown_layers == []
    # Stem 7x7/2 (r 7, j 2), max pool 3/2 (r 11, j 4), two 3x3 (r 27), then 3x3/2 (r 35, j 8)
    # and 3x3 (r 35 + 2 * 8 = 51).
    assert (analysis.layers[-1].receptive_field, analysis.layers[-1].jump) == (51, 8)


def test_keras_hub_backbone_inside_classifier_with_dynamic_image_shape():
    fixed = keras_hub.models.ResNetBackbone(**RESNET_ARGS, image_shape=(32, 32, 3))
    dynamic = keras_hub.models.ResNetBackbone(**RESNET_ARGS)
    inputs = keras.Input((32, 32, 3))
    x = layers.GlobalAveragePooling2D(name="gap")(dynamic(inputs))
    classifier = keras.Model(inputs, layers.Dense(5, name="head")(x))
    analysis = analyze(classifier)
    assert analysis.total_params == classifier.count_params()
    assert analysis.total_macs == independent_conv_macs(fixed) + 32 * 5
    assert all(record.name.startswith(dynamic.name + "/") for record in analysis.layers[1:-2])
    assert isinstance(analysis, ModelAnalysis)


def test_channels_first():
    inputs = keras.Input((3, 12, 10))
    x = layers.Conv2D(4, 3, strides=2, data_format="channels_first", name="conv")(inputs)
    x = layers.GlobalAveragePooling2D(data_format="channels_first", name="gap")(x)
    records = by_name(analyze(keras.Model(inputs, x), data_format="channels_first"))
    assert records["conv"].output_shape == (None, 4, 5, 4)
    assert records["conv"].macs == 5 * 4 * 3 * 3 * 3 * 4
    assert (records["conv"].receptive_field, records["conv"].jump) == (3, 2)
    assert records["gap"].receptive_field == (12, 10)
    with pytest.raises(ValueError, match=r"Received: data_format='nchw'"):
        analyze(keras.Model(inputs, x), data_format="nchw")


def test_keras_hub_image_classifier():
    backbone = keras_hub.models.ResNetBackbone(**RESNET_ARGS, image_shape=(32, 32, 3))
    classifier = keras_hub.models.ResNetImageClassifier(backbone=backbone, num_classes=3)
    analysis = analyze(classifier)
    assert analysis.total_params == classifier.count_params()
    dense_macs = sum(
        math.prod(layer.kernel.shape)
        for layer in classifier._flatten_layers(include_self=False)
        if type(layer) is layers.Dense
    )
    assert analysis.total_macs == independent_conv_macs(backbone) + dense_macs
    assert analysis.unknown_layers == []


@pytest.mark.parametrize(
    "name, paper_macs, last_channels, head_channels",
    [("mobilenetv3_large", 219e6, 960, 1280), ("mobilenetv3_small", 56e6, 576, 1024)],
)
def test_mobilenetv3_blocks_are_walked_and_macs_match_the_paper(
    name, paper_macs, last_channels, head_channels
):
    # Howard et al. 2019 (arXiv:1905.02244), Table 3: multiply-adds of the whole network at
    # 224x224. The backbone ends before the head: a 1x1 conv on the pooled map to 1280
    # (1024) channels and the 1000-way classifier. keras-hub's blocks are subclassed layers.
    from kcnn.backbones import build_backbone

    analysis = analyze(build_backbone(name, (224, 224, 3)))
    head = last_channels * head_channels + head_channels * 1000
    assert abs(analysis.total_macs + head - paper_macs) / paper_macs < 0.02


class SeparableBlock(layers.Layer):
    """A block whose sub-layer has a rule of its own and sub-layers of its own."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        from kcnn.layers import DepthwiseSeparableConv2D

        self.separable = DepthwiseSeparableConv2D(8, 3)

    def call(self, inputs):
        return self.separable(inputs)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 8)


def test_a_sub_layer_with_a_rule_inside_a_block_is_counted_once():
    from kcnn.layers import DepthwiseSeparableConv2D

    inputs = keras.Input((8, 8, 4))
    direct = analyze(keras.Model(inputs, DepthwiseSeparableConv2D(8, 3)(inputs)))
    block = analyze(keras.Model(inputs, SeparableBlock(name="block")(inputs)))
    # Depthwise 3x3 over 4 channels, then 1x1 from 4 to 8, at 8x8 positions.
    assert direct.total_macs == 8 * 8 * (3 * 3 * 4 + 4 * 8)
    assert block.total_macs == direct.total_macs
    assert block.total_params == direct.total_params


@pytest.mark.parametrize("size", [17, 18])
def test_start_and_field_match_the_gradient_support(size):
    """With all-ones weights and no activation, the input pixels an output unit depends on
    are exactly its receptive field (clipped to the image): the field centred at
    `start + n * jump` with size `r` must match the support of the unit's gradient."""
    inputs = keras.Input((size, size, 1))
    x = keras.layers.Conv2D(1, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.AveragePooling2D(2, padding="same")(x)
    x = keras.layers.ZeroPadding2D(((2, 0), (1, 1)))(x)
    x = keras.layers.Conv2D(1, 3, strides=2, padding="same", dilation_rate=1, use_bias=False)(x)
    x = keras.layers.Cropping2D(((1, 0), (0, 1)))(x)
    x = keras.layers.Conv2D(1, 2, dilation_rate=2, use_bias=False)(x)
    model = keras.Model(inputs, x)
    for weight in model.weights:
        weight.assign(np.ones(weight.shape))
    record = analyze(model).layers[-1]
    r, jump, start = record.receptive_field, record.jump, record.start
    assert isinstance(start, tuple)  # the asymmetric padding and cropping differ per axis
    image = tf.constant(np.ones((1, size, size, 1), "float32"))
    out_h, out_w = model.output.shape[1:3]
    for n_h in range(out_h):
        for n_w in range(out_w):
            with tf.GradientTape() as tape:
                tape.watch(image)
                value = model(image)[0, n_h, n_w, 0]
            rows, columns = np.nonzero(tape.gradient(value, image).numpy()[0, ..., 0])
            for support, n, r_axis, j_axis, s_axis in (
                (rows, n_h, *_axis(r, jump, start, 0)),
                (columns, n_w, *_axis(r, jump, start, 1)),
            ):
                first = s_axis + n * j_axis - (r_axis - 1) / 2
                last = first + r_axis - 1
                assert (support.min(), support.max()) == (max(first, 0), min(last, size - 1))


def _axis(r, jump, start, axis):
    return tuple(value[axis] if isinstance(value, tuple) else value for value in (r, jump, start))


def test_kcnn_window_layers_report_the_start_of_their_keras_twins():
    from kcnn.layers import DepthwiseSeparableConv2D, MaxPoolingWithArgmax2D

    def starts(separable, pooling):
        inputs = keras.Input((15, 15, 3))
        x = separable(inputs)
        x = pooling(x)
        x = x[0] if isinstance(x, list | tuple) else x
        return [record.start for record in analyze(keras.Model(inputs, x)).layers[1:]]

    kcnn_starts = starts(
        DepthwiseSeparableConv2D(4, 5, strides=2, padding="same"),
        MaxPoolingWithArgmax2D((3, 3), strides=(2, 2), padding="same"),
    )
    keras_starts = starts(
        layers.SeparableConv2D(4, 5, strides=2, padding="same"),
        layers.MaxPooling2D(3, strides=2, padding="same"),
    )
    assert kcnn_starts == keras_starts and None not in kcnn_starts
