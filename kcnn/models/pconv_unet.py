"""The partial-convolution U-Net of Liu et al. (2018) for image inpainting, and a plain-conv
U-Net of the same size as its baseline."""

import keras

from kcnn._quantization import call_with_float_layers
from kcnn._serialization import register
from kcnn._validation import check_positive_int
from kcnn.layers import PartialConv2D
from kcnn.models._inpainting_unet import (
    DECODER_KERNEL,
    ENCODER_KERNELS,
    InpaintingUNet,
    check_arguments,
    conv_unet_body,
    encoder_filters,
    inpainting_inputs,
    normalize_activate,
)
from kcnn.models.registry import register_model

# Levels an int8 export keeps in float32 by default: the first encoder levels (from the
# input) and the highest-resolution decoder levels (the output layer's level first).
# README, "Inpainting", has the measurements behind the numbers.
FLOAT_ENCODER_LEVELS = 1
FLOAT_DECODER_LEVELS = 4


@register
@register_model("pconv_unet", "inpainting")
class PConvUNet(InpaintingUNet):
    """The partial-convolution U-Net of Liu et al. (2018) for irregular holes.

    Liu, Reda, Shih, Wang, Tao & Catanzaro, "Image Inpainting for Irregular Holes Using
    Partial Convolutions", 2018 (arXiv:1804.07723), section 3.2 and the supplementary
    table, scaled by `width` and `depth` (the paper: `width=64`, `depth=8` at 512x512):

    - Encoder: `depth` `PartialConv2D` layers of stride 2 with kernels 7, 5, 5, 3, 3, ...
      and `width`, 2 `width`, 4 `width`, then 8 `width` filters; batch normalization in all
      but the first; ReLU.
    - Decoder: at each level, nearest-neighbour upsampling of the features *and* of the
      mask by 2, concatenation with the encoder's features *and* mask of that resolution
      (the skip), a 3x3 `PartialConv2D` with the skip level's filters, batch normalization
      and LeakyReLU(0.2). The last layer's skip is the input image and its mask; it has
      one filter per image channel, no normalization and no activation.

    Masks are multi-channel, as in NVIDIA's reference: the input mask is repeated over the
    image channels, each layer returns a mask with one channel per filter, and the decoder
    concatenates masks like features, so a layer's window count sees which of its input
    channels are valid. Holes shrink through the encoder; whatever is still a hole at the
    coarsest level is filled from its neighbours by the decoder.

    Args:
        input_shape: `(height, width, channels)` of the images. Height and width must be
            divisible by `2**depth` (or None).
        num_classes: ignored (the output has the input's channels); accepted so every
            registry builder takes the same keyword arguments.
        width: int >= 1. Filters of the first layer; the paper uses 64. Defaults to 32.
        depth: int >= 1. Encoder levels (stride-2 layers); the paper uses 8. Defaults to 5.
        float_encoder_levels: int >= 0. How many encoder levels, counted from the input
            (`encoder1`, `encoder2`, ...), run under `kcnn._quantization.keep_float()`: an
            int8 TFLite export keeps their partial convolutions, batch norms and
            activations in float32 and quantizes the rest. The first layer renormalises a
            7x7 window by up to 147 / 1 next to a hole, and its outputs hold values that one
            int8 scale per tensor cannot hold together with the typical ones. No effect on
            Keras or on float exports. Defaults to 1.
        float_decoder_levels: int >= 0. The same for the decoder levels, counted from the
            output layer up (the output layer's level, then `decoder2`, `decoder3`, ...),
            with their upsampling and skip concatenations: their tensors are heavy-tailed
            (outliers at the image border 40-60x a channel's standard deviation).
            Defaults to 4.
        name: str. Defaults to `"pconv_unet"`.

    Input and output:
        Inputs `[masked_image, mask]`, `masked_image` of
        shape `(B, H, W, C)` in [0, 1] (holes may hold anything: they are never read) and
        `mask` `(B, H, W, 1)` with 1 = valid and 0 = hole, and one float32 output, the
        predicted image `(B, H, W, C)` (linear, as in the paper: not clipped). The
        composited result is `mask * image + (1 - mask) * output`.

    The constructor arguments are the model's config and attributes.

    Raises:
        ValueError: if `width` or `depth` is not a positive int, or the input size is not
            divisible by `2**depth`.

    Example:

    >>> model = PConvUNet((32, 32, 3), width=8, depth=3)
    >>> [tuple(x.shape) for x in model.inputs], model.output_shape
    ([(None, 32, 32, 3), (None, 32, 32, 1)], (None, 32, 32, 3))
    """

    CONFIG_KEYS = (*InpaintingUNet.CONFIG_KEYS, "float_encoder_levels", "float_decoder_levels")

    def __init__(
        self,
        input_shape,
        num_classes=None,
        width=32,
        depth=5,
        float_encoder_levels=FLOAT_ENCODER_LEVELS,
        float_decoder_levels=FLOAT_DECODER_LEVELS,
        name="pconv_unet",
        **kwargs,
    ):
        float_encoder_levels = check_positive_int(float_encoder_levels, "float_encoder_levels", 0)
        float_decoder_levels = check_positive_int(float_decoder_levels, "float_decoder_levels", 0)
        super().__init__(input_shape, num_classes, width, depth, name=name, **kwargs)
        self.float_encoder_levels = float_encoder_levels
        self.float_decoder_levels = float_decoder_levels
        prefixes = [f"encoder{level + 1}" for level in range(min(float_encoder_levels, depth))]
        prefixes += [f"decoder{level + 1}" for level in range(min(float_decoder_levels, depth))]
        prefixes += ["output"] if float_decoder_levels else []
        self._float_layers = frozenset(
            layer.name
            for layer in self.layers
            if any(layer.name == p or layer.name.startswith(f"{p}_") for p in prefixes)
        )

    def _graph(self, input_shape, num_classes, width, depth):
        return _pconv_unet_graph(input_shape, num_classes, width, depth)

    def call(self, inputs, training=None, mask=None, **kwargs):
        # The float levels run under `keep_float()` at every trace (see the class).
        return call_with_float_layers(
            self, inputs, self._float_layers, training=training, mask=mask, **kwargs
        )


