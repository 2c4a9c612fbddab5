"""tf.data input pipelines for in-memory image arrays."""

import math

import numpy as np
import tensorflow as tf

from kcnn._validation import check_positive_int
from kcnn.data.augment import augmentation_layers

AUGMENTATIONS = ("flip", "flip_translate")
# Segmentation also takes these: a random zoom-in (scale up to SCALE_RANGE, crop back) applied
# to image and mask alike, and, with "_color", brightness / contrast jitter of the image only.
SEGMENTATION_AUGMENTATIONS = AUGMENTATIONS + ("flip_scale", "flip_scale_color")
# Classification also takes random erasing after the shift (a label survives a hidden patch;
# a mask or a hole would not).
CLASSIFICATION_AUGMENTATIONS = AUGMENTATIONS + ("flip_translate_erase",)
SCALE_RANGE = (1.0, 1.25)
BRIGHTNESS_DELTA = 0.1  # of the pixel range
CONTRAST_RANGE = (0.8, 1.2)
# Largest shift of "flip_translate", as a fraction of the image height and width.
TRANSLATE_FRACTION = 0.1
# Random erasing (Zhong et al. 2020, arXiv:1708.04896), the paper's defaults: probability p,
# area S_e / S in [s_l, s_h], aspect r_e uniform in [r_1, 1 / r_1].
ERASE_PROBABILITY = 0.5
ERASE_AREA = (0.02, 0.4)
ERASE_ASPECT = 0.3


def _check_images(images, argument="images"):
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(
            f"`{argument}` must be a 4-D array (N, H, W, C). Received: {argument}.shape="
            f"{images.shape}"
        )
    if images.dtype != np.uint8 and not np.issubdtype(images.dtype, np.floating):
        raise ValueError(
            f"`{argument}` must be uint8 in [0, 255] or float in [0, 1]. "
            f"Received: {argument}.dtype={images.dtype}"
        )
    if images.dtype != np.uint8 and images.size and (images.min() < 0 or images.max() > 1):
        raise ValueError(
            f"Float `{argument}` must lie in [0, 1]. Received: min={images.min()}, "
            f"max={images.max()}"
        )
    return images


def _check_augment(augment, allowed=AUGMENTATIONS):
    if augment is None or callable(augment) or augment in allowed:
        return
    raise ValueError(
        f"`augment` must be None, a callable, or one of {allowed}. Received: augment={augment!r}"
    )


def scale_crop_window(batch, height, width, seed):
    """The random zoom of `"flip_scale"`: one factor in SCALE_RANGE for the batch, each
    image then cropped back to `(height, width)` at its own offset. Returns
    `(new_height, new_width, top, left)`: the zoomed size and per-image crop offsets."""
    scale_seed, row_seed, column_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    factor = tf.random.stateless_uniform([], scale_seed, *SCALE_RANGE)
    new_height = tf.cast(tf.math.ceil(factor * height), tf.int32)
    new_width = tf.cast(tf.math.ceil(factor * width), tf.int32)
    top = tf.random.stateless_uniform(
        [batch], row_seed, maxval=new_height - height + 1, dtype=tf.int32
    )
    left = tf.random.stateless_uniform(
        [batch], column_seed, maxval=new_width - width + 1, dtype=tf.int32
    )
    return new_height, new_width, top, left


def crop_window(images, height, width, top, left):
    """Crops each image of a batch to `(height, width)` at its own `(top, left)`."""
    rows = top[:, tf.newaxis] + tf.range(height)[tf.newaxis]
    columns = left[:, tf.newaxis] + tf.range(width)[tf.newaxis]
    cropped = tf.gather(images, rows, axis=1, batch_dims=1)
    return tf.gather(cropped, columns, axis=2, batch_dims=1)


