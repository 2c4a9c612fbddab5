"""A small plain CNN encoder: stacks of 3x3 conv (+ norm, activation) and 2x2 max-pooling."""

import keras

from kcnn._validation import is_int
from kcnn.backbones.pyramid import level_name

NORMALIZATIONS = ("batch", None)


def plain_cnn(
    input_shape=(None, None, 3),
    filters=(32, 64, 128, 256, 512),
    convs_per_level=2,
    kernel_size=3,
    normalization="batch",
    activation="relu",
    batch_norm_momentum=0.9,
    output_stride=None,
    name="plain_cnn",
):
    """Builds the plain encoder of VGG (Simonyan & Zisserman 2015, arXiv:1409.1556) and of
    the original U-Net (Ronneberger et al. 2015, arXiv:1505.04597).

    Level 0 runs `convs_per_level` convolutions at full resolution; every further level
    max-pools by 2 and runs `convs_per_level` convolutions. The output dict is keyed `"P0"`
    (stride 1) to `"P{n-1}"` (stride 2**(n-1)) for `n = len(filters)`.

    With `output_stride`, the encoder is dilated as DeepLab dilates VGG-16 (Chen,
    Papandreou, Kokkinos, Murphy & Yuille 2015, arXiv:1412.7062, section 3.1): the levels
    whose stride would exceed `output_stride` skip their 2x2 max-pooling, and their
    convolutions take a `dilation_rate` equal to the product of the poolings skipped so far
    (2, then 4, ...), so each convolution spans as many input pixels as at full stride
    while the maps keep `output_stride`'s resolution. Weights keep their names and shapes:
    the dilated encoder loads the plain one's weights. Keys keep meaning stride 2**k: the
    dilated levels' maps have the output stride, so the deepest of them is the output
    stride's key and the deeper keys are absent (six levels at `output_stride=16` give
    `"P0"` to `"P4"`, `"P4"` being the last level's map). Every decoder takes it.

    Args:
        input_shape: tuple `(height, width, channels)`; height and width may be None.
            Defaults to `(None, None, 3)`.
        filters: sequence of positive ints, the filters of each level. Defaults to
            `(32, 64, 128, 256, 512)` (U-Net's widths halved).
        convs_per_level: positive int. Defaults to 2.
        kernel_size: positive odd int. Defaults to 3.
        normalization: `"batch"` or None. Defaults to `"batch"`.
        activation: activation name or callable. Defaults to `"relu"`.
        batch_norm_momentum: float. Momentum of the moving statistics. Defaults to 0.9
            (PyTorch's 0.1): Keras's 0.99 leaves them near their initial values after the
            few hundred steps of a small data set, so evaluation would be poor.
        output_stride: None or a power of 2 (1, 2, 4, ...). The largest stride of the
            output maps: deeper levels are dilated instead of pooled (see above). Defaults
            to None (every level pools; the deepest has stride 2**(n-1)).
        name: str. Model name. Defaults to `"plain_cnn"`.

    Returns:
        A functional `keras.Model` with a dict output keyed by pyramid level, also set as
        its `pyramid_outputs` attribute.

    Raises:
        ValueError: on an invalid argument; the message names it.

    Example:
    >>> backbone = plain_cnn(input_shape=(32, 32, 3), filters=(8, 16, 32))
    >>> sorted(backbone.output)
    ['P0', 'P1', 'P2']
    """
    filters = tuple(filters)
    if not filters or not all(isinstance(f, int) and f > 0 for f in filters):
        raise ValueError(
            f"`filters` must be a non-empty sequence of positive ints. Received: filters={filters}"
        )
    if not isinstance(convs_per_level, int) or convs_per_level < 1:
        raise ValueError(
            f"`convs_per_level` must be a positive int. Received: convs_per_level={convs_per_level}"
        )
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"`normalization` must be one of {NORMALIZATIONS}. "
            f"Received: normalization={normalization!r}"
        )
    if output_stride is not None and (
        not is_int(output_stride) or output_stride < 1 or output_stride & (output_stride - 1)
    ):
        raise ValueError(
            "`output_stride` must be None or a power of 2 (1, 2, 4, ...). "
            f"Received: output_stride={output_stride!r}"
        )
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    outputs = {}
    for level, level_filters in enumerate(filters):
        dilation_rate = 1
        if output_stride is not None and 2**level > output_stride:
            dilation_rate = 2**level // output_stride
        elif level > 0:
            x = keras.layers.MaxPooling2D(2, name=f"level{level}_pool")(x)
        for index in range(convs_per_level):
            prefix = f"level{level}_conv{index + 1}"
            x = keras.layers.Conv2D(
                level_filters,
                kernel_size,
                padding="same",
                dilation_rate=dilation_rate,
                use_bias=normalization is None,
                name=prefix,
            )(x)
            if normalization == "batch":
                x = keras.layers.BatchNormalization(
                    momentum=batch_norm_momentum, name=f"{prefix}_bn"
                )(x)
            x = keras.layers.Activation(activation, name=f"{prefix}_act")(x)
        # A dilated level keeps the output stride, so its map is that stride's key: the
        # deepest map of each stride is the one the pyramid gives.
        key = level if output_stride is None else min(level, output_stride.bit_length() - 1)
        outputs[level_name(key)] = x
    model = keras.Model(inputs, outputs, name=name)
    model.pyramid_outputs = outputs
    return model
