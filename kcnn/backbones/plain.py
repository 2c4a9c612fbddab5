"""A small plain CNN encoder: stacks of 3x3 conv (+ norm, activation) and 2x2 max-pooling."""

import keras

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
    name="plain_cnn",
):
    """Builds the plain encoder of VGG (Simonyan & Zisserman 2015, arXiv:1409.1556) and of
    the original U-Net (Ronneberger et al. 2015, arXiv:1505.04597).

    Level 0 runs `convs_per_level` convolutions at full resolution; every further level
    max-pools by 2 and runs `convs_per_level` convolutions. The output dict is keyed `"P0"`
    (stride 1) to `"P{n-1}"` (stride 2**(n-1)) for `n = len(filters)`.

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
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    outputs = {}
    for level, level_filters in enumerate(filters):
        if level > 0:
            x = keras.layers.MaxPooling2D(2, name=f"level{level}_pool")(x)
        for index in range(convs_per_level):
            prefix = f"level{level}_conv{index + 1}"
            x = keras.layers.Conv2D(
                level_filters,
                kernel_size,
                padding="same",
                use_bias=normalization is None,
                name=prefix,
            )(x)
            if normalization == "batch":
                x = keras.layers.BatchNormalization(
                    momentum=batch_norm_momentum, name=f"{prefix}_bn"
                )(x)
            x = keras.layers.Activation(activation, name=f"{prefix}_act")(x)
        outputs[level_name(level)] = x
    model = keras.Model(inputs, outputs, name=name)
    model.pyramid_outputs = outputs
    return model
