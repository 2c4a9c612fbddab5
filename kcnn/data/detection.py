"""Object detection data: images with boxes padded to a fixed count, and their tf.data pipeline."""

import dataclasses

import numpy as np
import tensorflow as tf

from kcnn._validation import check_positive_int
from kcnn.data.pipeline import (
    _build,
    _check_augment,
    _check_images,
    _to_unit_float,
    crop_window,
    scale_crop_window,
)
from kcnn.data.registry import TEST_SEED_OFFSET, ImageData, _load
from kcnn.data.shapes import SHAPE_CLASSES, make_shapes

DETECTION_AUGMENTATIONS = ("flip", "flip_scale")
# A box cut by the zoom's crop is kept when this much of its zoomed area stays in the image.
MIN_VISIBLE_FRACTION = 0.5
# The value of every entry of a padding row of a box array.
PADDING = -1.0


@dataclasses.dataclass(eq=False)
class DetectionData(ImageData):
    """A detection dataset split into train and test.

    Attributes:
        x_train, x_test: uint8 images `(N, H, W, 3)`.
        y_train, y_test: float32 boxes `(N, max_boxes, 5)`, one row
            `(x_min, y_min, x_max, y_max, class)` per object: pixels with exclusive
            max (`x_max` is the last column + 1), `class` a 0-based index into
            `class_names` (there is no background class). Rows past an image's
            objects are padding, all -1.
        class_names: tuple of str.
        name: str. The registry name the data was loaded under.
        masks_train, masks_test: None, or uint8 instance masks `(N, max_boxes, H, W)`:
            row `i` of an image is the 0/1 mask of its box row `i` (all 0 for padding
            rows). Loaded with `masks=True`.
    """

    masks_train: np.ndarray | None = None
    masks_test: np.ndarray | None = None

    @property
    def max_boxes(self):
        return self.y_train.shape[1]


def pad_boxes(boxes, classes, max_boxes):
    """Packs per-image boxes and 0-based classes into one padded float32 array.

    Args:
        boxes: list of N arrays `(n_i, 4)` `(x_min, y_min, x_max, y_max)`.
        classes: list of N integer arrays `(n_i,)`, 0-based.
        max_boxes: int. Rows per image; every `n_i` must fit.

    Returns:
        float32 array `(N, max_boxes, 5)`; padding rows are all -1.

    Raises:
        ValueError: if an image has more than `max_boxes` boxes.

    Example:
    >>> pad_boxes([np.array([[1, 2, 5, 6]])], [np.array([3])], max_boxes=2).tolist()
    [[[1.0, 2.0, 5.0, 6.0, 3.0], [-1.0, -1.0, -1.0, -1.0, -1.0]]]
    """
    max_boxes = check_positive_int(max_boxes, "max_boxes")
    padded = np.full((len(boxes), max_boxes, 5), PADDING, np.float32)
    for index, (image_boxes, image_classes) in enumerate(zip(boxes, classes, strict=True)):
        count = len(image_boxes)
        if count > max_boxes:
            raise ValueError(f"Image {index} has {count} boxes, more than `max_boxes`={max_boxes}.")
        padded[index, :count, :4] = np.asarray(image_boxes, np.float32).reshape(count, 4)
        padded[index, :count, 4] = image_classes
    return padded


def instance_masks(instance_ids, max_boxes):
    """Per-box 0/1 masks from an instance-id map: row `i` is `instance_ids == i + 1` (the
    numbering of `make_shapes`, whose box `i` is instance `i + 1`).

    Args:
        instance_ids: integer array `(N, H, W)`, 0 for background.
        max_boxes: int. Rows per image.

    Returns:
        uint8 array `(N, max_boxes, H, W)`.

    Example:
    >>> instance_masks(np.array([[[0, 2], [1, 2]]]), 3)[0, :, 1].tolist()
    [[1, 0], [0, 1], [0, 0]]
    """
    instance_ids = np.asarray(instance_ids)
    ids = np.arange(1, check_positive_int(max_boxes, "max_boxes") + 1)
    return (instance_ids[:, None] == ids[None, :, None, None]).astype(np.uint8)


def _shapes(train_count=600, test_count=150, image_size=64, seed=0, max_shapes=3, masks=False):
    if not isinstance(masks, bool):
        raise ValueError(f"`masks` must be True or False. Received: masks={masks!r}")
    splits, instances = [], []
    for count, split_seed in ((train_count, seed), (test_count, seed + TEST_SEED_OFFSET)):
        scenes = make_shapes(count, image_size=image_size, seed=split_seed, max_shapes=max_shapes)
        # make_shapes numbers its shapes from 1 (0 is its background class); boxes have none.
        classes = [image_classes - 1 for image_classes in scenes.box_classes]
        splits += [scenes.images, pad_boxes(scenes.boxes, classes, max_shapes)]
        instances.append(instance_masks(scenes.instance_ids, max_shapes) if masks else None)
    return (*splits, SHAPE_CLASSES, *instances)


