import math
import re

import keras
import numpy as np
import pytest

from kcnn.analysis import analyze
from kcnn.backbones import BLOCK_TYPES, block_cnn, build_backbone, plain_cnn
from kcnn.layers import (
    BottleneckBlock,
    DeformableConv2D,
    DepthwiseSeparableConv2D,
    InceptionModule,
    ResidualBlock,
)

# The layer each block type is named after: `level{l}_block{i}_{suffix}`.
MAIN_LAYERS = {
    "plain": ("conv", keras.layers.Conv2D),
    "separable": ("separable", DepthwiseSeparableConv2D),
    "residual": ("residual", ResidualBlock),
    "bottleneck": ("bottleneck", BottleneckBlock),
    "inception": ("inception", InceptionModule),
    "deformable": ("deformable", DeformableConv2D),
}
BLOCK_NAME = re.compile(r"^level(\d+)_block(\d+)_")


def _image(size, channels=1, seed=0):
    return np.random.default_rng(seed).random((1, size, size, channels), dtype=np.float32)


def _shapes(outputs):
    return {key: tuple(value.shape[1:]) for key, value in outputs.items()}


def _blocks_per_level(model):
    """{level: number of distinct blocks}, read from the layer names."""
    blocks = {tuple(map(int, BLOCK_NAME.match(name).groups())) for name in _names(model)}
    counts = {}
    for level, _ in blocks:
        counts[level] = counts.get(level, 0) + 1
    return counts


def _names(model):
    return [layer.name for layer in model.layers if BLOCK_NAME.match(layer.name)]


def _rounded(filters, width_multiplier):
    # The documented rule, computed here: half up to a multiple of 4, at least 4.
    return max(4, 4 * math.floor(filters * width_multiplier / 4 + 0.5))


@pytest.mark.parametrize("depth", [1, 2])
@pytest.mark.parametrize("kernel_size", [3, 5])
def test_plain_blocks_are_plain_cnn(depth, kernel_size):
    arguments = dict(input_shape=(16, 16, 1), filters=(4, 8, 16), kernel_size=kernel_size)
    reference = plain_cnn(convs_per_level=depth, **arguments)
    model = block_cnn(depths=depth, blocks="plain", width_multiplier=1.0, **arguments)
    assert model.count_params() == reference.count_params()
    image = _image(16)
    assert _shapes(model(image)) == _shapes(reference(image))
    # Same layers in the same order: plain_cnn's weights give plain_cnn's features.
    model.set_weights(reference.get_weights())
    for key, value in reference(image).items():
        np.testing.assert_allclose(model(image)[key], value, atol=1e-6)


@pytest.mark.parametrize("block", BLOCK_TYPES)
def test_each_block_type_gives_the_pyramid(block):
    model = block_cnn(input_shape=(16, 16, 1), filters=(8, 16), depths=2, blocks=block)
    assert _shapes(model(_image(16))) == {"P0": (16, 16, 8), "P1": (8, 8, 16)}
    assert sorted(model.pyramid_outputs) == ["P0", "P1"]
    assert _blocks_per_level(model) == {0: 2, 1: 2}
    suffix, layer_type = MAIN_LAYERS[block]
    for level in (0, 1):
        for index in (1, 2):
            layer = model.get_layer(f"level{level}_block{index}_{suffix}")
            assert isinstance(layer, layer_type), layer


def test_bottleneck_and_inception_split_the_width_in_quarters():
    model = block_cnn(input_shape=(8, 8, 1), filters=(16,), depths=1, blocks="bottleneck")
    bottleneck = model.get_layer("level0_block1_bottleneck")
    assert (bottleneck.filters, bottleneck.expansion) == (4, 4)
    model = block_cnn(input_shape=(8, 8, 1), filters=(16,), depths=1, blocks="inception")
    config = model.get_layer("level0_block1_inception").get_config()
    widths = [config[key] for key in sorted(config) if key.startswith("filters_")]
    assert widths == [4] * 6


