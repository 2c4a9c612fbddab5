"""DeepLabV3+ (Chen, Zhu, Papandreou, Schroff & Adam 2018, arXiv:1802.02611) on any kcnn
backbone.

keras-hub 0.32 has `DeepLabV3Backbone` and `DeepLabV3ImageSegmenter`; kcnn does not wrap
them, for what they do differently from kcnn's segmentation contract (measured):
- the decoder upsamples the ASPP output by a fixed `upsampling_size` and concatenates it
  with the low-level map, so an input whose sides the stride does not divide fails in
  its `Concatenate` (a 48x40 image on a stride-16 level: 3x2 upsampled 4x is 12x8, the
  stride-4 map is 12x10);
- one 1x1 conv follows the concatenation where the paper has two 3x3 convs, the class
  scores live in a separate `ImageSegmenter` task, and the ASPP is one subclassed layer of
  nested `Sequential`s, opaque to `kcnn.analysis.analyze` (no MACs, no receptive field).
Here the ASPP and the decoder are plain Keras layers of one functional graph on the
`pyramid_outputs` contract, so any kcnn backbone fits and `analyze` sees every conv.
"""

import keras

from kcnn._serialization import register
from kcnn._validation import check_positive_int, is_int, is_number
from kcnn.analysis import LayerGeometry, register_layer_analyzer
from kcnn.backbones import level_stride, pyramid_backbone, pyramid_features, sorted_levels
from kcnn.layers import DepthwiseSeparableConv2D
from kcnn.models._blocks import BATCH_NORM_MOMENTUM, conv_block, conv_bn_relu, match_size
from kcnn.models._task_model import TaskModel
from kcnn.models.registry import register_model

OUTPUT_STRIDES = (8, 16, 32)


