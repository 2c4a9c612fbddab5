"""The image patches that excite a unit most over a data set, each cut to the unit's
receptive field (Zeiler & Fergus 2014, figure 2; Girshick et al. 2014, figure 4)."""

from typing import NamedTuple

import numpy as np

from kcnn._validation import check_positive_int
from kcnn.analysis import analyze
from kcnn.viz.backprojection import deconvnet_projection
from kcnn.viz.explain import check_images, find_layer, layer_output


class TopPatches(NamedTuple):
    """What `top_activating_patches` returns; one row per requested channel.

    Attributes:
        channels: tuple of the channels, in the order asked.
        patches: float32 `(len(channels), k, r_h, r_w, C)`: input pixels of each unit's
            receptive field, strongest first; pixels outside the image are 0.
        activations: float32 `(len(channels), k)`: the unit's activation.
        image_indices: int `(len(channels), k)`: which image of `images`.
        positions: int `(len(channels), k, 2)`: the unit's (row, column) in the layer output.
        boxes: int `(len(channels), k, 4)`: `(top, left, bottom, right)` of the field in
            image pixels, bottom and right exclusive (may reach outside the image).
        receptive_field: `(r_h, r_w)` ints.
        jump: `(j_h, j_w)`: input pixels between neighbouring units.
        start: `(s_h, s_w)`: centre of the first unit's field in input pixels.
    """

    channels: tuple
    patches: np.ndarray
    activations: np.ndarray
    image_indices: np.ndarray
    positions: np.ndarray
    boxes: np.ndarray
    receptive_field: tuple
    jump: tuple
    start: tuple


def _per_axis(value):
    return tuple(value) if isinstance(value, tuple) else (value, value)


def receptive_field_geometry(model, layer_name, input_shape=None):
    """`(r, jump, start)` of `layer_name`'s output, each `(h, w)`, from `kcnn.analysis`.

    Args:
        model: a functional or Sequential Keras model.
        layer_name: str. A layer of `model` or of a model nested in it.
        input_shape: None or `(H, W, C)`, for a model with an unknown input size.

    Raises:
        ValueError: if the layer's receptive field, jump or start is not known (after a
            global pooling, an upsampling, or a layer `analyze` cannot follow).
    """
    records = analyze(model, input_shape=input_shape).layers
    matches = [r for r in records if r.name == layer_name or r.name.endswith("/" + layer_name)]
    if not matches:
        raise ValueError(f"`layer_name`={layer_name!r} has no record in the model's analysis.")
    record = matches[0]
    if record.receptive_field is None or record.jump is None or record.start is None:
        raise ValueError(
            f"The receptive field of layer {layer_name!r} is not known (receptive field "
            f"{record.receptive_field}, jump {record.jump}, start {record.start}): it comes "
            "after a global pooling, an upsampling or a layer kcnn.analysis cannot follow. "
            "Pick an earlier conv layer."
        )
    return _per_axis(record.receptive_field), _per_axis(record.jump), _per_axis(record.start)


def _crop(image, top, left, height, width):
    """`image[top:top+height, left:left+width]`, with zeros where the box leaves the image."""
    patch = np.zeros((height, width, image.shape[-1]), np.float32)
    rows = slice(max(top, 0), min(top + height, image.shape[0]))
    columns = slice(max(left, 0), min(left + width, image.shape[1]))
    if rows.start < rows.stop and columns.start < columns.stop:
        patch[rows.start - top : rows.stop - top, columns.start - left : columns.stop - left] = (
            image[rows, columns]
        )
    return patch


