"""Fully convolutional networks (Long et al. 2015, arXiv:1411.4038) on any kcnn backbone."""

import keras
import numpy as np

from kcnn._serialization import register
from kcnn.backbones import level_stride, pyramid_backbone, pyramid_features, sorted_levels
from kcnn.models._blocks import MatchSpatialSize
from kcnn.models._task_model import TaskModel
from kcnn.models.registry import register_model


@register
@register_model("fcn", "segmentation", uses_backbone=True)
class FCN(TaskModel):
    """FCN: 1x1 classifier convs on backbone features, upsampled and fused with skips.

    The coarsest pyramid level is scored by a 1x1 conv (after an optional 3x3 conv with
    `head_filters`), upsampled 2x by a transposed conv initialised to bilinear interpolation as
    in the paper, cropped to the next finer level and added to that level's 1x1 scores; after
    `skip_levels` fusions a last transposed conv upsamples to the input size. With a stride-32
    backbone, `skip_levels=0, 1, 2` are FCN-32s, -16s and -8s. Any input size works: upsampled
    maps are cropped (or padded) to the map they are fused with and to the input.

    Args:
        backbone: a kcnn backbone, or a keras-hub `Backbone` or other functional image
            model (adapted by `kcnn.backbones.pyramid_backbone`).
        num_classes: int >= 2.
        skip_levels: int >= 0. How many finer levels are fused. Defaults to 2 (FCN-8s).
        head_filters: int or None. Filters of a 3x3 conv + ReLU before the first scores (the
            paper's fc6/fc7 as convs, slimmed). Defaults to None (no extra conv).
        name: str. Defaults to `"fcn"`.
        input_shape: ignored (the backbone fixes it).

    Output shape:
        Per-pixel class probabilities `(B, H, W, num_classes)`, float32, at the input's
        size.

    The constructor arguments are the model's config and attributes.

    Raises:
        ValueError: if `skip_levels` is negative or larger than the backbone allows.

    Example:
    >>> from kcnn.backbones import build_backbone
    >>> backbone = build_backbone("plain_cnn", input_shape=(None, None, 3), filters=(8, 16, 32))
    >>> model = FCN(backbone, num_classes=3, skip_levels=1)
    >>> import numpy as np
    >>> model(np.zeros((1, 30, 22, 3), "float32")).shape
    TensorShape([1, 30, 22, 3])
    """

    CONFIG_KEYS = (
        "backbone",
        "num_classes",
        "skip_levels",
        "head_filters",
    )

    def __init__(
        self,
        backbone,
        num_classes,
        skip_levels=2,
        head_filters=None,
        name="fcn",
        input_shape=None,
        **kwargs,
    ):
        del input_shape
        backbone = pyramid_backbone(backbone)
        # === Layers and functional graph ===
        inputs, outputs = _fcn_graph(backbone, num_classes, skip_levels, head_filters)
        super().__init__(inputs, outputs, name=name, **kwargs)
        # === Config ===
        self.backbone = backbone
        self.num_classes = num_classes
        self.skip_levels = skip_levels
        self.head_filters = head_filters


def _fcn_graph(backbone, num_classes, skip_levels, head_filters):
    inputs = keras.Input(shape=backbone.input_shape[1:], name="image")
    features = pyramid_features(backbone, inputs)
    levels = sorted_levels(features)
    if not isinstance(skip_levels, int) or not 0 <= skip_levels < len(levels):
        raise ValueError(
            f"`skip_levels` must be an int in [0, {len(levels) - 1}] for '{backbone.name}' "
            f"(levels {levels}). Received: skip_levels={skip_levels}"
        )
    x = features[levels[-1]]
    if head_filters:
        x = keras.layers.Conv2D(head_filters, 3, padding="same", activation="relu", name="fc")(x)
    scores = keras.layers.Conv2D(num_classes, 1, name="score_" + levels[-1])(x)
    current = levels[-1]
    for fine in levels[-2 : -2 - skip_levels : -1]:
        factor = level_stride(current) // level_stride(fine)
        scores = _bilinear_upsampler(num_classes, factor, f"upscore_{fine}")(scores)
        skip = keras.layers.Conv2D(num_classes, 1, name=f"score_{fine}")(features[fine])
        scores = MatchSpatialSize(name=f"crop_{fine}")([scores, skip])
        scores = keras.layers.Add(name=f"fuse_{fine}")([scores, skip])
        current = fine
    factor = level_stride(current)
    if factor > 1:
        scores = _bilinear_upsampler(num_classes, factor, "upscore_final")(scores)
    scores = MatchSpatialSize(name="crop_final")([scores, inputs])
    outputs = keras.layers.Activation("softmax", dtype="float32", name="predictions")(scores)
    return inputs, outputs


def _bilinear_upsampler(channels, factor, name):
    """A per-channel transposed conv of stride `factor` initialised to bilinear upsampling."""
    size = 2 * factor - factor % 2
    return keras.layers.Conv2DTranspose(
        channels,
        size,
        strides=factor,
        padding="same",
        use_bias=False,
        kernel_initializer=BilinearUpsamplingInitializer(),
        name=name,
    )


def _bilinear_weights(size, channels):
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    grid = np.arange(size)
    profile = 1 - np.abs(grid - center) / factor
    kernel = np.outer(profile, profile)
    weights = np.zeros((size, size, channels, channels), dtype="float32")
    for channel in range(channels):
        weights[:, :, channel, channel] = kernel
    return weights


@register
class BilinearUpsamplingInitializer(keras.initializers.Initializer):
    """Initialises a square `Conv2DTranspose` kernel to per-channel bilinear interpolation.

    FCN (Long et al. 2015) initialises its upsampling layers this way and learns from there.
    """

    def __call__(self, shape, dtype=None):
        size, _, out_channels, in_channels = shape
        if in_channels != out_channels:
            raise ValueError(
                "A bilinear upsampling kernel needs as many input as output channels. "
                f"Received: shape={shape}"
            )
        return keras.ops.convert_to_tensor(_bilinear_weights(size, out_channels), dtype=dtype)