def _scale_crop(stacked, seed):
    """Zooms a batch in by one random factor in SCALE_RANGE and crops each image back to size
    at its own random offset. The last channel is a mask: it is resized nearest-neighbour."""
    height, width = stacked.shape[1], stacked.shape[2]
    new_height, new_width, top, left = scale_crop_window(tf.shape(stacked)[0], height, width, seed)
    images = tf.image.resize(stacked[..., :-1], [new_height, new_width], "bilinear")
    masks = tf.image.resize(stacked[..., -1:], [new_height, new_width], "nearest")
    scaled = tf.concat([images, masks], axis=-1)
    return crop_window(scaled, height, width, top, left)


def _color_jitter(images, seed, maximum):
    """Per-image brightness shift and contrast change of images in [0, maximum], clipped."""
    brightness_seed, contrast_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    batch = tf.shape(images)[0]
    shift = (
        tf.random.stateless_uniform(
            [batch, 1, 1, 1], brightness_seed, -BRIGHTNESS_DELTA, BRIGHTNESS_DELTA
        )
        * maximum
    )
    contrast = tf.random.stateless_uniform([batch, 1, 1, 1], contrast_seed, *CONTRAST_RANGE)
    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    return tf.clip_by_value((images - mean) * contrast + mean + shift, 0.0, maximum)


def _check_same_length(images, other, other_name):
    if len(images) != len(other):
        raise ValueError(
            f"`images` and `{other_name}` must have the same length. Received: "
            f"len(images)={len(images)}, len({other_name})={len(other)}"
        )


def _flip_translate(images, seed, translate):
    """Random horizontal flip, then a random shift of up to 10% (reflect-pad + crop).

    Works on a whole batch `(B, H, W, C)` at once: one stateless draw per image, keyed by
    `seed`, so the result depends only on the seed. Crops are two batched gathers rather
    than one `random_crop` per image.
    """
    flip_seed, row_seed, column_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    batch = tf.shape(images)[0]
    flips = tf.random.stateless_uniform([batch], flip_seed) < 0.5
    images = tf.where(flips[:, tf.newaxis, tf.newaxis, tf.newaxis], tf.reverse(images, [2]), images)
    if translate:
        height, width = images.shape[1], images.shape[2]
        pad_height = math.ceil(TRANSLATE_FRACTION * height)
        pad_width = math.ceil(TRANSLATE_FRACTION * width)
        padded = tf.pad(
            images, [[0, 0], [pad_height, pad_height], [pad_width, pad_width], [0, 0]], "REFLECT"
        )
        top = tf.random.stateless_uniform(
            [batch], row_seed, maxval=2 * pad_height + 1, dtype=tf.int32
        )
        left = tf.random.stateless_uniform(
            [batch], column_seed, maxval=2 * pad_width + 1, dtype=tf.int32
        )
        rows = top[:, tf.newaxis] + tf.range(height)[tf.newaxis]
        columns = left[:, tf.newaxis] + tf.range(width)[tf.newaxis]
        images = tf.gather(padded, rows, axis=1, batch_dims=1)
        images = tf.gather(images, columns, axis=2, batch_dims=1)
    return images


