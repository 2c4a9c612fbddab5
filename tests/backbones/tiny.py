"""Small constructor overrides for every backbone: the family's own architecture code with a
few channels, so tests can build every name of `kcnn.backbones.BACKBONES` in seconds."""

from kcnn.backbones import BACKBONES

_RESNET = dict(
    input_conv_filters=[64],  # keras-hub requires 64 filters before the first stack
    stackwise_num_filters=[64, 8, 8, 8],
    stackwise_num_blocks=[1, 1, 1, 1],
)
_MOBILENET = dict(
    stackwise_expansion=[[8], [8], [8], [8]],
    stackwise_num_blocks=[1, 1, 1, 1],
    stackwise_num_filters=[[8], [8], [8], [8]],
    stackwise_kernel_size=[[3], [3], [3], [3]],
    stackwise_num_strides=[[2], [2], [1], [2]],
    stackwise_se_ratio=[[None], [0.25], [None], [0.25]],
    stackwise_activation=[["relu"], ["hard_swish"], ["hard_swish"], ["hard_swish"]],
    stackwise_padding=[[1], [1], [1], [1]],
    output_num_filters=16,
    last_layer_filter=16,
    input_num_filters=8,
    depthwise_filters=8,
)
_EFFICIENTNET = dict(
    width_coefficient=0.25,
    depth_coefficient=0.25,
    stackwise_expansion_ratios=[1, 2, 2, 2, 2, 2, 2],
)
_CSP = dict(stem_filters=8, stackwise_num_filters=[8, 8, 16, 16, 16])
_DENSENET = dict(stackwise_num_repeats=[1, 1, 1, 1], growth_rate=4)
# Small versions of each architecture: the family's code, a few channels.
TINY = {
    "plain_cnn": dict(filters=(4, 4, 8, 8, 8, 8), convs_per_level=1),
    "block_cnn": dict(filters=(4, 4, 8, 8, 8, 8), depths=1),
    **{name: _RESNET for name in BACKBONES if name.startswith("resnet")},
    "mobilenetv3_small": _MOBILENET,
    # The large model's first block keeps stride 1 (the small one's halves).
    "mobilenetv3_large": dict(_MOBILENET, stackwise_num_strides=[[2], [2], [2], [2]]),
    **{name: _EFFICIENTNET for name in BACKBONES if name.startswith("efficientnet")},
    "csp_darknet53": dict(_CSP, stackwise_depth=[1, 1, 1, 1, 1]),
    "csp_darknet_tiny": _CSP,
    "densenet121": _DENSENET,
    "densenet169": _DENSENET,
    "vgg16": dict(stackwise_num_filters=[4, 8, 8, 8, 8]),
    "xception": dict(
        # A block that pools must change the width (keras-hub projects the residual then).
        stackwise_conv_filters=[
            [4, 4],
            [8, 8],
            [12, 12],
            [16, 16],
            [16, 16, 16],
            [16, 24],
            [24, 24],
        ],
        stackwise_pooling=[False, True, True, True, False, True, False],
    ),
    "hgnetv2_b0": dict(
        stem_channels=[3, 8, 8],
        stackwise_stage_filters=[
            (8, 8, 16, 1, 1, 3),
            (16, 8, 16, 1, 1, 3),
            (16, 8, 16, 1, 1, 5),
            (16, 8, 16, 1, 1, 5),
        ],
    ),
}

# One keras-hub backbone per family.
ONE_PER_FAMILY = (
    "resnet18",
    "mobilenetv3_small",
    "efficientnet_b0",
    "csp_darknet_tiny",
    "densenet121",
    "vgg16",
    "xception",
    "hgnetv2_b0",
)

# Names whose tiny build is the architecture of another name, layer for layer: the overrides
# above replace exactly what tells them apart (block counts, width and depth coefficients,
# repeats). `tests/models/test_backbone_matrix.py` checks that they still coincide and runs
# its model matrix once per architecture.
SAME_TINY_ARCHITECTURE = {
    "resnet34": "resnet18",
    "resnet101": "resnet50",
    "resnet152": "resnet50",
    "efficientnet_b1": "efficientnet_b0",
    "efficientnet_b2": "efficientnet_b0",
    "densenet169": "densenet121",
}
