"""U-Net (Ronneberger et al. 2015, arXiv:1505.04597) on any kcnn backbone."""

import keras

from kcnn._serialization import register
from kcnn.backbones import level_stride, pyramid_backbone, pyramid_features, sorted_levels
from kcnn.models._blocks import conv_block, match_size, softmax_head
from kcnn.models._task_model import TaskModel
from kcnn.models.registry import register_model

UPSAMPLINGS = ("transpose", "bilinear")


def _upsample(x, filters, factor, upsampling, name):
    if upsampling == "transpose":
        return keras.layers.Conv2DTranspose(
            filters, factor, strides=factor, padding="same", name=f"{name}_up"
        )(x)
    x = keras.layers.UpSampling2D(factor, interpolation="bilinear", name=f"{name}_up")(x)
    return keras.layers.Conv2D(filters, 1, name=f"{name}_up_proj")(x)


@register
@register_model("unet", "segmentation", uses_backbone=True)
class UNet(TaskModel):
    """U-Net: the backbone's pyramid as encoder, a decoder with skip connections.

    The decoder starts at the coarsest pyramid level and, level by level, upsamples by the
    stride ratio, concatenates the next finer level (the skip connection) and runs
    `convs_per_block` 3x3 conv + BN + ReLU; when the finest level is coarser than the input
    (keras-hub backbones start at P1), further blocks without skips restore full resolution.
    A 1x1 conv and a softmax give per-pixel class probabilities. Where an upsampled map is
    not the size of its skip (odd input sizes, "valid"-padded stems such as CSPDarkNet's),
    it is cropped or zero-padded to the skip's size, as the paper crops the skip to the
    upsampled map; the output always has the input's size.

    Args:
        backbone: a kcnn backbone (`kcnn.backbones.build_backbone(...)`): any of them,
            e.g. `plain_cnn` for the original U-Net or a keras-hub ResNet / MobileNetV3 /
            EfficientNet; or a keras-hub `Backbone` or other functional image model,
            adapted by `kcnn.backbones.pyramid_backbone`.
        num_classes: int >= 2. Classes including background.
        decoder_filters: sequence of ints, filters of the decoder blocks from coarse to fine;
            the last value is reused if there are more blocks. Defaults to
            `(256, 128, 64, 32, 16)`.
        upsampling: `"transpose"` (2x2 transposed conv, as the paper's "up-convolution") or
            `"bilinear"` (bilinear upsampling + 1x1 conv). Defaults to `"transpose"`.
        separable: bool. Decoder blocks of `DepthwiseSeparableConv2D` (MobileNet style),
            about 8x fewer weights and MACs per 3x3 block. Defaults to False.
        convs_per_block: positive int. Defaults to 2.
        name: str. Defaults to `"unet"`.
        input_shape: ignored (the backbone fixes it); accepted so every registry builder
            takes the same keyword arguments.
        **kwargs: `keras.Model` arguments (`trainable`, `dtype`).

    Input shape:
        Images `(B, H, W, C)` in [0, 1], as the backbone takes them.

    Output shape:
        Per-pixel class probabilities `(B, H, W, num_classes)`, float32.

    Raises:
        ValueError: for a bad argument (the message names it).

    Example:
    >>> from kcnn.backbones import build_backbone
    >>> backbone = build_backbone("plain_cnn", input_shape=(32, 32, 3), filters=(8, 16, 32))
    >>> UNet(backbone, num_classes=3, decoder_filters=(16, 8)).output_shape
    (None, 32, 32, 3)
    """

    CONFIG_KEYS = (
        "backbone",
        "num_classes",
        "decoder_filters",
        "upsampling",
        "separable",
        "convs_per_block",
    )

    def __init__(
        self,
        backbone,
        num_classes,
        decoder_filters=(256, 128, 64, 32, 16),
        upsampling="transpose",
        separable=False,
        convs_per_block=2,
        name="unet",
        input_shape=None,
        **kwargs,
    ):
        del input_shape
        backbone = pyramid_backbone(backbone)
        # === Layers and functional graph ===
        inputs, outputs = _unet_graph(
            backbone, num_classes, decoder_filters, upsampling, separable, convs_per_block
        )
        super().__init__(inputs, outputs, name=name, **kwargs)
        # === Config ===
        self.backbone = backbone
        self.num_classes = num_classes
        self.decoder_filters = tuple(decoder_filters)
        self.upsampling = upsampling
        self.separable = separable
        self.convs_per_block = convs_per_block


def _unet_graph(backbone, num_classes, decoder_filters, upsampling, separable, convs_per_block):
    if upsampling not in UPSAMPLINGS:
        raise ValueError(
            f"`upsampling` must be one of {UPSAMPLINGS}. Received: upsampling={upsampling!r}"
        )
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"`num_classes` must be an int >= 2. Received: num_classes={num_classes}")
    decoder_filters = tuple(decoder_filters)
    if not decoder_filters or not all(isinstance(f, int) and f > 0 for f in decoder_filters):
        raise ValueError(
            "`decoder_filters` must be a non-empty sequence of positive ints. "
            f"Received: decoder_filters={decoder_filters}"
        )
    image_shape = backbone.input_shape[1:]
    inputs = keras.Input(shape=image_shape, name="image")
    features = pyramid_features(backbone, inputs)
    levels = sorted_levels(features)

    def filters_at(block):
        return decoder_filters[min(block, len(decoder_filters) - 1)]

    x = features[levels[-1]]
    block = 0
    for coarse, fine in zip(levels[::-1], levels[-2::-1], strict=False):
        factor = level_stride(coarse) // level_stride(fine)
        prefix = f"decoder{block}"
        x = _upsample(x, filters_at(block), factor, upsampling, prefix)
        x = match_size(x, features[fine], name=f"{prefix}_match")
        x = keras.layers.Concatenate(name=f"{prefix}_skip")([x, features[fine]])
        x = conv_block(x, filters_at(block), convs_per_block, separable, prefix)
        block += 1
    remaining = level_stride(levels[0])
    while remaining > 1:
        prefix = f"decoder{block}"
        x = _upsample(x, filters_at(block), 2, upsampling, prefix)
        x = conv_block(x, filters_at(block), convs_per_block, separable, prefix)
        remaining //= 2
        block += 1
    x = match_size(x, inputs, name="match_input")
    outputs = softmax_head(x, num_classes)
    return inputs, outputs