def _random_erase(images, seed):
    """Random erasing: with probability 0.5, a rectangle of each image is replaced by
    random pixel values.

    Zhong, Zheng, Kang, Li & Yang, "Random Erasing Data Augmentation", AAAI 2020
    (arXiv:1708.04896), algorithm 1 with its defaults: area S_e = S * U(0.02, 0.4), aspect
    r_e = U(0.3, 1 / 0.3), H_e = sqrt(S_e r_e), W_e = sqrt(S_e / r_e), top-left uniform over
    the places where the rectangle fits, values uniform over the pixel range. Where the
    paper draws again when the rectangle does not fit, the sides are clipped to the image
    (one draw per image, the whole batch at once).
    """
    keys = tf.unstack(tf.random.experimental.stateless_split(seed, 6))
    batch = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]
    area = tf.random.stateless_uniform([batch], keys[0], *ERASE_AREA) * (height * width)
    aspect = tf.random.stateless_uniform([batch], keys[1], ERASE_ASPECT, 1.0 / ERASE_ASPECT)
    rect_height = tf.clip_by_value(tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32), 1, height)
    rect_width = tf.clip_by_value(tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32), 1, width)
    top = tf.cast(
        tf.random.stateless_uniform([batch], keys[2])
        * tf.cast(height - rect_height + 1, tf.float32),
        tf.int32,
    )
    left = tf.cast(
        tf.random.stateless_uniform([batch], keys[3]) * tf.cast(width - rect_width + 1, tf.float32),
        tf.int32,
    )
    rows = tf.range(height)[tf.newaxis]
    columns = tf.range(width)[tf.newaxis]
    in_rows = (rows >= top[:, tf.newaxis]) & (rows < (top + rect_height)[:, tf.newaxis])
    in_columns = (columns >= left[:, tf.newaxis]) & (columns < (left + rect_width)[:, tf.newaxis])
    erase = tf.random.stateless_uniform([batch], keys[4]) < ERASE_PROBABILITY
    region = in_rows[:, :, tf.newaxis] & in_columns[:, tf.newaxis, :] & erase[:, None, None]
    if images.dtype == tf.uint8:
        noise = tf.random.stateless_uniform(tf.shape(images), keys[5], 0, 256, tf.int32)
        noise = tf.cast(noise, tf.uint8)
    else:
        noise = tf.random.stateless_uniform(tf.shape(images), keys[5], dtype=images.dtype)
    return tf.where(region[..., tf.newaxis], noise, images)


def _to_unit_float(images):
    if images.dtype == tf.uint8:
        return tf.cast(images, tf.float32) / 255.0
    return tf.cast(images, tf.float32)


def _build(
    elements,
    count,
    batch_size,
    shuffle,
    seed,
    batch_augment,
    batch_map,
    drop_remainder,
    repeat,
    parallel_map=True,
):
    dataset = tf.data.Dataset.from_tensor_slices(elements)
    if shuffle:
        dataset = dataset.shuffle(count, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    if batch_augment is not None:
        # One stateless seed pair per batch; `rerandomize_each_iteration` gives each epoch new
        # (but reproducible) draws.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        dataset = tf.data.Dataset.zip((dataset, seeds)).map(
            batch_augment, num_parallel_calls=tf.data.AUTOTUNE
        )
    # Keras's random layers draw from a seed generator whose state each call advances: they
    # give the same batches for the same seed only when the batches are mapped in order.
    parallel = tf.data.AUTOTUNE if parallel_map else None
    dataset = dataset.map(batch_map, num_parallel_calls=parallel)
    return dataset.prefetch(tf.data.AUTOTUNE)