# Registry name -> builder returning (x_train, boxes_train, x_test, boxes_test, class_names).
DETECTION_DATASETS = {"shapes": _shapes}


def load_detection_data(name, **kwargs):
    """Loads a registered object detection dataset by name.

    | name       | keyword arguments                                                   |
    |------------|---------------------------------------------------------------------|
    | `"shapes"` | `train_count=600`, `test_count=150`, `image_size=64`, `seed=0`,     |
    |            | `max_shapes=3`, `masks=False`; see `make_shapes`. Test scenes use     |
    |            | another seed.                                                        |

    `"shapes"` boxes are `make_shapes`'s tight boxes of each shape's visible pixels,
    with classes 0 circle, 1 square, 2 triangle, 3 star, padded to
    `max_boxes = max_shapes` rows per image. With `masks=True` the data also holds each
    box's instance mask (its visible pixels: `masks_train`, `masks_test`).

    Args:
        name: str. A key of `DETECTION_DATASETS`.
        **kwargs: keyword arguments of that dataset (table above).

    Returns:
        A `DetectionData`.

    Raises:
        ValueError: for an unknown name or keyword argument (listing the accepted ones),
            or an argument out of range (the message names it).

    Example:
    >>> data = load_detection_data("shapes", train_count=4, test_count=2, image_size=32)
    >>> data.x_train.shape, data.y_test.shape, data.class_names[0]
    ((4, 32, 32, 3), (2, 3, 5), 'circle')
    """
    return _load(DETECTION_DATASETS, "detection", DetectionData, name, kwargs)


def _check_boxes(boxes, images):
    boxes = np.asarray(boxes)
    if boxes.ndim != 3 or boxes.shape[2] != 5:
        raise ValueError(
            "`boxes` must have shape (N, max_boxes, 5): (x_min, y_min, x_max, y_max, class) "
            f"rows. Received: boxes.shape={boxes.shape}"
        )
    if len(boxes) != len(images):
        raise ValueError(
            "`images` and `boxes` must have the same length. Received: "
            f"len(images)={len(images)}, len(boxes)={len(boxes)}"
        )
    if not (np.issubdtype(boxes.dtype, np.floating) or np.issubdtype(boxes.dtype, np.integer)):
        raise ValueError(f"`boxes` must be numeric. Received: boxes.dtype={boxes.dtype}")
    classes = boxes[..., 4]
    if np.any(classes != np.round(classes)) or np.any(classes < PADDING):
        raise ValueError(
            "The class column of `boxes` must hold 0-based class indices, or -1 for padding "
            f"rows. Received values: {sorted(set(classes.ravel().tolist()))[:10]}"
        )
    valid = boxes[classes >= 0]
    height, width = images.shape[1:3]
    if len(valid) and (
        np.any(valid[:, 0] < 0)
        or np.any(valid[:, 1] < 0)
        or np.any(valid[:, 2] > width)
        or np.any(valid[:, 3] > height)
        or np.any(valid[:, 2] <= valid[:, 0])
        or np.any(valid[:, 3] <= valid[:, 1])
    ):
        raise ValueError(
            "Every box of `boxes` must satisfy 0 <= x_min < x_max <= width and "
            f"0 <= y_min < y_max <= height, with (height, width)={(height, width)} of `images`."
        )
    return boxes.astype(np.float32)


def flip_boxes(boxes, width):
    """Mirrors `(..., 5)` padded boxes left-right in an image `width` pixels wide.

    `x_min' = width - x_max`, `x_max' = width - x_min`; padding rows (class -1) are kept.
    """
    mirrored = tf.stack(
        [width - boxes[..., 2], boxes[..., 1], width - boxes[..., 0], boxes[..., 3], boxes[..., 4]],
        axis=-1,
    )
    return tf.where(boxes[..., 4:] >= 0, mirrored, boxes)


def scale_crop_boxes(boxes, scale_x, scale_y, left, top, width, height):
    """Moves `(B, max_boxes, 5)` padded boxes with an image zoomed by `(scale_x, scale_y)`
    and cropped to `(height, width)` at per-image `(left, top)` offsets.

    With resizing that maps pixel edges to pixel edges (TensorFlow's half-pixel centres),
    a coordinate x becomes `x * scale_x - left`. Boxes are clipped to the crop; a box that
    keeps less than `MIN_VISIBLE_FRACTION` of its zoomed area, or less than one pixel of
    width or height, becomes a padding row (all -1), as do padding rows.
    """
    scale = tf.stack([scale_x, scale_y, scale_x, scale_y])
    offset = tf.cast(tf.stack([left, top, left, top], axis=-1), tf.float32)[:, tf.newaxis]
    moved = boxes[..., :4] * scale - offset
    limit = tf.constant([width, height, width, height], tf.float32)
    clipped = tf.clip_by_value(moved, 0.0, limit)

    def area(corners):
        return (corners[..., 2] - corners[..., 0]) * (corners[..., 3] - corners[..., 1])

    keep = (
        (boxes[..., 4] >= 0)
        & (area(clipped) >= MIN_VISIBLE_FRACTION * area(moved))
        & (clipped[..., 2] - clipped[..., 0] >= 1.0)
        & (clipped[..., 3] - clipped[..., 1] >= 1.0)
    )
    rows = tf.concat([clipped, boxes[..., 4:]], axis=-1)
    return tf.where(keep[..., tf.newaxis], rows, PADDING)


