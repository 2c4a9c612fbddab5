"""keras-hub backbone families built from constructor arguments (no preset download).

Each builder returns the raw keras-hub backbone; `kcnn.backbones.build_backbone` wraps it
with `pyramid_model` so it honours the `pyramid_outputs` contract. The architectures are the
published ones (numbers from the papers), not keras-hub presets, which need the network.
"""

import keras_hub


def _resnet(block_type, num_blocks):
    def build(input_shape, **overrides):
        arguments = dict(
            input_conv_filters=[64],
            input_conv_kernel_sizes=[7],
            stackwise_num_filters=[64, 128, 256, 512],
            stackwise_num_blocks=list(num_blocks),
            stackwise_num_strides=[1, 2, 2, 2],
            block_type=block_type,
            use_pre_activation=False,
        )
        arguments.update(overrides)
        return keras_hub.models.ResNetBackbone(image_shape=tuple(input_shape), **arguments)

    build.__doc__ = (
        f"ResNet (He et al. 2016, arXiv:1512.03385) with {block_type} and "
        f"blocks {list(num_blocks)}."
    )
    return build


def _mobilenetv3(large):
    """MobileNetV3 (Howard et al. 2019, arXiv:1905.02244), Tables 1 and 2."""
    relu, hswish = "relu", "hard_swish"

    if large:
        # The first bneck (exp 16, out 16, s1) is keras-hub's depthwise block.
        table = [  # (kernel, expanded, out, se, activation, stride)
            [(3, 64, 24, None, relu, 2), (3, 72, 24, None, relu, 1)],
            [(5, 72, 40, 0.25, relu, 2), (5, 120, 40, 0.25, relu, 1), (5, 120, 40, 0.25, relu, 1)],
            [
                (3, 240, 80, None, hswish, 2),
                (3, 200, 80, None, hswish, 1),
                (3, 184, 80, None, hswish, 1),
                (3, 184, 80, None, hswish, 1),
            ],
            [(3, 480, 112, 0.25, hswish, 1), (3, 672, 112, 0.25, hswish, 1)],
            [
                (5, 672, 160, 0.25, hswish, 2),
                (5, 960, 160, 0.25, hswish, 1),
                (5, 960, 160, 0.25, hswish, 1),
            ],
        ]
        first = dict(
            depthwise_filters=16,
            depthwise_stride=1,
            depthwise_residual=True,
            squeeze_and_excite=None,
        )
        last_layer_filter, output_filters = 960, 1280
    else:
        # The first bneck (exp 16, out 16, SE, s2) is keras-hub's depthwise block.
        table = [
            [(3, 72, 24, None, relu, 2), (3, 88, 24, None, relu, 1)],
            [
                (5, 96, 40, 0.25, hswish, 2),
                (5, 240, 40, 0.25, hswish, 1),
                (5, 240, 40, 0.25, hswish, 1),
            ],
            [(5, 120, 48, 0.25, hswish, 1), (5, 144, 48, 0.25, hswish, 1)],
            [
                (5, 288, 96, 0.25, hswish, 2),
                (5, 576, 96, 0.25, hswish, 1),
                (5, 576, 96, 0.25, hswish, 1),
            ],
        ]
        first = dict(
            depthwise_filters=16,
            depthwise_stride=2,
            depthwise_residual=False,
            squeeze_and_excite=0.25,
        )
        last_layer_filter, output_filters = 576, 1024

    def column(index):
        return [[row[index] for row in stage] for stage in table]

    def build(input_shape, **overrides):
        arguments = dict(
            stackwise_expansion=column(1),
            stackwise_num_blocks=[len(stage) for stage in table],
            stackwise_num_filters=column(2),
            stackwise_kernel_size=column(0),
            stackwise_num_strides=column(5),
            stackwise_se_ratio=column(3),
            stackwise_activation=column(4),
            stackwise_padding=[[row[0] // 2 for row in stage] for stage in table],
            output_num_filters=output_filters,
            last_layer_filter=last_layer_filter,
            input_num_filters=16,
            input_activation=hswish,
            output_activation=hswish,
            **first,
        )
        arguments.update(overrides)
        return keras_hub.models.MobileNetBackbone(image_shape=tuple(input_shape), **arguments)

    build.__doc__ = _mobilenetv3.__doc__
    return build


def _efficientnet(width, depth):
    """EfficientNet (Tan & Le 2019, arXiv:1905.11946), Table 1 scaled by width and depth."""

    def build(input_shape, **overrides):
        arguments = dict(
            width_coefficient=width,
            depth_coefficient=depth,
            stackwise_kernel_sizes=[3, 3, 5, 3, 5, 5, 3],
            stackwise_num_repeats=[1, 2, 2, 3, 3, 4, 1],
            stackwise_input_filters=[32, 16, 24, 40, 80, 112, 192],
            stackwise_output_filters=[16, 24, 40, 80, 112, 192, 320],
            stackwise_expansion_ratios=[1, 6, 6, 6, 6, 6, 6],
            stackwise_squeeze_and_excite_ratios=[0.25] * 7,
            stackwise_strides=[1, 2, 2, 2, 1, 2, 1],
            stackwise_block_types=["v1"] * 7,
            dropout=0.2,
        )
        arguments.update(overrides)
        return keras_hub.models.EfficientNetBackbone(input_shape=tuple(input_shape), **arguments)

    build.__doc__ = _efficientnet.__doc__
    return build


def _csp_darknet(depths, filters):
    """CSPDarkNet (Wang et al. 2020, arXiv:1911.11929) as in timm's `cspdarknet53`."""

    def build(input_shape, **overrides):
        arguments = dict(
            stem_filters=32,
            stem_kernel_size=3,
            stem_strides=1,
            stackwise_depth=list(depths),
            stackwise_strides=[2] * len(depths),
            stackwise_num_filters=list(filters),
            block_type="dark_block",
            stage_type="csp",
            expand_ratio=[2.0] + [1.0] * (len(depths) - 1),
            bottle_ratio=[0.5] + [1.0] * (len(depths) - 1),
            block_ratio=[1.0] + [0.5] * (len(depths) - 1),
            down_growth=True,
        )
        arguments.update(overrides)
        return keras_hub.models.CSPNetBackbone(image_shape=tuple(input_shape), **arguments)

    build.__doc__ = _csp_darknet.__doc__
    return build


def _densenet(num_repeats):
    """DenseNet-BC (Huang et al. 2017, arXiv:1608.06993), Table 1: growth rate 32,
    compression 0.5."""

    def build(input_shape, **overrides):
        arguments = dict(
            stackwise_num_repeats=list(num_repeats), growth_rate=32, compression_ratio=0.5
        )
        arguments.update(overrides)
        return keras_hub.models.DenseNetBackbone(image_shape=tuple(input_shape), **arguments)

    build.__doc__ = f"{_densenet.__doc__[:-1]} Blocks {list(num_repeats)}."
    return build


def _vgg16(input_shape, **overrides):
    """VGG-16 (Simonyan & Zisserman 2015, arXiv:1409.1556), configuration D, without the
    fully connected layers."""
    arguments = dict(
        stackwise_num_repeats=[2, 2, 3, 3, 3], stackwise_num_filters=[64, 128, 256, 512, 512]
    )
    arguments.update(overrides)
    return keras_hub.models.VGGBackbone(image_shape=tuple(input_shape), **arguments)


def _xception(input_shape, **overrides):
    """Xception (Chollet 2017, arXiv:1610.02357), Figure 5: entry flow (two 3x3 convs, three
    separable blocks with pooling), middle flow (8 blocks of 728), exit flow."""
    arguments = dict(
        stackwise_conv_filters=[
            [32, 64],
            [128, 128],
            [256, 256],
            [728, 728],
            *([[728, 728, 728]] * 8),
            [728, 1024],
            [1536, 2048],
        ],
        stackwise_pooling=[False, True, True, True, *([False] * 8), True, False],
    )
    arguments.update(overrides)
    return keras_hub.models.XceptionBackbone(image_shape=tuple(input_shape), **arguments)


def _hgnetv2_b0(input_shape, **overrides):
    """PP-HGNetV2-B0 (PaddleClas 2023; the backbone of RT-DETR, Zhao et al. 2024,
    arXiv:2304.08069): stem 16-16, four stages of HG blocks (64, 256, 512, 1024 channels,
    light blocks with 5x5 kernels in the last two), learnable affine blocks."""
    arguments = dict(
        depths=[1, 1, 2, 1],
        embedding_size=16,
        hidden_sizes=[64, 256, 512, 1024],
        stem_channels=[3, 16, 16],
        hidden_act="relu",
        use_learnable_affine_block=True,
        # (in, mid, out channels, blocks, layers per block, kernel size) per stage.
        stackwise_stage_filters=[
            (16, 16, 64, 1, 3, 3),
            (64, 32, 256, 1, 3, 3),
            (256, 64, 512, 2, 3, 5),
            (512, 128, 1024, 1, 3, 5),
        ],
        apply_downsample=[False, True, True, True],
        use_lightweight_conv_block=[False, False, True, True],
    )
    arguments.update(overrides)
    return keras_hub.models.HGNetV2Backbone(image_shape=tuple(input_shape), **arguments)


HUB_BUILDERS = {
    "resnet18": _resnet("basic_block", (2, 2, 2, 2)),
    "resnet34": _resnet("basic_block", (3, 4, 6, 3)),
    "resnet50": _resnet("bottleneck_block", (3, 4, 6, 3)),
    "resnet101": _resnet("bottleneck_block", (3, 4, 23, 3)),
    "resnet152": _resnet("bottleneck_block", (3, 8, 36, 3)),
    "mobilenetv3_small": _mobilenetv3(large=False),
    "mobilenetv3_large": _mobilenetv3(large=True),
    "efficientnet_b0": _efficientnet(1.0, 1.0),
    "efficientnet_b1": _efficientnet(1.0, 1.1),
    "efficientnet_b2": _efficientnet(1.1, 1.2),
    "csp_darknet53": _csp_darknet((1, 2, 8, 8, 4), (64, 128, 256, 512, 1024)),
    "csp_darknet_tiny": _csp_darknet((1, 1, 1, 1, 1), (32, 64, 128, 256, 512)),
    "densenet121": _densenet((6, 12, 24, 16)),
    "densenet169": _densenet((6, 12, 32, 32)),
    "vgg16": _vgg16,
    "xception": _xception,
    "hgnetv2_b0": _hgnetv2_b0,
}