def make_dataset(
    images,
    labels=None,
    batch_size=32,
    shuffle=False,
    seed=0,
    augment=None,
    drop_remainder=False,
    repeat=False,
):
    """Builds a batched, prefetched `tf.data.Dataset` from in-memory images.

    Batches hold float32 images in `[0, 1]` (uint8 input is divided by 255; float
    input is passed through) and, if given, the labels unchanged.

    Built-in augmentations run on whole batches (an independent draw per image)
    with stateless random ops whose seeds come from `tf.data.Dataset.random(seed)`,
    one per batch, so the same `seed` gives the same batches, while every epoch
    draws new transforms:

    - `"flip"`: random horizontal flip (probability 0.5).
    - `"flip_translate"`: the flip, then a random shift of up to 10% of the
      height and width (reflect padding, then a random crop back to size).
    - `"flip_translate_erase"`: the flip and the shift, then random erasing (Zhong
      et al. 2020): with probability 0.5 a rectangle of 2-40% of the image, aspect
      0.3-3.3, is filled with random values.
    - a list of names from `kcnn.data.augment.LIST_AUGMENTATIONS` (`"flip"`,
      `"random_resized_crop"`, `"rotation"`, `"color_jitter"`, `"pca_lighting"`):
      AlexNet-style augmentation by Keras's preprocessing layers, applied in the list's
      order (see `kcnn.data.augment`), seeded from `seed`; batches are then mapped in
      order, which keeps them reproducible.

    Args:
        images: array `(N, H, W, C)`, uint8 or float in `[0, 1]`.
        labels: array-like of length N, or None to yield images only. Defaults
            to `None`.
        batch_size: int. Defaults to `32`.
        shuffle: bool. Shuffle (reshuffling each epoch, seeded). Defaults to
            `False`.
        seed: int. Seed of shuffling and augmentation. Defaults to `0`.
        augment: None, `"flip"`, `"flip_translate"`, `"flip_translate_erase"`, a list
            of names (above), or a callable mapping a
            float32 image batch `(B, H, W, C)` to an augmented batch (e.g. a
            `keras.Sequential` of preprocessing layers). Defaults to `None`.
        drop_remainder: bool. Drop the last incomplete batch. Defaults to
            `False`.
        repeat: bool. Repeat forever. Defaults to `False`.

    Returns:
        A `tf.data.Dataset` of `images` or `(images, labels)` batches.

    Raises:
        ValueError: if `images` is not 4-D uint8/float in range, `labels` has a
            different length, `batch_size` is not a positive int, or `augment`
            is not allowed.

    Example:

    >>> from kcnn.data import load_digits
    >>> (x_train, y_train), _ = load_digits()
    >>> dataset = make_dataset(x_train, y_train, batch_size=64, shuffle=True, augment="flip")
    >>> images, labels = next(iter(dataset))
    >>> images.shape, images.dtype
    (TensorShape([64, 8, 8, 1]), tf.float32)
    """
    images = _check_images(images)
    batch_size = check_positive_int(batch_size, "batch_size")
    layers = []
    if isinstance(augment, list | tuple):
        layers = augmentation_layers(list(augment), images, seed)
    else:
        _check_augment(augment, CLASSIFICATION_AUGMENTATIONS)
    elements = (images,)
    if labels is not None:
        labels = np.asarray(labels)
        _check_same_length(images, labels, "labels")
        elements = (images, labels)

    batch_augment = None
    if isinstance(augment, str):
        translate = augment in ("flip_translate", "flip_translate_erase")
        erase = augment == "flip_translate_erase"

        def batch_augment(batch, seed_pair):
            if not erase:
                return (_flip_translate(batch[0], seed_pair, translate),) + batch[1:]
            shift_seed, erase_seed = tf.unstack(
                tf.random.experimental.stateless_split(seed_pair, 2)
            )
            images = _random_erase(_flip_translate(batch[0], shift_seed, translate), erase_seed)
            return (images,) + batch[1:]

    def batch_map(*batch):
        batch_images = _to_unit_float(batch[0])
        if callable(augment):
            batch_images = augment(batch_images)
        for layer in layers:
            batch_images = layer(batch_images, training=True)
        return (batch_images,) + batch[1:] if labels is not None else batch_images

    return _build(
        elements,
        len(images),
        batch_size,
        shuffle,
        seed,
        batch_augment,
        batch_map,
        drop_remainder,
        repeat,
        parallel_map=not layers,
    )


