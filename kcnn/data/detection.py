"""Object detection data: images with boxes padded to a fixed count (and, for instance
segmentation, a mask per box), and their tf.data pipeline."""

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


def _check_box_array(boxes):
    """The checks of `boxes` that need no image: shape, dtype and class column."""
    boxes = np.asarray(boxes)
    if boxes.ndim != 3 or boxes.shape[2] != 5:
        raise ValueError(
            "`boxes` must have shape (N, max_boxes, 5): (x_min, y_min, x_max, y_max, class) "
            f"rows. Received: boxes.shape={boxes.shape}"
        )
    if not (np.issubdtype(boxes.dtype, np.floating) or np.issubdtype(boxes.dtype, np.integer)):
        raise ValueError(f"`boxes` must be numeric. Received: boxes.dtype={boxes.dtype}")
    classes = boxes[..., 4]
    if np.any(classes != np.round(classes)) or np.any(classes < PADDING):
        raise ValueError(
            "The class column of `boxes` must hold 0-based class indices, or -1 for padding "
            f"rows. Received values: {sorted(set(classes.ravel().tolist()))[:10]}"
        )
    return boxes


def _check_box_extents(boxes, height, width, source):
    valid = boxes[boxes[..., 4] >= 0]
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
            f"0 <= y_min < y_max <= height, with (height, width)={(height, width)} of `{source}`."
        )


def _check_boxes(boxes, images):
    boxes = _check_box_array(boxes)
    if len(boxes) != len(images):
        raise ValueError(
            "`images` and `boxes` must have the same length. Received: "
            f"len(images)={len(images)}, len(boxes)={len(boxes)}"
        )
    _check_box_extents(boxes, *images.shape[1:3], "images")
    return boxes.astype(np.float32)


def _check_masks(masks, boxes, image_size=None):
    """Checks per-box 0/1 masks against checked `boxes` (and the `(H, W)` of the images, when
    given) and returns them as uint8."""
    masks = np.asarray(masks)
    if (
        masks.ndim != 4
        or masks.shape[:2] != boxes.shape[:2]
        or (image_size is not None and masks.shape[2:] != tuple(image_size))
    ):
        expected = f"(N, max_boxes)={boxes.shape[:2]} of `boxes`"
        if image_size is not None:
            expected += f" and (H, W)={tuple(image_size)} of `images`"
        raise ValueError(
            "`masks` must have shape (N, max_boxes, H, W), one mask per box row, with "
            f"{expected}. Received: masks.shape={masks.shape}"
        )
    if masks.dtype != bool and not np.issubdtype(masks.dtype, np.integer):
        raise ValueError(
            f"`masks` must be bool or integer 0/1 masks. Received: masks.dtype={masks.dtype}"
        )
    invalid = (masks < 0) | (masks > 1)
    if np.any(invalid):
        raise ValueError(
            "`masks` must hold only 0 and 1. Received values: "
            f"{np.unique(masks[invalid])[:10].tolist()}"
        )
    # A padding row has no object, so it has no pixels; every augmentation keeps it so.
    stray = np.argwhere((boxes[..., 4] < 0) & masks.any(axis=(2, 3)))
    if len(stray):
        image, row = stray[0].tolist()
        raise ValueError(
            "`masks` must be all 0 on the padding rows of `boxes` (class -1). Received: a "
            f"nonzero mask at image {image}, row {row}"
        )
    return masks.astype(np.uint8, copy=False)


def instance_targets(boxes, masks):
    """Packs the boxes and instance masks of each image into one record of a structured array.

    A Mask R-CNN needs two targets per image. Held as the fields of one NumPy structured
    array, they stay together under every ordinary index operation: `targets[keep]`,
    `targets[:256]`, `len(targets)`, and `split_validation` splits them like any per-image
    targets. Read them back with `targets["boxes"]` and `targets["masks"]`.

    Args:
        boxes: array `(N, max_boxes, 5)` of `(x_min, y_min, x_max, y_max, class)` rows in
            pixels, class 0-based and -1 for padding rows (see `DetectionData`).
        masks: bool or integer 0/1 array `(N, max_boxes, H, W)`: row `i` of an image is the
            instance mask of its box row `i`, all 0 for padding rows.

    Returns:
        A structured array `(N,)` with fields `"boxes"`: float32 `(max_boxes, 5)` and
        `"masks"`: uint8 `(max_boxes, H, W)`.

    Raises:
        ValueError: if `boxes` is not numeric `(N, max_boxes, 5)` with integer classes >= -1,
            a box lies outside the `(H, W)` of `masks`, or `masks` is not `(N, max_boxes, H, W)`
            of 0 and 1 with all-0 padding rows. The message names the argument.

    Example:
    >>> boxes = np.array([[[0, 0, 2, 1, 3], [-1, -1, -1, -1, -1]]] * 2)
    >>> masks = np.zeros((2, 2, 2, 3), bool)
    >>> masks[:, 0, 0, :2] = True
    >>> targets = instance_targets(boxes, masks)
    >>> len(targets), targets[[1]]["boxes"].shape, targets[:1]["masks"].dtype
    (2, (1, 2, 5), dtype('uint8'))
    >>> targets["masks"][0, 0].tolist()
    [[1, 1, 0], [0, 0, 0]]
    """
    boxes = _check_box_array(boxes)
    masks = _check_masks(masks, boxes)
    _check_box_extents(boxes, *masks.shape[2:], "masks")
    max_boxes, height, width = masks.shape[1:]
    targets = np.empty(
        len(boxes),
        dtype=[
            ("boxes", np.float32, (max_boxes, 5)),
            ("masks", np.uint8, (max_boxes, height, width)),
        ],
    )
    targets["boxes"] = boxes
    targets["masks"] = masks
    return targets


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