@register
@register_model("deeplabv3plus", "segmentation", uses_backbone=True)
class DeepLabV3Plus(TaskModel):
    """DeepLabV3+: atrous spatial pyramid pooling on a backbone level, a light decoder.

    Encoder (DeepLabV3, Chen, Papandreou, Schroff & Adam 2017, arXiv:1706.05587, section
    3.3): on the backbone level of stride `output_stride`, parallel branches of
    `aspp_filters` filters (a 1x1 conv; one 3x3 conv per rate of `atrous_rates`; image
    pooling: global average pool, 1x1 conv, upsampled back, which for a 1x1 map is a
    broadcast), each with batch norm and ReLU; their concatenation is projected by a 1x1
    conv + batch norm + ReLU and dropout. Decoder (DeepLabV3+, section 3.1): the
    encoder output is upsampled bilinearly to the `low_level` map (4x from stride 16 to
    stride 4), concatenated with that map reduced by a 1x1 conv to `low_level_filters`
    channels, refined by two 3x3 convs, scored by a 1x1 conv, and the scores are upsampled
    bilinearly to the input size. Upsampled maps are cropped or zero-padded to the map they
    meet, as in `FCN`, so any input size works.

    Output stride. The paper's encoders are dilated: the last stage runs at stride 16 (or
    8) with atrous convs instead of striding. `kcnn.backbones.plain_cnn(...,
    output_stride=16)` is dilated that way: its deepest map, of stride 16, is its `"P4"`,
    which the model reads. keras-hub backbones cannot be dilated (keras-hub 0.32's
    `ResNetBackbone` has no dilation argument): the model reads their deepest level of
    stride at most `output_stride` (`"P4"` for 16), and the deeper stages are computed
    for nothing; `output_stride=32` uses them all at a coarser resolution.

    The atrous rates are used as given. The paper's are `(6, 12, 18)` at output stride 16
    and twice those at 8, for 513x513 crops (33x33 maps at stride 16); a rate of about
    the map's side or more leaves only the centre tap inside the map, so small images
    want small rates (e.g. `(1, 2, 3)` for 4x4 maps at 64x64 and stride 16).

    Args:
        backbone: a kcnn backbone (`kcnn.backbones.build_backbone(...)`), or a keras-hub
            `Backbone` or other functional image model (adapted by
            `kcnn.backbones.pyramid_backbone`).
        num_classes: int >= 2. Classes including background.
        output_stride: int, one of 8, 16, 32. The stride of the level the ASPP reads.
            Defaults to 16.
        atrous_rates: sequence of positive ints. The dilation rates of the 3x3 ASPP
            branches. Defaults to `(6, 12, 18)` (the paper's at output stride 16).
        aspp_filters: positive int. Filters of every ASPP branch and of its projection.
            Defaults to 256.
        low_level: str. The pyramid key of the decoder's skip, finer than the ASPP level.
            Defaults to `"P2"` (stride 4).
        low_level_filters: positive int. Channels the low-level map is reduced to.
            Defaults to 48.
        decoder_filters: positive int. Filters of the decoder's two 3x3 convs. Defaults
            to 256.
        separable: bool. Atrous separable convs (`DepthwiseSeparableConv2D`, depthwise
            dilated, each stage with batch norm and ReLU) in the ASPP's 3x3 branches and
            the decoder, as the paper's Xception variant. Defaults to False.
        dropout: float in [0, 1). Dropout after the ASPP projection. Defaults to 0.1
            (the paper's).
        name: str. Defaults to `"deeplabv3plus"`.
        input_shape: ignored (the backbone fixes it); accepted so every registry builder
            takes the same keyword arguments.
        **kwargs: `keras.Model` arguments (`trainable`, `dtype`).

    Input shape:
        Images `(B, H, W, C)` in [0, 1], as the backbone takes them.

    Output shape:
        Per-pixel class probabilities `(B, H, W, num_classes)`, float32.

    The constructor arguments are the model's config and attributes; `aspp_level` (the
    pyramid key the ASPP reads), `aspp_stride` and `low_level_stride` follow from them.

    Raises:
        ValueError: for a bad argument (the message names it), or when the backbone has
            no level of stride at most `output_stride` coarser than `low_level`.

    Example:
    >>> from kcnn.backbones import build_backbone
    >>> backbone = build_backbone(
    ...     "plain_cnn", filters=(4, 4, 8, 8, 8, 8), convs_per_level=1, output_stride=16
    ... )
    >>> model = DeepLabV3Plus(
    ...     backbone, 3, atrous_rates=(1, 2), aspp_filters=8, low_level_filters=4,
    ...     decoder_filters=8,
    ... )
    >>> model.aspp_level, model.aspp_stride
    ('P4', 16)
    >>> import numpy as np
    >>> model(np.zeros((1, 48, 40, 3), "float32")).shape
    TensorShape([1, 48, 40, 3])
    """

    CONFIG_KEYS = (
        "backbone",
        "num_classes",
        "output_stride",
        "atrous_rates",
        "aspp_filters",
        "low_level",
        "low_level_filters",
        "decoder_filters",
        "separable",
        "dropout",
    )

    def __init__(
        self,
        backbone,
        num_classes,
        output_stride=16,
        atrous_rates=(6, 12, 18),
        aspp_filters=256,
        low_level="P2",
        low_level_filters=48,
        decoder_filters=256,
        separable=False,
        dropout=0.1,
        name="deeplabv3plus",
        input_shape=None,
        **kwargs,
    ):
        del input_shape
        backbone = pyramid_backbone(backbone)
        atrous_rates = _check_arguments(
            num_classes,
            output_stride,
            atrous_rates,
            aspp_filters,
            low_level_filters,
            decoder_filters,
            separable,
            dropout,
        )
        # === Layers and functional graph ===
        inputs = keras.Input(shape=backbone.input_shape[1:], name="image")
        features = pyramid_features(backbone, inputs)
        strides = {key: level_stride(key) for key in features}
        aspp_level = _aspp_level(strides, output_stride, low_level, backbone.name)
        x = _aspp(features[aspp_level], atrous_rates, aspp_filters, separable, dropout)
        x = _decoder(
            x,
            features[low_level],
            strides[aspp_level] // strides[low_level],
            low_level_filters,
            decoder_filters,
            separable,
        )
        scores = keras.layers.Conv2D(num_classes, 1, name="predictions_scores")(x)
        if strides[low_level] > 1:
            scores = keras.layers.UpSampling2D(
                strides[low_level], interpolation="bilinear", name="predictions_up"
            )(scores)
        scores = match_size(scores, inputs, name="match_input")
        outputs = keras.layers.Activation("softmax", dtype="float32", name="predictions")(scores)
        super().__init__(inputs, outputs, name=name, **kwargs)
        # === Config ===
        self.backbone = backbone
        self.num_classes = num_classes
        self.output_stride = output_stride
        self.atrous_rates = atrous_rates
        self.aspp_filters = aspp_filters
        self.low_level = low_level
        self.low_level_filters = low_level_filters
        self.decoder_filters = decoder_filters
        self.separable = separable
        self.dropout = dropout
        # === Facts that follow from the config ===
        self.aspp_level = aspp_level
        self.aspp_stride = strides[aspp_level]
        self.low_level_stride = strides[low_level]


def _check_arguments(
    num_classes,
    output_stride,
    atrous_rates,
    aspp_filters,
    low_level_filters,
    decoder_filters,
    separable,
    dropout,
):
    """Validates the arguments that do not depend on the backbone; returns the rates as a
    tuple."""
    check_positive_int(num_classes, "num_classes", minimum=2)
    if not is_int(output_stride) or output_stride not in OUTPUT_STRIDES:
        raise ValueError(
            f"`output_stride` must be one of {OUTPUT_STRIDES}. "
            f"Received: output_stride={output_stride!r}"
        )
    rates = tuple(atrous_rates) if isinstance(atrous_rates, list | tuple) else ()
    if not rates or not all(is_int(rate) and rate > 0 for rate in rates):
        raise ValueError(
            "`atrous_rates` must be a non-empty sequence of positive ints. "
            f"Received: atrous_rates={atrous_rates!r}"
        )
    check_positive_int(aspp_filters, "aspp_filters")
    check_positive_int(low_level_filters, "low_level_filters")
    check_positive_int(decoder_filters, "decoder_filters")
    if not isinstance(separable, bool):
        raise ValueError(f"`separable` must be a bool. Received: separable={separable!r}")
    if not is_number(dropout) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"`dropout` must be a number in [0, 1). Received: dropout={dropout!r}")
    return tuple(int(rate) for rate in rates)