def test_mixed_stages_follow_their_blocks_depths_and_kernel_sizes():
    model = block_cnn(
        input_shape=(16, 16, 1),
        filters=(8, 8, 16),
        depths=[1, 3, 2],
        blocks=("residual", "separable", "deformable"),
        kernel_size=[3, 5, 7],
    )
    assert _blocks_per_level(model) == {0: 1, 1: 3, 2: 2}
    assert len([name for name in _names(model) if name.startswith("level1_block")]) == 3
    assert model.get_layer("level1_block3_separable").kernel_size == (5, 5)
    assert model.get_layer("level2_block2_deformable").kernel_size == (7, 7)
    pools = [layer.name for layer in model.layers if layer.name.endswith("_pool")]
    assert pools == ["level1_pool", "level2_pool"]
    assert _shapes(model(_image(16))) == {"P0": (16, 16, 8), "P1": (8, 8, 8), "P2": (4, 4, 16)}


@pytest.mark.parametrize("width_multiplier", [0.1, 0.5, 0.75, 1.0, 1.3, 2.0])
def test_width_multiplier_rounds_half_up_to_a_multiple_of_4(width_multiplier):
    filters = (6, 10, 20, 36)
    model = block_cnn(
        input_shape=(8, 8, 1),
        filters=filters,
        depths=1,
        blocks=["bottleneck", "inception", "plain", "separable"],
        width_multiplier=width_multiplier,
    )
    channels = [value.shape[-1] for value in model.output.values()]
    assert channels == [_rounded(value, width_multiplier) for value in filters]


def test_width_rounding_examples():
    # The docstring's example, a tie (10 / 4 = 2.5 goes up) and the floor of 4.
    def channels(filters, width_multiplier):
        model = block_cnn(
            input_shape=(8, 8, 1), filters=filters, depths=1, width_multiplier=width_multiplier
        )
        return [value.shape[-1] for value in model.output.values()]

    assert channels((16, 32, 64), 0.75) == [12, 24, 48]
    assert channels((10, 1), 1.0) == [12, 4]


def test_bad_arguments_name_the_argument():
    arguments = dict(input_shape=(8, 8, 1), filters=(8, 16))
    with pytest.raises(ValueError, match=r"`blocks` must be one of .*Received: blocks='dense'"):
        block_cnn(blocks="dense", **arguments)
    with pytest.raises(ValueError, match=r"`blocks` .*Received: blocks=\['plain', 'Plain'\]"):
        block_cnn(blocks=["plain", "Plain"], **arguments)
    with pytest.raises(ValueError, match=r"list or tuple of 2 .*Received: depths=\[1, 2, 3\]"):
        block_cnn(depths=[1, 2, 3], **arguments)
    with pytest.raises(ValueError, match=r"`blocks` .*Received: blocks=\('plain',\)"):
        block_cnn(blocks=("plain",), **arguments)
    with pytest.raises(ValueError, match=r"`depths` must be a positive int.*Received: depths=0"):
        block_cnn(depths=0, **arguments)
    with pytest.raises(ValueError, match=r"`depths` .*Received: depths=\[2, -1\]"):
        block_cnn(depths=[2, -1], **arguments)
    with pytest.raises(ValueError, match=r"`kernel_size` must be a positive odd int"):
        block_cnn(kernel_size=[3, 4], **arguments)
    for bad in (0, -0.5, float("inf"), "1"):
        with pytest.raises(ValueError, match=r"`width_multiplier` must be a positive number"):
            block_cnn(width_multiplier=bad, **arguments)
    with pytest.raises(ValueError, match=r"`batch_norm_momentum` must be a float in \[0, 1\)"):
        block_cnn(batch_norm_momentum=1.0, **arguments)
    with pytest.raises(ValueError, match=r"`filters` must be a non-empty sequence"):
        block_cnn(filters=(8, 0))


def test_build_backbone_and_round_trips_with_every_block_type(tmp_path):
    # Six levels, one per block type; at 32x32 the last level is 1x1.
    model = build_backbone(
        "block_cnn",
        input_shape=(32, 32, 1),
        filters=(4, 8, 8, 8, 8, 8),
        depths=1,
        blocks=list(BLOCK_TYPES),
    )
    assert model.name == "block_cnn"
    image = _image(32, seed=3)
    expected = model(image)
    assert sorted(expected) == [f"P{level}" for level in range(6)]
    assert analyze(model).total_params == model.count_params()

    rebuilt = keras.Model.from_config(model.get_config())
    assert not np.allclose(rebuilt(image)["P0"], expected["P0"])  # random init differs
    rebuilt.set_weights(model.get_weights())
    path = tmp_path / "block_cnn.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    for restored in (rebuilt, loaded):
        values = restored(image)
        assert sorted(values) == sorted(expected)
        for key, value in expected.items():
            np.testing.assert_allclose(values[key], value, atol=1e-6)