def scale_crop_masks(masks, new_height, new_width, top, left):
    """Moves `(B, max_boxes, H, W)` 0/1 masks with an image zoomed to `(new_height, new_width)`
    and cropped back to `(H, W)` at per-image `(top, left)` offsets (`scale_crop_window`).

    The masks are resized nearest-neighbour, as Detectron2's `apply_segmentation` does. On a
    zoom-in every source pixel covers at least one output pixel, so no part of a mask is lost
    and, as for `scale_crop_boxes`, an edge at pixel edge x lands within half a pixel of
    `x * scale - left`. Bilinear resizing thresholded at 0.5 erodes thin parts instead
    (star points, triangle tips): on 300 32x32 "shapes" scenes zoomed 8 times, 23 of 3,710
    uncut boxes lost up to 4.6 pixels of their mask's extent that way, none with nearest.
    Returns uint8 masks `(B, max_boxes, H, W)`.
    """
    height, width = masks.shape[2:4]
    # tf.image.resize and crop_window work on (B, H, W, C): the box rows become channels.
    channels = tf.transpose(tf.cast(masks, tf.uint8), [0, 2, 3, 1])
    zoomed = tf.image.resize(channels, [new_height, new_width], "nearest")
    cropped = crop_window(zoomed, height, width, top, left)
    return tf.transpose(cropped, [0, 3, 1, 2])


def _targets(boxes, masks):
    """The second element of a batch: boxes alone, or with their masks."""
    return boxes if masks is None else {"boxes": boxes, "masks": masks}


