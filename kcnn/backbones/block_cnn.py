"""A CNN encoder whose stages are made of kcnn's own blocks: a search space over them."""

import math

import keras

from kcnn._validation import is_int, is_number
from kcnn.backbones.pyramid import level_name
from kcnn.layers import (
    BottleneckBlock,
    DeformableConv2D,
    DepthwiseSeparableConv2D,
    InceptionModule,
    ResidualBlock,
)

BLOCK_TYPES = ("plain", "separable", "residual", "bottleneck", "inception", "deformable")
# Stage widths are multiples of 4, so a bottleneck's inner width (a quarter, ResNet's
# expansion of 4) and the four equal Inception branches are whole numbers of channels.
WIDTH_DIVISOR = 4
BOTTLENECK_EXPANSION = 4


def block_cnn(
    input_shape=(None, None, 3),
    filters=(16, 32, 64),
    depths=2,
    blocks="plain",
    kernel_size=3,
    width_multiplier=1.0,
    batch_norm_momentum=0.9,
    name="block_cnn",
):
    """Builds a pyramid encoder whose stages are stacks of kcnn blocks chosen per stage.

    The search space of `kcnn tune`: per stage, a block type, a depth and a kernel size,
    and one width multiplier for the whole encoder. The layout is `plain_cnn`'s: level 0
    runs at full resolution; every further level max-pools by 2, then runs `depths[level]`
    blocks of type `blocks[level]`. The output dict is keyed `"P0"` (stride 1) to
    `"P{n-1}"` (stride 2**(n-1)) for `n = len(filters)`. Block types, by paper:

    - `"plain"`: conv (no bias) -> batch norm -> ReLU, the VGG convolution (Simonyan &
      Zisserman 2015, arXiv:1409.1556) exactly as `plain_cnn` builds it: with
      `blocks="plain"`, `width_multiplier=1` and filters that are multiples of 4,
      `block_cnn` is `plain_cnn` with `convs_per_level=depths`, weight for weight (only
      the layer names differ).
    - `"separable"`: `DepthwiseSeparableConv2D`, MobileNet's depthwise conv -> batch norm
      -> ReLU -> 1x1 conv -> batch norm -> ReLU (Howard et al. 2017, arXiv:1704.04861).
    - `"residual"`: `ResidualBlock`, ResNet's basic block of two 3x3 convs (He et al.
      2016, arXiv:1512.03385). Ignores `kernel_size`.
    - `"bottleneck"`: `BottleneckBlock`, ResNet's 1x1-3x3-1x1 block with inner width
      `width / 4` and expansion 4, so it outputs `width` channels. Ignores `kernel_size`.
    - `"inception"`: `InceptionModule`, GoogLeNet's four branches (Szegedy et al. 2015,
      arXiv:1409.4842) with `width / 4` channels each (1x1; 3x3; 5x5; pool projection) and
      `width / 4` in both 1x1 reductions: the paper's table 1 gives the branches unequal
      shares, but equal quarters are whole for every multiple of 4. Its convolutions
      have biases and ReLU and no batch norm, as in the paper. Ignores `kernel_size` and
      `batch_norm_momentum`.
    - `"deformable"`: `DeformableConv2D` (no bias) -> batch norm -> ReLU (Dai et al. 2017,
      arXiv:1703.06211), with the layer's default modulation of Deformable ConvNets v2
      (Zhu et al. 2019, arXiv:1811.11168) and zero-initialised offsets, so it starts as a
      plain convolution times 0.5.

    Every block pads "same" and has stride 1, so the max-pooling alone sets a level's
    stride. A residual or bottleneck block whose input has another channel count (the
    first of a level, unless the width stays the same) has a 1x1 convolution with batch
    norm as its shortcut (ResNet's option B); the others add the identity. A stage's
    width is `filters[level] * width_multiplier` rounded half up to a multiple of 4, at
    least 4: `max(4, 4 * floor(filters * width_multiplier / 4 + 0.5))`, so
    `filters=(16, 32, 64)` at `width_multiplier=0.75` gives 12, 24 and 48.

    Layers are named `level{l}_block{i}_{kind}` (`i` from 1), `kind` being `conv`,
    `separable`, `residual`, `bottleneck`, `inception` or `deformable`; a plain or
    deformable block's batch norm and ReLU add `_bn` and `_act`, and level `l > 0` starts
    with `level{l}_pool`.

    Args:
        input_shape: tuple `(height, width, channels)`; height and width may be None.
            Defaults to `(None, None, 3)`.
        filters: sequence of positive ints, the width of each level before
            `width_multiplier`. Defaults to `(16, 32, 64)`.
        depths: positive int, or a list or tuple of one per level: the number of blocks.
            Defaults to 2.
        blocks: one of `BLOCK_TYPES`, or a list or tuple of one per level. Defaults to
            `"plain"`.
        kernel_size: positive odd int, or a list or tuple of one per level. Even sizes are
            refused: "same" padding would shift each map by half a pixel. Defaults to 3.
        width_multiplier: positive number scaling every level's width (rounded as above).
            Defaults to 1.0.
        batch_norm_momentum: float in [0, 1). Momentum of the moving statistics. Defaults
            to 0.9, as `plain_cnn` (Keras's 0.99 barely moves them in a short run).
        name: str. Model name. Defaults to `"block_cnn"`.

    Returns:
        A functional `keras.Model` with a dict output keyed by pyramid level, also set as
        its `pyramid_outputs` attribute.

    Raises:
        ValueError: on an invalid argument, a per-level list whose length is not
            `len(filters)`, or an unknown block type; the message names the argument.

    Example:
    >>> backbone = block_cnn(
    ...     input_shape=(16, 16, 1), filters=(8, 16), depths=[1, 2], blocks=["plain", "residual"]
    ... )
    >>> {key: tuple(value.shape[1:]) for key, value in backbone.output.items()}
    {'P0': (16, 16, 8), 'P1': (8, 8, 16)}
    """
    filters = tuple(filters)
    if not filters or not all(is_int(value) and value > 0 for value in filters):
        raise ValueError(
            f"`filters` must be a non-empty sequence of positive ints. Received: filters={filters}"
        )
    levels = len(filters)
    depths = _per_level(depths, "depths", levels, "a positive int", _is_positive_int)
    blocks = _per_level(blocks, "blocks", levels, f"one of {BLOCK_TYPES}", _is_block_type)
    kernel_sizes = _per_level(kernel_size, "kernel_size", levels, "a positive odd int", _is_odd)
    if not is_number(width_multiplier) or not 0 < width_multiplier < math.inf:
        raise ValueError(
            "`width_multiplier` must be a positive number. "
            f"Received: width_multiplier={width_multiplier!r}"
        )
    if not is_number(batch_norm_momentum) or not 0 <= batch_norm_momentum < 1:
        raise ValueError(
            "`batch_norm_momentum` must be a float in [0, 1). "
            f"Received: batch_norm_momentum={batch_norm_momentum!r}"
        )
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    outputs = {}
    for level in range(levels):
        if level > 0:
            x = keras.layers.MaxPooling2D(2, name=f"level{level}_pool")(x)
        width = _scaled_width(filters[level], width_multiplier)
        build_block = _BLOCK_BUILDERS[blocks[level]]
        for index in range(depths[level]):
            prefix = f"level{level}_block{index + 1}"
            x = build_block(x, width, kernel_sizes[level], batch_norm_momentum, prefix)
        outputs[level_name(level)] = x
    model = keras.Model(inputs, outputs, name=name)
    model.pyramid_outputs = outputs
    return model