def _pconv_unet_graph(input_shape, num_classes, width, depth):
    del num_classes
    input_shape = check_arguments(input_shape, width, depth)
    channels = input_shape[-1]
    # --- functional graph ---
    image, mask = inpainting_inputs(input_shape)
    mask_channels = (
        keras.layers.Concatenate(name="mask_channels")([mask] * channels) if channels > 1 else mask
    )
    skips = [(image, mask_channels)]
    x, m = image, mask_channels
    for level in range(depth):
        prefix = f"encoder{level + 1}"
        kernel = ENCODER_KERNELS[level] if level < len(ENCODER_KERNELS) else DECODER_KERNEL
        x, m = PartialConv2D(
            encoder_filters(width, level),
            kernel,
            strides=2,
            multi_channel=True,
            use_bias=level == 0,
            name=prefix,
        )([x, m])
        x = normalize_activate(x, level > 0, "relu", prefix)
        skips.append((x, m))
    for level in reversed(range(depth)):
        prefix = f"decoder{level + 1}"
        skip_x, skip_m = skips[level]
        x = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"{prefix}_up")(x)
        m = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"{prefix}_mask_up")(m)
        x = keras.layers.Concatenate(name=f"{prefix}_skip")([x, skip_x])
        m = keras.layers.Concatenate(name=f"{prefix}_mask_skip")([m, skip_m])
        last = level == 0
        x, m = PartialConv2D(
            channels if last else encoder_filters(width, level - 1),
            DECODER_KERNEL,
            multi_channel=True,
            use_bias=last,
            dtype="float32" if last else None,
            name="output" if last else prefix,
        )([x, m])
        if not last:
            x = normalize_activate(x, True, "leaky_relu", prefix)
    return [image, mask], x


@register
@register_model("conv_unet_inpaint", "inpainting")
class ConvUNetInpaint(InpaintingUNet):
    """The baseline of `PConvUNet`: the same U-Net with plain `Conv2D` layers.

    Liu et al. (2018, arXiv:1804.07723) compare partial convolutions against the same
    network with ordinary convolutions fed the image with holes and the mask as an extra
    channel ("Conv" in their figures). This is that network: the layers, kernels, filters,
    strides, normalization, activations, nearest-neighbour upsampling and skip
    concatenations of `PConvUNet`, with `Conv2D` on `concat(masked_image, mask)` and
    hole pixels set to 0, and no mask propagation. Its parameter count differs from
    `PConvUNet`'s only by the mask channel's weights in the first and last layers.

    Args:
        input_shape: `(height, width, channels)`; height and width divisible by
            `2**depth` (or None).
        num_classes: ignored; accepted so every registry builder takes the same keyword
            arguments.
        width: int >= 1. Filters of the first layer. Defaults to 32.
        depth: int >= 1. Encoder levels. Defaults to 5.
        name: str. Defaults to `"conv_unet_inpaint"`.

    Input and output:
        Those of `PConvUNet`.

    The constructor arguments are the model's config and attributes.

    Raises:
        ValueError: as `PConvUNet`.

    Example:

    >>> model = ConvUNetInpaint((32, 32, 3), width=8, depth=3)
    >>> model.output_shape
    (None, 32, 32, 3)
    """

    def __init__(
        self, input_shape, num_classes=None, width=32, depth=5, name="conv_unet_inpaint", **kwargs
    ):
        super().__init__(input_shape, num_classes, width, depth, name=name, **kwargs)

    def _graph(self, input_shape, num_classes, width, depth):
        return _conv_unet_graph(input_shape, num_classes, width, depth)


def _conv_unet_graph(input_shape, num_classes, width, depth):
    del num_classes
    input_shape = check_arguments(input_shape, width, depth)
    image, mask = inpainting_inputs(input_shape)
    # Hole pixels are zeroed so the network sees the same input whatever they held.
    holes_zeroed = keras.layers.Multiply(name="zero_holes")([image, mask])
    inputs = keras.layers.Concatenate(name="image_and_mask")([holes_zeroed, mask])
    return [image, mask], conv_unet_body(inputs, inputs, input_shape[-1], width, depth)
