"""Classification with localization: one object per image, its class and its box.

Targets are one row per image, `(x_min, y_min, x_max, y_max, class)`: the object's box in
pixels with exclusive max (as `kcnn.data.detection`'s rows, so the boxes, flips and plots of
detection serve here too) and its 0-based class.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from kcnn._validation import check_positive_int, normalize_image_size
from kcnn.data._imaging import resize_image
from kcnn.data.detection import make_detection_dataset
from kcnn.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from kcnn.data.registry import TEST_SEED_OFFSET, ImageData, _load
from kcnn.data.shapes import SHAPE_CLASSES, make_shapes

LOCALIZATION_AUGMENTATIONS = ("flip",)
# A pixel of a pasted Fashion-MNIST item belongs to its box from this grey level on (the
# resized item's faint antialiased rim is left out).
ITEM_THRESHOLD = 16


@dataclasses.dataclass(eq=False)
class LocalizationData(ImageData):
    """A classification-with-localization dataset split into train and test.

    Attributes:
        x_train, x_test: uint8 images `(N, H, W, C)`.
        y_train, y_test: float32 `(N, 5)`, one row `(x_min, y_min, x_max, y_max, class)`
            per image: the object's box in pixels (exclusive max) and its 0-based class.
        class_names: tuple of str.
        name: str. The registry name the data was loaded under.
    """


def paste_items(items, labels, canvas_size=48, scale_range=(0.75, 1.5), seed=0):
    """Pastes each small image at a random scale and position on a black canvas.

    Item `i` is resized (bilinear) by a factor drawn uniformly from `scale_range` and placed
    uniformly at random where it fits, with draws from `numpy.random.default_rng([seed, i])`
    (so the result of item `i` does not depend on the others). Its box is the tight box of
    the pasted pixels of grey level >= `ITEM_THRESHOLD` (the whole pasted square if none is).

    Args:
        items: uint8 array `(N, h, w, C)`, objects on a black background (Fashion-MNIST).
        labels: integer array `(N,)` of 0-based classes.
        canvas_size: int or `(height, width)`. Defaults to `48`.
        scale_range: pair of floats `0 < low <= high`; a scaled item must fit on the canvas.
            Defaults to `(0.75, 1.5)`.
        seed: int. Defaults to `0`.

    Returns:
        `(images, rows)`: uint8 `(N, H, W, C)` canvases and float32 `(N, 5)` rows
        `(x_min, y_min, x_max, y_max, class)`.

    Raises:
        ValueError: if an argument is out of range (the message names it).

    Example:

    >>> items = np.zeros((1, 28, 28, 1), np.uint8); items[0, 10:20, 5:9] = 200
    >>> images, rows = paste_items(items, [3], canvas_size=40, scale_range=(1.0, 1.0))
    >>> images.shape, (rows[0, 2:4] - rows[0, :2]).tolist(), int(rows[0, 4])  # width, height
    ((1, 40, 40, 1), [4.0, 10.0], 3)
    """
    items = np.asarray(items)
    labels = np.asarray(labels)
    if items.ndim != 4 or items.dtype != np.uint8:
        raise ValueError(
            f"`items` must be a uint8 array (N, h, w, C). Received: shape={items.shape}, "
            f"dtype={items.dtype}"
        )
    if labels.shape != (len(items),):
        raise ValueError(
            f"`labels` must have one entry per item. Received: labels.shape={labels.shape}, "
            f"{len(items)} items"
        )
    height, width = normalize_image_size(canvas_size, "canvas_size")
    low, high = (float(value) for value in scale_range)
    item_height, item_width = items.shape[1:3]
    if (
        not 0 < low <= high
        or round(high * item_height) > height
        or round(high * item_width) > width
    ):
        raise ValueError(
            "`scale_range` must be (low, high) with 0 < low <= high and the largest item "
            f"({item_height}x{item_width} scaled by high) fitting the {height}x{width} canvas. "
            f"Received: scale_range={scale_range}"
        )
    images = np.zeros((len(items), height, width, items.shape[3]), np.uint8)
    rows = np.zeros((len(items), 5), np.float32)
    for index, item in enumerate(items):
        rng = np.random.default_rng([seed, index])
        scale = rng.uniform(low, high)
        size_h = max(1, round(scale * item_height))
        size_w = max(1, round(scale * item_width))
        resized = resize_image(item, size_h, size_w).reshape(size_h, size_w, -1)
        top = int(rng.integers(0, height - size_h + 1))
        left = int(rng.integers(0, width - size_w + 1))
        images[index, top : top + size_h, left : left + size_w] = resized
        inside_rows, inside_columns = np.nonzero(resized.max(axis=-1) >= ITEM_THRESHOLD)
        if inside_rows.size:
            box = (
                left + inside_columns.min(),
                top + inside_rows.min(),
                left + inside_columns.max() + 1,
                top + inside_rows.max() + 1,
            )
        else:
            box = (left, top, left + size_w, top + size_h)
        rows[index] = (*box, labels[index])
    return images, rows


def _take(count, available, seed, argument):
    count = check_positive_int(count, argument, minimum=0)
    if count > available:
        raise ValueError(f"`{argument}` must be at most {available}. Received: {argument}={count}")
    return np.random.default_rng(seed).permutation(available)[:count]


def _localized_fashion_mnist(
    path=None, train_count=12000, test_count=2000, canvas_size=48, scale_range=(0.75, 1.5), seed=0
):
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist(path)
    splits = []
    for images, labels, count, argument, split_seed in (
        (x_train, y_train, train_count, "train_count", seed),
        (x_test, y_test, test_count, "test_count", seed + TEST_SEED_OFFSET),
    ):
        chosen = _take(count, len(images), split_seed, argument)
        splits += paste_items(images[chosen], labels[chosen], canvas_size, scale_range, split_seed)
    return (*splits, FASHION_MNIST_CLASSES)


def _single_shapes(count, image_size, seed):
    """`count` one-shape scenes: `make_shapes` with `max_shapes=1`, skipping the rare scene
    where the shape could not be placed (`make_shapes(n)` is a prefix of `make_shapes(m)`,
    so drawing more keeps the scenes already kept)."""
    drawn = count
    while True:
        scenes = make_shapes(drawn, image_size=image_size, seed=seed, max_shapes=1)
        kept = [index for index, boxes in enumerate(scenes.boxes) if len(boxes) == 1][:count]
        if len(kept) == count:
            break
        drawn += count - len(kept)
    # make_shapes numbers its shapes from 1 (0 is its background class).
    rows = [(*scenes.boxes[index][0], scenes.box_classes[index][0] - 1) for index in kept]
    return scenes.images[kept], np.asarray(rows, np.float32).reshape(count, 5)


def _shapes(train_count=1000, test_count=200, image_size=64, seed=0):
    check_positive_int(train_count, "train_count", minimum=0)
    check_positive_int(test_count, "test_count", minimum=0)
    train = _single_shapes(train_count, image_size, seed)
    test = _single_shapes(test_count, image_size, seed + TEST_SEED_OFFSET)
    return (*train, *test, SHAPE_CLASSES)


# Registry name -> builder returning (x_train, rows_train, x_test, rows_test, class_names).
LOCALIZATION_DATASETS = {
    "localized_fashion_mnist": _localized_fashion_mnist,
    "shapes": _shapes,
}


def load_localization_data(name, **kwargs):
    """Loads a registered classification-with-localization dataset by name.

    - `"localized_fashion_mnist"`: `path=None`, `train_count=12000`, `test_count=2000`,
      `canvas_size=48`, `scale_range=(0.75, 1.5)`, `seed=0`.
    - `"shapes"`: `train_count=1000`, `test_count=200`, `image_size=64`, `seed=0`.

    `"localized_fashion_mnist"` pastes Fashion-MNIST items (`train_count` drawn at random
    from the official training split, `test_count` from the official test split) at a
    random scale and position on a black canvas (`paste_items`). `"shapes"` is
    `make_shapes` with one shape per scene (circle, square, triangle, star on a photo
    crop); test scenes use another seed.

    Args:
        name: str. A key of `LOCALIZATION_DATASETS`.
        **kwargs: keyword arguments of that dataset (table above).

    Returns:
        A `LocalizationData`.

    Raises:
        ValueError: for an unknown name or keyword argument, or an argument out of range.
        FileNotFoundError: if Fashion-MNIST is not installed.

    Example:
    >>> data = load_localization_data("shapes", train_count=4, test_count=2, image_size=32)
    >>> data.x_train.shape, data.y_train.shape, data.class_names[0]
    ((4, 32, 32, 3), (4, 5), 'circle')
    """
    return _load(LOCALIZATION_DATASETS, "localization", LocalizationData, name, kwargs)


def _check_rows(rows, images):
    rows = np.asarray(rows, np.float32)
    if rows.ndim != 2 or rows.shape != (len(images), 5):
        raise ValueError(
            "`rows` must be an array (N, 5) of (x_min, y_min, x_max, y_max, class), one per "
            f"image. Received: rows.shape={rows.shape} for {len(images)} images"
        )
    return rows


def normalize_rows(rows, height, width):
    """`(x_min, y_min, x_max, y_max, class)` rows with the box as fractions of the image
    width and height (the model's box output), the class unchanged."""
    scale = tf.constant([width, height, width, height, 1.0], tf.float32)
    return tf.cast(rows, tf.float32) / scale


def make_localization_dataset(
    images, rows, batch_size=32, shuffle=False, seed=0, augment=None, drop_remainder=False
):
    """Batches of float32 images in `[0, 1]` and float32 `(B, 5)` targets: the box as
    fractions of the image width and height, then the class.

    Args:
        images: array `(N, H, W, C)`, uint8 or float in `[0, 1]`.
        rows: array `(N, 5)` of `(x_min, y_min, x_max, y_max, class)` in pixels.
        batch_size: int. Defaults to `32`.
        shuffle: bool. Shuffle, seeded, every epoch anew. Defaults to `False`.
        seed: int. Seed of shuffling and flips. Defaults to `0`.
        augment: None or `"flip"` (left-right with probability 0.5, the box mirrored).
            Defaults to `None`.
        drop_remainder: bool. Defaults to `False`.

    Returns:
        A `tf.data.Dataset` of `(images, targets)` batches.

    Raises:
        ValueError: if `rows` is not `(N, 5)`, a box lies outside its image, or an
            argument is not allowed (named).

    Example:
    >>> data = load_localization_data("shapes", train_count=4, test_count=1, image_size=32)
    >>> images, targets = next(iter(make_localization_dataset(data.x_train, data.y_train)))
    >>> images.shape, targets.shape, bool(tf.reduce_max(targets[:, :4]) <= 1.0)
    (TensorShape([4, 32, 32, 3]), TensorShape([4, 5]), True)
    """
    if augment is not None and augment not in LOCALIZATION_AUGMENTATIONS:
        raise ValueError(
            f"`augment` must be None or one of {LOCALIZATION_AUGMENTATIONS}. "
            f"Received: augment={augment!r}"
        )
    images = np.asarray(images)
    rows = _check_rows(rows, images)
    height, width = images.shape[1:3]
    # A localization row is a detection image with one box, so detection's checks and
    # box-aware flips serve; the box axis is dropped afterwards.
    dataset = make_detection_dataset(
        images,
        rows[:, np.newaxis],
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        augment=augment,
        drop_remainder=drop_remainder,
    )
    return dataset.map(
        lambda batch, boxes: (batch, normalize_rows(boxes[:, 0], height, width)),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