def _aspp_level(strides, output_stride, low_level, backbone_name):
    """The deepest level of stride at most `output_stride`, checked against `low_level`."""
    if low_level not in strides:
        raise ValueError(
            f"`low_level` must be a level of '{backbone_name}' ({sorted_levels(strides)}). "
            f"Received: low_level={low_level!r}"
        )
    candidates = [key for key in sorted_levels(strides) if strides[key] <= output_stride]
    if not candidates or strides[candidates[-1]] <= strides[low_level]:
        raise ValueError(
            f"`output_stride`={output_stride} needs a level of '{backbone_name}' with a "
            f"stride of at most {output_stride} and coarser than `low_level`={low_level!r} "
            f"(stride {strides[low_level]}). Measured strides: {strides}"
        )
    return candidates[-1]


def _aspp(x, atrous_rates, filters, separable, dropout):
    """Atrous spatial pyramid pooling with image-level features (DeepLabV3, section 3.3)."""
    branches = [conv_bn_relu(x, filters, 1, "aspp_conv1x1")]
    for index, rate in enumerate(atrous_rates, start=1):
        name = f"aspp_atrous{index}"
        if separable:
            branches.append(
                DepthwiseSeparableConv2D(
                    filters,
                    3,
                    dilation_rate=rate,
                    batch_norm_momentum=BATCH_NORM_MOMENTUM,
                    name=name,
                )(x)
            )
        else:
            branches.append(conv_bn_relu(x, filters, 3, name, dilation_rate=rate))
    pooled = keras.layers.GlobalAveragePooling2D(keepdims=True, name="aspp_image_pool")(x)
    pooled = conv_bn_relu(pooled, filters, 1, "aspp_image_conv")
    branches.append(SpatialBroadcast(name="aspp_image_broadcast")([pooled, x]))
    x = keras.layers.Concatenate(name="aspp_concat")(branches)
    x = conv_bn_relu(x, filters, 1, "aspp_projection")
    if dropout:
        x = keras.layers.Dropout(dropout, name="aspp_dropout")(x)
    return x


def _decoder(x, low_level_features, factor, low_level_filters, filters, separable):
    """DeepLabV3+'s decoder (section 3.1) up to the last 3x3 conv."""
    x = keras.layers.UpSampling2D(factor, interpolation="bilinear", name="decoder_up")(x)
    x = match_size(x, low_level_features, name="decoder_match")
    low = conv_bn_relu(low_level_features, low_level_filters, 1, "decoder_low_level")
    x = keras.layers.Concatenate(name="decoder_concat")([x, low])
    return conv_block(x, filters, 2, separable, "decoder")


@register
class SpatialBroadcast(keras.layers.Layer):
    """Repeats a `(B, 1, 1, C)` map over the height and width of a reference map.

    DeepLabV3's image-level features (Chen et al. 2017, arXiv:1706.05587, section 3.3)
    are pooled to 1x1 and "bilinearly upsampled" back to the feature map's size; every
    interpolation of a single value is that value, so this is the upsampling, for sizes
    known only at run time and as one TFLite builtin (`BROADCAST_TO`).

    Input shape:
        A list `[x, reference]`: `x` of shape `(B, 1, 1, C)`, `reference` a 4D tensor.

    Output shape:
        `(B, H, W, C)` with `reference`'s `H` and `W`.

    Raises:
        ValueError: if `x` is not 1x1 in space.
    """

    def build(self, input_shape):
        x_shape, _ = input_shape
        if tuple(x_shape[1:3]) != (1, 1):
            raise ValueError(
                f"`SpatialBroadcast` takes a map of height and width 1. Received: "
                f"x.shape={tuple(x_shape)}"
            )

    def call(self, inputs):
        x, reference = inputs
        shape = keras.ops.shape(reference)
        return keras.ops.broadcast_to(x, (shape[0], shape[1], shape[2], keras.ops.shape(x)[3]))

    def compute_output_shape(self, input_shape):
        x_shape, reference_shape = input_shape
        return (x_shape[0], *reference_shape[1:3], x_shape[3])


@register_layer_analyzer(SpatialBroadcast)
def _spatial_broadcast_analyzer(layer, input_shapes, output_shapes):
    # Every output position is the 1x1 map's one value: a field over the whole input.
    return 0, LayerGeometry.whole_input()