def make_detection_dataset(
    images,
    boxes,
    batch_size=32,
    shuffle=False,
    seed=0,
    augment=None,
    drop_remainder=False,
    repeat=False,
    masks=None,
):
    """Builds a batched `tf.data.Dataset` of `(images, boxes)` for object detection, or of
    `(images, {"boxes": boxes, "masks": masks})` for instance segmentation.

    Images come out float32 in `[0, 1]` (uint8 input is divided by 255), boxes
    float32 `(B, max_boxes, 5)` as given (see `DetectionData`), masks (if given) uint8
    `(B, max_boxes, H, W)`. With `augment="flip"` each image is flipped left-right with
    probability 0.5 and its boxes are mirrored with it (`x_min' = W - x_max`,
    `x_max' = W - x_min`; padding rows stay as they are), its masks flipped with it.
    `augment="flip_scale"` then zooms each batch in by a random factor in `[1, 1.25]`
    (bilinear) and crops every image back to size at its own random offset, moving and
    clipping the boxes with it (`scale_crop_boxes`: a box left with less than half its area
    becomes a padding row) and the masks through the same window (`scale_crop_masks`:
    nearest-neighbour); a row that became padding gets an all-0 mask. A clipped box bounds
    what is left of its mask, which may be narrower (the cut-off part of a shape may have
    been its widest). Random draws come from stateless ops seeded by
    `tf.data.Dataset.random(seed)`, one seed per batch: the same `seed` gives the same
    batches, and every epoch draws new ones. Masks take no draws of their own, so a `seed`
    gives the same images and boxes with or without them.

    Args:
        images: array `(N, H, W, C)`, uint8 or float in `[0, 1]`.
        boxes: array `(N, max_boxes, 5)` of `(x_min, y_min, x_max, y_max, class)` rows
            in pixels, class 0-based and -1 for padding rows.
        batch_size: int. Defaults to `32`.
        shuffle: bool. Shuffle (reshuffling each epoch, seeded). Defaults to `False`.
        seed: int. Seed of shuffling and flips. Defaults to `0`.
        augment: None, `"flip"`, `"flip_scale"`, or a callable. Without `masks` the
            callable maps float32 `(images, boxes)` batches to augmented `(images, boxes)`;
            with `masks` it is called as `augment(images, boxes, masks)` (masks uint8) and
            must return `(images, boxes, masks)`, masks of 0 and 1 (cast to uint8).
            Defaults to `None`.
        drop_remainder: bool. Drop the last incomplete batch. Defaults to `False`.
        repeat: bool. Repeat forever. Defaults to `False`.
        masks: None, or a bool or integer 0/1 array `(N, max_boxes, H, W)`: row `i` of an
            image is the instance mask of its box row `i`, all 0 for padding rows (as
            `load_detection_data(..., masks=True)` gives them). Defaults to `None`.

    Returns:
        A `tf.data.Dataset` of `(images, boxes)` batches, or with `masks` of
        `(images, {"boxes": boxes, "masks": masks})` batches.

    Raises:
        ValueError: if `images` is not 4-D uint8/float in range, `boxes` has the wrong
            shape, a class that is not an integer >= -1, or a box outside its image,
            the lengths differ, `masks` is not `(N, max_boxes, H, W)` of 0 and 1 (with
            all-0 padding rows), `batch_size` is not a positive int, `augment` is not
            allowed, or a callable `augment` given masks does not return three values.
            The message names the argument.

    Example:
    >>> data = load_detection_data("shapes", train_count=8, test_count=1, image_size=32)
    >>> dataset = make_detection_dataset(data.x_train, data.y_train, batch_size=4, augment="flip")
    >>> images, boxes = next(iter(dataset))
    >>> images.shape, boxes.shape
    (TensorShape([4, 32, 32, 3]), TensorShape([4, 3, 5]))
    >>> data = load_detection_data(
    ...     "shapes", train_count=8, test_count=1, image_size=32, masks=True
    ... )
    >>> dataset = make_detection_dataset(
    ...     data.x_train, data.y_train, batch_size=4, augment="flip_scale", masks=data.masks_train
    ... )
    >>> images, targets = next(iter(dataset))
    >>> targets["boxes"].shape, targets["masks"].shape, targets["masks"].dtype.name
    (TensorShape([4, 3, 5]), TensorShape([4, 3, 32, 32]), 'uint8')
    """
    images = _check_images(images)
    boxes = _check_boxes(boxes, images)
    if masks is not None:
        masks = _check_masks(masks, boxes, images.shape[1:3])
    batch_size = check_positive_int(batch_size, "batch_size")
    _check_augment(augment, DETECTION_AUGMENTATIONS)
    width = float(images.shape[2])

    batch_augment = None
    if augment in ("flip", "flip_scale"):

        def batch_augment(batch, seed_pair):
            batch_images, targets = batch
            batch_boxes = targets if masks is None else targets["boxes"]
            batch_masks = None if masks is None else targets["masks"]
            flips = tf.random.stateless_uniform([tf.shape(batch_images)[0]], seed_pair) < 0.5
            flip_images = flips[:, tf.newaxis, tf.newaxis, tf.newaxis]
            batch_images = tf.where(flip_images, tf.reverse(batch_images, [2]), batch_images)
            batch_boxes = tf.where(
                flips[:, tf.newaxis, tf.newaxis], flip_boxes(batch_boxes, width), batch_boxes
            )
            if batch_masks is not None:
                # (B, max_boxes, H, W): the width axis is 3, and flip_images broadcasts alike.
                batch_masks = tf.where(flip_images, tf.reverse(batch_masks, [3]), batch_masks)
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
                if batch_masks is not None:
                    batch_masks = scale_crop_masks(batch_masks, new_height, new_width, top, left)
                    kept = batch_boxes[..., 4, tf.newaxis, tf.newaxis] >= 0
                    batch_masks = tf.where(kept, batch_masks, tf.zeros_like(batch_masks))
            return batch_images, _targets(batch_boxes, batch_masks)

    def batch_map(batch_images, targets):
        batch_images = _to_unit_float(batch_images)
        if callable(augment) and masks is None:
            batch_images, targets = augment(batch_images, targets)
        elif callable(augment):
            augmented = augment(batch_images, targets["boxes"], targets["masks"])
            count = len(augmented) if isinstance(augmented, tuple | list) else 1
            if count != 3:
                raise ValueError(
                    "A callable `augment` given `masks` must return (images, boxes, masks). "
                    f"Received: {count} value(s)"
                )
            batch_images, batch_boxes, batch_masks = augmented
            targets = _targets(batch_boxes, tf.cast(batch_masks, tf.uint8))
        return batch_images, targets

    return _build(
        (images, _targets(boxes, masks)),
        len(images),
        batch_size,
        shuffle,
        seed,
        batch_augment,
        batch_map,
        drop_remainder,
        repeat,
    )