def make_detection_dataset(
    images,
    boxes,
    batch_size=32,
    shuffle=False,
    seed=0,
    augment=None,
    drop_remainder=False,
    repeat=False,
):
    """Builds a batched `tf.data.Dataset` of `(images, boxes)` for object detection.

    Images come out float32 in `[0, 1]` (uint8 input is divided by 255), boxes
    float32 `(B, max_boxes, 5)` as given (see `DetectionData`). With
    `augment="flip"` each image is flipped left-right with probability 0.5 and its
    boxes are mirrored with it (`x_min' = W - x_max`, `x_max' = W - x_min`); padding
    rows stay as they are. `augment="flip_scale"` then zooms each batch in by a random
    factor in `[1, 1.25]` (bilinear) and crops every image back to size at its own random
    offset, moving and clipping the boxes with it (`scale_crop_boxes`: a box left with
    less than half its area becomes a padding row). Random draws come from stateless ops
    seeded by `tf.data.Dataset.random(seed)`, one seed per batch: the same `seed` gives
    the same batches, and every epoch draws new ones.

    Args:
        images: array `(N, H, W, C)`, uint8 or float in `[0, 1]`.
        boxes: array `(N, max_boxes, 5)` of `(x_min, y_min, x_max, y_max, class)` rows
            in pixels, class 0-based and -1 for padding rows.
        batch_size: int. Defaults to `32`.
        shuffle: bool. Shuffle (reshuffling each epoch, seeded). Defaults to `False`.
        seed: int. Seed of shuffling and flips. Defaults to `0`.
        augment: None, `"flip"`, `"flip_scale"`, or a callable mapping float32
            `(images, boxes)` batches to augmented `(images, boxes)`. Defaults to `None`.
        drop_remainder: bool. Drop the last incomplete batch. Defaults to `False`.
        repeat: bool. Repeat forever. Defaults to `False`.

    Returns:
        A `tf.data.Dataset` of `(images, boxes)` batches.

    Raises:
        ValueError: if `images` is not 4-D uint8/float in range, `boxes` has the wrong
            shape, a class that is not an integer >= -1, or a box outside its image,
            the lengths differ, `batch_size` is not a positive int, or `augment` is not
            allowed. The message names the argument.

    Example:
    >>> data = load_detection_data("shapes", train_count=8, test_count=1, image_size=32)
    >>> dataset = make_detection_dataset(data.x_train, data.y_train, batch_size=4, augment="flip")
    >>> images, boxes = next(iter(dataset))
    >>> images.shape, boxes.shape
    (TensorShape([4, 32, 32, 3]), TensorShape([4, 3, 5]))
    """
    images = _check_images(images)
    boxes = _check_boxes(boxes, images)
    batch_size = check_positive_int(batch_size, "batch_size")
    _check_augment(augment, DETECTION_AUGMENTATIONS)
    width = float(images.shape[2])

    batch_augment = None
    if augment in ("flip", "flip_scale"):

        def batch_augment(batch, seed_pair):
            batch_images, batch_boxes = batch
            flips = tf.random.stateless_uniform([tf.shape(batch_images)[0]], seed_pair) < 0.5
            batch_images = tf.where(
                flips[:, tf.newaxis, tf.newaxis, tf.newaxis],
                tf.reverse(batch_images, [2]),
                batch_images,
            )
            batch_boxes = tf.where(
                flips[:, tf.newaxis, tf.newaxis], flip_boxes(batch_boxes, width), batch_boxes
            )
            if augment == "flip_scale":
                size = batch_images.shape[1:3]
                new_height, new_width, top, left = scale_crop_window(
                    tf.shape(batch_images)[0],
                    *size,
                    tf.random.experimental.stateless_fold_in(seed_pair, 1),
                )
                # To [0, 1] first: resizing makes uint8 float, which batch_map would not scale.
                zoomed = tf.image.resize(
                    _to_unit_float(batch_images), [new_height, new_width], "bilinear"
                )
                batch_images = crop_window(zoomed, *size, top, left)
                batch_boxes = scale_crop_boxes(
                    batch_boxes,
                    tf.cast(new_width, tf.float32) / size[1],
                    tf.cast(new_height, tf.float32) / size[0],
                    left,
                    top,
                    size[1],
                    size[0],
                )
            return batch_images, batch_boxes

    def batch_map(batch_images, batch_boxes):
        batch_images = _to_unit_float(batch_images)
        if callable(augment):
            batch_images, batch_boxes = augment(batch_images, batch_boxes)
        return batch_images, batch_boxes

    return _build(
        (images, boxes),
        len(images),
        batch_size,
        shuffle,
        seed,
        batch_augment,
        batch_map,
        drop_remainder,
        repeat,
    )