def top_activating_patches(model, layer, images, channels, k=9, batch_size=256):
    """The `k` images of `images` that excite each channel of `layer` most, cut to the field.

    For each channel, the strongest unit of the map on each image is found, the `k` images
    whose strongest unit is strongest are kept (one patch per image, so near-copies of one
    place do not fill the row, as in Zeiler & Fergus's "top 9 activations" over a data
    set), and each is cropped to the receptive field of that unit: centre
    `start + position * jump` and size `r` per axis, from `kcnn.analysis` (Araujo et al.,
    Distill 2019).

    Args:
        model: a functional or Sequential Keras model (nested models included).
        layer: str. A layer with a `(batch, h, w, channels)` output, before any global pooling.
        images: float array `(N, H, W, C)` in the model's input scale.
        channels: int or sequence of ints.
        k: positive int, at most N. Defaults to 9.
        batch_size: positive int. Images per forward pass. Defaults to 256.

    Returns:
        A `TopPatches`.

    Raises:
        ValueError: on an unknown layer, a layer without a 4-D output or without a known
            receptive field, a channel out of range, `k` larger than the number of images,
            or images of the wrong shape.

    Example:
    >>> import keras, numpy as np
    >>> inputs = keras.Input((16, 16, 1))
    >>> x = keras.layers.Conv2D(2, 3, activation="relu", name="conv")(inputs)
    >>> model = keras.Model(inputs, keras.layers.MaxPooling2D()(x))
    >>> images = np.random.default_rng(0).random((5, 16, 16, 1))
    >>> top_activating_patches(model, "conv", images, [0, 1], k=3).patches.shape
    (2, 3, 3, 3, 1)
    """
    images = check_images(model, images)
    layer_name = find_layer(model, layer).name
    check_positive_int(k, "k")
    if k > len(images):
        raise ValueError(
            f"`k` must be at most the number of images ({len(images)}). Received: k={k}"
        )
    single = isinstance(channels, int | np.integer)
    channels = (int(channels),) if single else tuple(channels)
    outputs = layer_output(model, images, layer_name, batch_size)
    if outputs.ndim != 4:
        raise ValueError(
            f"`layer`={layer!r} must have a (batch, height, width, channels) output. "
            f"Received output shape: {outputs.shape[1:]}"
        )
    bad = [
        c for c in channels if not isinstance(c, int | np.integer) or not 0 <= c < outputs.shape[-1]
    ]
    if not channels or bad:
        raise ValueError(
            f"`channels` must be ints in [0, {outputs.shape[-1]}) for layer {layer_name!r}. "
            f"Received: channels={channels!r}"
        )
    field, jump, start = receptive_field_geometry(model, layer_name, images.shape[1:])
    height, width = (int(round(size)) for size in field)
    rows = []
    for channel in channels:
        maps = outputs[..., channel].reshape(len(images), -1)
        strongest = maps.argmax(axis=1)
        values = maps[np.arange(len(images)), strongest]
        order = np.argsort(-values, kind="stable")[:k]
        row = []
        for index in order:
            position = np.unravel_index(strongest[index], outputs.shape[1:3])
            centre = [s + p * j for s, p, j in zip(start, position, jump, strict=True)]
            top = int(round(centre[0] - (height - 1) / 2))
            left = int(round(centre[1] - (width - 1) / 2))
            row.append((index, position, (top, left, top + height, left + width)))
        rows.append((values[order], row))
    return TopPatches(
        channels=channels,
        patches=np.array(
            [
                [_crop(images[index], box[0], box[1], height, width) for index, _, box in row]
                for _, row in rows
            ],
            np.float32,
        ),
        activations=np.array([values for values, _ in rows], np.float32),
        image_indices=np.array([[index for index, _, _ in row] for _, row in rows]),
        positions=np.array([[position for _, position, _ in row] for _, row in rows]),
        boxes=np.array([[box for _, _, box in row] for _, row in rows]),
        receptive_field=(height, width),
        jump=jump,
        start=start,
    )


def top_patch_projections(model, layer, images, result):
    """The DeconvNet projection of each unit of `result`, cut to the same box as its patch.

    Zeiler & Fergus (2014), figure 2, show each top activation's projection beside its image
    patch; `plot_top_patches(result, projections)` draws them that way.

    Args:
        model, layer, images: as given to `top_activating_patches`.
        result: the `TopPatches` it returned.

    Returns:
        float32 array shaped like `result.patches`.
    """
    images = check_images(model, images)
    height, width = result.receptive_field
    return np.array(
        [
            [
                _crop(
                    deconvnet_projection(model, layer, channel, images[index], tuple(position)),
                    box[0],
                    box[1],
                    height,
                    width,
                )
                for index, position, box in zip(indices, positions, boxes, strict=True)
            ]
            for channel, indices, positions, boxes in zip(
                result.channels, result.image_indices, result.positions, result.boxes, strict=True
            )
        ],
        np.float32,
    )