def make_segmentation_dataset(
    images,
    masks,
    batch_size=32,
    shuffle=False,
    seed=0,
    augment=None,
    drop_remainder=False,
    repeat=False,
):
    """Builds a batched `tf.data.Dataset` of `(images, masks)` for segmentation.

    Like `make_dataset`, but every geometric augmentation is applied identically
    to an image and its mask (the mask rides along as an extra channel), so
    pixels keep their labels. Masks come out as int32 `(B, H, W)` class indices,
    ready for `SparseCategoricalCrossentropy`.

    Args:
        images: array `(N, H, W, C)`, uint8 or float in `[0, 1]`.
        masks: integer array `(N, H, W)` of class indices.
        batch_size: int. Defaults to `32`.
        shuffle: bool. Defaults to `False`.
        seed: int. Defaults to `0`.
        augment: None, `"flip"`, `"flip_translate"`, `"flip_scale"` (the flip,
            then a random zoom-in by up to 25% and a random crop back to size,
            masks resized nearest-neighbour), `"flip_scale_color"` (also a
            brightness / contrast jitter of the image only), or a callable
            mapping `(images, masks)` batches (float32 `(B, H, W, C)`, int32
            `(B, H, W)`) to augmented `(images, masks)`. Defaults to `None`.
        drop_remainder: bool. Defaults to `False`.
        repeat: bool. Defaults to `False`.

    Returns:
        A `tf.data.Dataset` of `(images, masks)` batches.

    Raises:
        ValueError: if `images` or `masks` has the wrong rank, dtype or size, the
            lengths differ, `batch_size` is not a positive int, or `augment` is
            not allowed.

    Example:

    >>> from kcnn.data import make_shapes
    >>> data = make_shapes(64, image_size=64)
    >>> dataset = make_segmentation_dataset(data.images, data.masks, augment="flip_translate")
    >>> images, masks = next(iter(dataset))
    >>> images.shape, masks.shape
    (TensorShape([32, 64, 64, 3]), TensorShape([32, 64, 64]))
    """
    images = _check_images(images)
    masks = np.asarray(masks)
    _check_same_length(images, masks, "masks")
    if masks.ndim != 3 or masks.shape[1:] != images.shape[1:3]:
        raise ValueError(
            "`masks` must have shape (N, H, W) matching `images` (N, H, W, C). Received: "
            f"images.shape={images.shape}, masks.shape={masks.shape}"
        )
    if not np.issubdtype(masks.dtype, np.integer):
        raise ValueError(
            f"`masks` must hold integer class indices. Received: masks.dtype={masks.dtype}"
        )
    batch_size = check_positive_int(batch_size, "batch_size")
    _check_augment(augment, SEGMENTATION_AUGMENTATIONS)

    batch_augment = None
    if isinstance(augment, str):
        translate = augment == "flip_translate"
        scale = augment.startswith("flip_scale")
        color = augment.endswith("_color")

        def batch_augment(batch, seed_pair):
            image, mask = batch
            flip_seed, scale_seed, color_seed = tf.unstack(
                tf.random.experimental.stateless_split(seed_pair, 3)
            )
            # Float32 holds both uint8 pixels and class indices exactly, so the round trip is
            # lossless.
            stacked = tf.concat(
                [tf.cast(image, tf.float32), tf.cast(mask, tf.float32)[..., tf.newaxis]], axis=-1
            )
            stacked = _flip_translate(stacked, flip_seed, translate)
            if scale:
                stacked = _scale_crop(stacked, scale_seed)
            pixels = stacked[..., :-1]
            if color:
                pixels = _color_jitter(
                    pixels, color_seed, 255.0 if image.dtype == tf.uint8 else 1.0
                )
            if image.dtype == tf.uint8:
                pixels = tf.round(pixels)
            return tf.cast(pixels, image.dtype), tf.cast(stacked[..., -1], mask.dtype)

    def batch_map(batch_images, batch_masks):
        batch_images = _to_unit_float(batch_images)
        batch_masks = tf.cast(batch_masks, tf.int32)
        if callable(augment):
            batch_images, batch_masks = augment(batch_images, batch_masks)
        return batch_images, batch_masks

    return _build(
        (images, masks),
        len(images),
        batch_size,
        shuffle,
        seed,
        batch_augment,
        batch_map,
        drop_remainder,
        repeat,
    )


def _random_masks(pool, batch, seed):
    """One mask per image drawn from `pool` (a tensor `(M, H, W, 1)`), randomly flipped up-down
    and left-right, from a stateless seed."""
    index_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    indices = tf.random.stateless_uniform(
        [batch], index_seed, maxval=tf.shape(pool)[0], dtype=tf.int32
    )
    masks = tf.gather(pool, indices)
    flips = tf.random.stateless_uniform([batch, 2], flip_seed) < 0.5
    masks = tf.where(flips[:, 0, None, None, None], tf.reverse(masks, [1]), masks)
    return tf.where(flips[:, 1, None, None, None], tf.reverse(masks, [2]), masks)


