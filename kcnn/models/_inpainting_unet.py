"""What the inpainting U-Nets share: argument checks, inputs, the encoder widths, and the
plain-conv U-Net body that `ConvUNetInpaint` and `FillResidualUNet` both use."""

import keras

from kcnn.models._task_model import TaskModel

# Encoder kernel sizes of the paper's table (PConv1 7x7, PConv2-3 5x5, then 3x3).
ENCODER_KERNELS = (7, 5, 5)
DECODER_KERNEL = 3
# Encoder filters double per level up to this many times `width` (64 ... 512 in the paper).
MAX_WIDTH_MULTIPLIER = 8
LEAKY_SLOPE = 0.2


def check_arguments(input_shape, width, depth):
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise ValueError(f"`width` must be a positive int. Received: width={width!r}")
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        raise ValueError(f"`depth` must be a positive int. Received: depth={depth!r}")
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1] is None:
        raise ValueError(
            "`input_shape` must be (height, width, channels) with known channels. "
            f"Received: input_shape={input_shape}"
        )
    stride = 2**depth
    for axis, size in zip(("height", "width"), input_shape[:2], strict=True):
        if size is not None and size % stride:
            raise ValueError(
                f"The input {axis} must be divisible by 2**depth = {stride}. "
                f"Received: input_shape={input_shape}, depth={depth}"
            )
    return input_shape


def encoder_filters(width, level):
    return width * min(2**level, MAX_WIDTH_MULTIPLIER)


def inpainting_inputs(input_shape):
    image = keras.Input(shape=input_shape, name="masked_image")
    mask = keras.Input(shape=(*input_shape[:2], 1), name="mask")
    return image, mask


def normalize_activate(x, batch_norm, activation, name):
    if batch_norm:
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    if activation == "relu":
        return keras.layers.ReLU(name=f"{name}_relu")(x)
    return keras.layers.LeakyReLU(LEAKY_SLOPE, name=f"{name}_leaky_relu")(x)


class InpaintingUNet(TaskModel):
    """What both inpainting U-Nets share: inputs `[masked_image, mask]` of `input_shape`, a
    `width` and a `depth`; a subclass gives its graph function (`_graph`)."""

    CONFIG_KEYS = ("input_shape", "num_classes", "width", "depth")

    def __init__(self, input_shape, num_classes, width, depth, name, **kwargs):
        # === Layers and functional graph ===
        inputs, outputs = self._graph(input_shape, num_classes, width, depth)
        super().__init__(inputs, outputs, name=name, **kwargs)
        # === Config ===
        self.image_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.width = width
        self.depth = depth


def conv_unet_body(x, skip_input, channels, width, depth, zero_output=False, project_skip=False):
    """The plain-conv U-Net of `ConvUNetInpaint` on the tensor `x` (the skip of the last
    layer is `skip_input`): `channels` outputs, linear, float32; with `zero_output`, the
    last layer starts at 0 (for a network that learns a residual). With `project_skip`,
    the last skip is a 1x1 convolution of `skip_input` (`skip_projection`) rather than
    `skip_input` itself: an int8 file gives all inputs of a concatenation one scale, and
    the projection keeps the decoder's wide range off a tensor that is also used
    elsewhere at its own fine scale (a fill that the output adds to)."""
    if project_skip:
        skip_input = keras.layers.Conv2D(
            skip_input.shape[-1], 1, use_bias=False, name="skip_projection"
        )(skip_input)
    skips = [skip_input]
    for level in range(depth):
        prefix = f"encoder{level + 1}"
        kernel = ENCODER_KERNELS[level] if level < len(ENCODER_KERNELS) else DECODER_KERNEL
        x = keras.layers.Conv2D(
            encoder_filters(width, level),
            kernel,
            strides=2,
            padding="same",
            use_bias=level == 0,
            name=prefix,
        )(x)
        x = normalize_activate(x, level > 0, "relu", prefix)
        skips.append(x)
    for level in reversed(range(depth)):
        prefix = f"decoder{level + 1}"
        x = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"{prefix}_up")(x)
        x = keras.layers.Concatenate(name=f"{prefix}_skip")([x, skips[level]])
        last = level == 0
        x = keras.layers.Conv2D(
            channels if last else encoder_filters(width, level - 1),
            DECODER_KERNEL,
            padding="same",
            use_bias=last,
            kernel_initializer="zeros" if last and zero_output else "glorot_uniform",
            dtype="float32" if last else None,
            name="output" if last else prefix,
        )(x)
        if not last:
            x = normalize_activate(x, True, "leaky_relu", prefix)
    return x