def _scaled_width(filters, width_multiplier):
    """`filters * width_multiplier` rounded half up to a multiple of 4, at least 4."""
    multiples = math.floor(filters * width_multiplier / WIDTH_DIVISOR + 0.5)
    return WIDTH_DIVISOR * max(1, multiples)


def _per_level(value, name, levels, kind, is_valid):
    """`value` repeated for every level, or the list or tuple of one per level, checked."""
    values = tuple(value) if isinstance(value, list | tuple) else (value,) * levels
    if len(values) != levels or not all(is_valid(entry) for entry in values):
        raise ValueError(
            f"`{name}` must be {kind}, or a list or tuple of {levels} of them (one per level "
            f"of `filters`). Received: {name}={value!r}"
        )
    return values


def _is_positive_int(value):
    return is_int(value) and value > 0


def _is_odd(value):
    return _is_positive_int(value) and value % 2 == 1


def _is_block_type(value):
    return isinstance(value, str) and value in BLOCK_TYPES


def _batch_norm_relu(x, momentum, prefix):
    x = keras.layers.BatchNormalization(momentum=momentum, name=f"{prefix}_bn")(x)
    return keras.layers.Activation("relu", name=f"{prefix}_act")(x)


def _plain_block(x, width, kernel_size, momentum, prefix):
    # No bias: batch norm's beta is the offset. The layers of plain_cnn's convolutions.
    x = keras.layers.Conv2D(
        width, kernel_size, padding="same", use_bias=False, name=f"{prefix}_conv"
    )(x)
    return _batch_norm_relu(x, momentum, prefix)


def _separable_block(x, width, kernel_size, momentum, prefix):
    # The layer brings its own batch norms and ReLUs (and drops its biases for them).
    return DepthwiseSeparableConv2D(
        width, kernel_size, batch_norm_momentum=momentum, name=f"{prefix}_separable"
    )(x)


def _residual_block(x, width, kernel_size, momentum, prefix):
    return ResidualBlock(width, momentum=momentum, name=f"{prefix}_residual")(x)


def _bottleneck_block(x, width, kernel_size, momentum, prefix):
    return BottleneckBlock(
        width // BOTTLENECK_EXPANSION,
        expansion=BOTTLENECK_EXPANSION,
        momentum=momentum,
        name=f"{prefix}_bottleneck",
    )(x)


def _inception_block(x, width, kernel_size, momentum, prefix):
    quarter = width // 4
    return InceptionModule(*(quarter,) * 6, name=f"{prefix}_inception")(x)


def _deformable_block(x, width, kernel_size, momentum, prefix):
    x = DeformableConv2D(width, kernel_size, use_bias=False, name=f"{prefix}_deformable")(x)
    return _batch_norm_relu(x, momentum, prefix)


_BLOCK_BUILDERS = {
    "plain": _plain_block,
    "separable": _separable_block,
    "residual": _residual_block,
    "bottleneck": _bottleneck_block,
    "inception": _inception_block,
    "deformable": _deformable_block,
}