def make_inpainting_dataset(
    images,
    masks,
    batch_size=32,
    shuffle=False,
    seed=0,
    augment=None,
    mask_pool=None,
    drop_remainder=False,
    repeat=False,
):
    """Builds a batched `tf.data.Dataset` for inpainting models such as `PConvUNet`.

    Each element is `((masked_image, mask), target)`: float32 `masked_image = image * mask`
    `(B, H, W, C)`, `mask` `(B, H, W, 1)` with 1 = valid and 0 = hole, and the target
    `concat([image, mask], -1)` `(B, H, W, C + 1)`, which carries the mask to the loss and
    the metrics (see `kcnn.tasks.inpainting`).

    Args:
        images: array `(N, H, W, C)`, uint8 or float in `[0, 1]`.
        masks: array `(N, H, W, 1)` of 0 / 1: each image's own mask.
        batch_size: int. Defaults to `32`.
        shuffle: bool. Defaults to `False`.
        seed: int. Seed of shuffling, augmentation and mask draws. Defaults to `0`.
        augment: None, `"flip"` (random horizontal flip of the images), or a callable
            mapping a float32 image batch to an augmented batch. Defaults to `None`.
        mask_pool: None, or an array `(M, H, W, 1)` of masks: each image then gets a mask
            drawn from the pool (randomly flipped up-down and left-right) in every epoch,
            instead of its own. Defaults to `None`.
        drop_remainder: bool. Defaults to `False`.
        repeat: bool. Defaults to `False`.

    Returns:
        A `tf.data.Dataset` of `((masked_image, mask), target)` batches.

    Raises:
        ValueError: if `images` or `masks` has the wrong rank, size or values, the lengths
            differ, or `augment` is not allowed.

    Example:

    >>> from kcnn.data import irregular_masks, load_photos
    >>> crops = load_photos(crop_size=32, crops_per_photo=2)
    >>> masks = irregular_masks(len(crops), image_size=32)
    >>> (masked, mask), target = next(iter(make_inpainting_dataset(crops, masks, batch_size=4)))
    >>> masked.shape, mask.shape, target.shape
    (TensorShape([4, 32, 32, 3]), TensorShape([4, 32, 32, 1]), TensorShape([4, 32, 32, 4]))
    """
    images = _check_images(images)
    batch_size = check_positive_int(batch_size, "batch_size")
    _check_augment(augment, ("flip",))
    masks = _check_masks(masks, images, "masks")
    _check_same_length(images, masks, "masks")
    if mask_pool is not None:
        mask_pool = tf.constant(_check_masks(mask_pool, images, "mask_pool"))

    batch_augment = None
    if augment == "flip" or mask_pool is not None:

        def batch_augment(batch, seed_pair):
            batch_images, batch_masks = batch
            flip_seed, mask_seed = tf.unstack(tf.random.experimental.stateless_split(seed_pair, 2))
            if augment == "flip":
                batch_images = _flip_translate(batch_images, flip_seed, translate=False)
            if mask_pool is not None:
                batch_masks = _random_masks(mask_pool, tf.shape(batch_images)[0], mask_seed)
            return batch_images, batch_masks

    def batch_map(batch_images, batch_masks):
        batch_images = _to_unit_float(batch_images)
        if callable(augment):
            batch_images = augment(batch_images)
        batch_masks = tf.cast(batch_masks, tf.float32)
        target = tf.concat([batch_images, batch_masks], axis=-1)
        return (batch_images * batch_masks, batch_masks), target

    return _build(
        (images, masks),
        len(images),
        batch_size,
        shuffle,
        seed,
        batch_augment,
        batch_map,
        drop_remainder,
        repeat,
    )


def _check_masks(masks, images, argument):
    masks = np.asarray(masks)
    if masks.ndim != 4 or masks.shape[1:] != (*images.shape[1:3], 1):
        raise ValueError(
            f"`{argument}` must have shape (N, H, W, 1) with the height and width of `images` "
            f"{images.shape}. Received: {argument}.shape={masks.shape}"
        )
    if masks.size and not np.isin(masks, (0, 1)).all():
        raise ValueError(f"`{argument}` must hold only 0 (hole) and 1 (valid pixel).")
    return masks.astype(np.uint8)
