import re

import numpy as np
import pytest
import tensorflow as tf

from kcnn.data.detection import (
    flip_boxes,
    instance_targets,
    load_detection_data,
    make_detection_dataset,
    pad_boxes,
)
from kcnn.data.shapes import SHAPE_CLASSES, make_shapes


def boxes_from_pixels(instance_ids, masks):
    """Tight (x_min, y_min, x_max, y_max, class) of every instance, from its pixels alone."""
    rows = []
    for instance in range(1, instance_ids.max() + 1):
        ys, xs = np.nonzero(instance_ids == instance)
        # make_shapes masks number shapes from 1 (0 is background); detection classes from 0.
        rows.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1, masks[ys[0], xs[0]] - 1])
    return np.array(rows, np.float32).reshape(-1, 5)


def collect(dataset):
    images, boxes = zip(*dataset.as_numpy_iterator(), strict=True)
    return np.concatenate(images), np.concatenate(boxes)


@pytest.fixture(scope="module")
def shapes():
    return load_detection_data("shapes", train_count=12, test_count=6, image_size=32, seed=4)


def test_shapes_boxes_are_padded_tight_boxes_of_each_instance(shapes):
    assert shapes.x_train.shape == (12, 32, 32, 3) and shapes.x_train.dtype == np.uint8
    assert shapes.y_train.shape == (12, 3, 5) and shapes.y_train.dtype == np.float32
    assert shapes.class_names == SHAPE_CLASSES == ("circle", "square", "triangle", "star")
    assert shapes.num_classes == 4 and shapes.max_boxes == 3

    scenes = make_shapes(12, image_size=32, seed=4)
    np.testing.assert_array_equal(shapes.x_train, scenes.images)
    counts = []
    for index, padded in enumerate(shapes.y_train):
        expected = boxes_from_pixels(scenes.instance_ids[index], scenes.masks[index])
        counts.append(len(expected))
        np.testing.assert_array_equal(padded[: len(expected)], expected)
        np.testing.assert_array_equal(padded[len(expected) :], -1.0)
    assert min(counts) < 3 and max(counts) > 1  # there are padding rows and several boxes


def test_test_scenes_use_another_seed(shapes):
    assert shapes.x_test.shape == (6, 32, 32, 3)
    train_again = make_shapes(6, image_size=32, seed=4).images
    assert not any(np.array_equal(test, train) for test in shapes.x_test for train in train_again)
    other = load_detection_data("shapes", train_count=1, test_count=6, image_size=32, seed=4)
    np.testing.assert_array_equal(other.y_test, shapes.y_test)


def test_dataset_scales_images_and_keeps_boxes(shapes):
    images, boxes = collect(make_detection_dataset(shapes.x_train, shapes.y_train, batch_size=5))
    assert images.dtype == np.float32 and boxes.dtype == np.float32
    np.testing.assert_allclose(images, shapes.x_train / 255.0, atol=1e-7)
    np.testing.assert_array_equal(boxes, shapes.y_train)


def test_flip_mirrors_boxes_with_the_image():
    scenes = make_shapes(16, image_size=(24, 40), seed=1, max_shapes=4)
    classes = [image_classes - 1 for image_classes in scenes.box_classes]
    padded = pad_boxes(scenes.boxes, classes, 4)
    dataset = make_detection_dataset(scenes.images, padded, batch_size=8, augment="flip", seed=3)

    images, boxes = collect(dataset)
    flipped = []
    for index in range(16):
        image = np.round(images[index] * 255).astype(np.uint8)
        was_flipped = not np.array_equal(image, scenes.images[index])
        flipped.append(was_flipped)
        ids, masks = scenes.instance_ids[index], scenes.masks[index]
        if was_flipped:
            np.testing.assert_array_equal(image, scenes.images[index][:, ::-1])
            ids, masks = ids[:, ::-1], masks[:, ::-1]
        # Boxes still hug the (possibly flipped) pixels of their instance; padding rows stay -1.
        expected = boxes_from_pixels(ids, masks)
        np.testing.assert_array_equal(boxes[index, : len(expected)], expected)
        np.testing.assert_array_equal(boxes[index, len(expected) :], -1.0)
        if was_flipped:
            original = padded[index, : len(expected)]
            np.testing.assert_array_equal(boxes[index, : len(expected), 0], 40 - original[:, 2])
            np.testing.assert_array_equal(boxes[index, : len(expected), 2], 40 - original[:, 0])
    assert 0 < sum(flipped) < 16

    _, again = collect(dataset)
    _, same_seed = collect(
        make_detection_dataset(scenes.images, padded, batch_size=8, augment="flip", seed=3)
    )
    assert not np.array_equal(again, boxes)  # a new epoch draws new flips
    np.testing.assert_array_equal(same_seed, boxes)


def test_flip_scale_moves_boxes_with_the_zoomed_pixels():
    # Rectangles of known boxes, one per channel; after a zoom, crop (and maybe flip) each
    # kept box must hug the pixels of its rectangle, read back from the augmented image.
    size, count = 48, 24
    boxes = np.array([[8, 10, 20, 30, 0], [36, 2, 48, 14, 1], [-1] * 5], np.float32)
    images = np.zeros((count, size, size, 3), np.uint8)
    for channel, (x0, y0, x1, y1, _) in enumerate(boxes[:2].astype(int)):
        images[:, y0:y1, x0:x1, channel] = 255
    padded = np.repeat(boxes[np.newaxis], count, axis=0)
    dataset = make_detection_dataset(images, padded, batch_size=4, augment="flip_scale", seed=5)
    augmented, moved = collect(dataset)
    assert augmented.dtype == np.float32 and 0 <= augmented.min() and augmented.max() <= 1
    zoomed = dropped = 0
    for index in range(count):
        np.testing.assert_array_equal(moved[index, 2], -1.0)
        for row in range(2):
            # Rows keep their slot: the channel of a kept row is its class.
            inside = augmented[index, ..., row] > 0.5
            if moved[index, row, 4] < 0:
                np.testing.assert_array_equal(moved[index, row], -1.0)
                dropped += 1
                continue
            assert moved[index, row, 4] == row
            ys, xs = np.nonzero(inside)
            extent = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            np.testing.assert_allclose(moved[index, row, :4], extent, atol=1.0)
            height = moved[index, row, 3] - moved[index, row, 1]
            zoomed += row == 0 and height > 20.2  # rectangle 0 is 20 high; never cut in y
    assert zoomed > 0  # some batches were zoomed in
    assert dropped < count  # the corner rectangle is cut, but not always dropped


def test_scale_crop_boxes_drops_boxes_mostly_cut_off():
    from kcnn.data.detection import scale_crop_boxes

    boxes = np.array([[[0, 0, 10, 10, 2], [30, 30, 40, 40, 1], [-1, -1, -1, -1, -1]]], np.float32)
    # Zoom x1.25, crop at (left, top) = (8, 0): box 0 becomes (-8, 0, 4.5, 12.5), clipped to
    # (0, 0, 4.5, 12.5), 36% of its zoomed area -> dropped; box 1 becomes (29.5, 37.5, 42, 50),
    # clipped to the 40-pixel image (29.5, 37.5, 40, 40), 16.8% -> dropped.
    out = scale_crop_boxes(boxes, 1.25, 1.25, np.array([8]), np.array([0]), 40, 40).numpy()
    np.testing.assert_array_equal(out, -1.0)
    out = scale_crop_boxes(boxes, 1.25, 1.25, np.array([0]), np.array([0]), 40, 40).numpy()
    np.testing.assert_allclose(out[0, 0], [0, 0, 12.5, 12.5, 2])
    np.testing.assert_array_equal(out[0, 1:], -1.0)  # (37.5, 37.5, 40, 40): 4% left


def test_shuffle_keeps_images_and_boxes_together(shapes):
    dataset = make_detection_dataset(
        shapes.x_train, shapes.y_train, batch_size=4, shuffle=True, seed=2
    )
    images, boxes = collect(dataset)
    order = [
        next(i for i, image in enumerate(shapes.x_train) if np.allclose(image / 255.0, shuffled))
        for shuffled in images
    ]
    assert sorted(order) == list(range(12)) and order != list(range(12))
    np.testing.assert_array_equal(boxes, shapes.y_train[order])


def test_bad_arguments_name_the_argument(shapes):
    images, boxes = shapes.x_train, shapes.y_train
    with pytest.raises(ValueError, match=r"`boxes` must have shape \(N, max_boxes, 5\)"):
        make_detection_dataset(images, boxes[..., :4])
    with pytest.raises(ValueError, match=r"len\(images\)=12, len\(boxes\)=11"):
        make_detection_dataset(images, boxes[:11])
    fractional = boxes.copy()
    fractional[0, 0, 4] = 1.5
    with pytest.raises(ValueError, match="class column of `boxes` must hold 0-based"):
        make_detection_dataset(images, fractional)
    outside = boxes.copy()
    outside[0, 0, 2] = 33
    with pytest.raises(ValueError, match=r"0 <= x_min < x_max <= width.*\(32, 32\)"):
        make_detection_dataset(images, outside)
    with pytest.raises(ValueError, match="`augment` must be None, a callable, or one of"):
        make_detection_dataset(images, boxes, augment="flip_translate")
    with pytest.raises(ValueError, match="`batch_size` must be a positive int"):
        make_detection_dataset(images, boxes, batch_size=0)
    with pytest.raises(ValueError, match=r"Unknown detection dataset `name`='coco'"):
        load_detection_data("coco")
    with pytest.raises(ValueError, match=r"does not accept keyword argument\(s\) \['count'\]"):
        load_detection_data("shapes", count=3)
    with pytest.raises(ValueError, match="Image 0 has 2 boxes, more than `max_boxes`=1"):
        pad_boxes([np.zeros((2, 4))], [np.zeros(2)], max_boxes=1)


@pytest.fixture(scope="module")
def instances():
    return load_detection_data(
        "shapes", train_count=12, test_count=1, image_size=32, seed=4, masks=True
    )


def collect_targets(dataset):
    images, targets = zip(*dataset.as_numpy_iterator(), strict=True)
    boxes = np.concatenate([batch["boxes"] for batch in targets])
    masks = np.concatenate([batch["masks"] for batch in targets])
    return np.concatenate(images), boxes, masks


def mask_extent(mask):
    """(x_min, y_min, x_max, y_max) of a mask's nonzero pixels: x_max is the last column + 1."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def check_boxes_hug_masks(boxes, masks, atol, cropped=False):
    """Every kept box is its non-empty mask's extent (within `atol` pixels), every padding
    row has an all-0 mask. Returns the number of kept rows whose mask is empty.

    With `cropped`, a box touching the image border may have been clipped by the crop: it
    only bounds its mask, since the cut-off part of a shape may have been its widest.
    """
    height, width = masks.shape[-2:]
    empty = 0
    for image_boxes, image_masks in zip(boxes, masks, strict=True):
        for box, mask in zip(image_boxes, image_masks, strict=True):
            if box[4] < 0:
                np.testing.assert_array_equal(box, -1.0)
                assert not mask.any()
            elif not mask.any():
                empty += 1
            elif cropped and (box[0] == 0 or box[1] == 0 or box[2] == width or box[3] == height):
                extent = mask_extent(mask)
                assert np.all(extent[:2] >= box[:2] - atol)
                assert np.all(extent[2:] <= box[2:4] + atol)
            else:
                np.testing.assert_allclose(box[:4], mask_extent(mask), atol=atol)
    return empty


def test_shapes_boxes_are_the_extents_of_their_masks(instances):
    # The premise of the augmentation tests below: in "shapes" a box is its mask's extent.
    assert instances.masks_train.shape == (12, 3, 32, 32)
    assert instances.masks_train.dtype == np.uint8
    assert set(np.unique(instances.masks_train).tolist()) == {0, 1}
    assert check_boxes_hug_masks(instances.y_train, instances.masks_train, atol=0) == 0
    assert np.any(instances.y_train[..., 4] < 0)  # there are padding rows


def test_masks_come_out_uint8_as_given(instances):
    dataset = make_detection_dataset(
        instances.x_train, instances.y_train, batch_size=5, masks=instances.masks_train
    )
    images, boxes, masks = collect_targets(dataset)
    assert masks.dtype == np.uint8 and masks.shape == (12, 3, 32, 32)
    np.testing.assert_allclose(images, instances.x_train / 255.0, atol=1e-7)
    np.testing.assert_array_equal(boxes, instances.y_train)
    np.testing.assert_array_equal(masks, instances.masks_train)
    # bool and wider integer masks are taken too, and come out uint8.
    for given in (instances.masks_train.astype(bool), instances.masks_train.astype(np.int64)):
        dataset = make_detection_dataset(
            instances.x_train, instances.y_train, batch_size=5, masks=given
        )
        _, _, masks = collect_targets(dataset)
        assert masks.dtype == np.uint8
        np.testing.assert_array_equal(masks, instances.masks_train)


def test_flip_flips_masks_with_their_image(instances):
    dataset = make_detection_dataset(
        instances.x_train,
        instances.y_train,
        batch_size=4,
        augment="flip",
        seed=3,
        masks=instances.masks_train,
    )
    images, boxes, masks = collect_targets(dataset)
    flipped = 0
    for index in range(12):
        image = np.round(images[index] * 255).astype(np.uint8)
        original, mirrored = instances.x_train[index], np.flip(instances.x_train[index], axis=1)
        was_flipped = np.array_equal(image, mirrored)
        assert was_flipped != np.array_equal(image, original)  # exactly one of the two
        expected = instances.masks_train[index]
        np.testing.assert_array_equal(
            masks[index], np.flip(expected, axis=-1) if was_flipped else expected
        )
        flipped += was_flipped
    assert 0 < flipped < 12
    # A flip moves pixel edges to pixel edges: flipped boxes are exactly the flipped extents.
    assert check_boxes_hug_masks(boxes, masks, atol=0) == 0


def test_flip_scale_zooms_and_crops_masks_with_their_boxes(instances):
    dataset = make_detection_dataset(
        instances.x_train,
        instances.y_train,
        batch_size=4,
        augment="flip_scale",
        seed=5,
        masks=instances.masks_train,
    )
    zoomed = empty = 0
    for _ in range(3):  # every epoch draws new zooms and crops
        _, boxes, masks = collect_targets(dataset)
        assert masks.dtype == np.uint8 and set(np.unique(masks).tolist()) <= {0, 1}
        empty += check_boxes_hug_masks(boxes, masks, atol=1.0, cropped=True)
        zoomed += np.sum(masks.sum(axis=(2, 3)) > instances.masks_train.sum(axis=(2, 3)))
    assert zoomed > 0  # masks were zoomed in, not only flipped
    assert empty == 0


def test_flip_scale_masks_follow_the_pixels_and_clear_with_dropped_boxes():
    # Two rectangles, each painted in its own channel and given as its own mask: after a
    # flip, zoom and crop, each mask must cover what its channel shows, and the rectangle on
    # the right edge is often cut to a padding row, whose mask must then be all 0.
    size, count = 32, 16
    boxes = np.array([[4, 8, 14, 24, 0], [29, 13, 32, 18, 1], [-1] * 5], np.float32)
    images = np.zeros((count, size, size, 3), np.uint8)
    masks = np.zeros((count, 3, size, size), np.uint8)
    for row, (x0, y0, x1, y1, _) in enumerate(boxes[:2].astype(int)):
        images[:, y0:y1, x0:x1, row] = 255
        masks[:, row, y0:y1, x0:x1] = 1
    padded = np.repeat(boxes[np.newaxis], count, axis=0)
    dataset = make_detection_dataset(
        images, padded, batch_size=4, augment="flip_scale", seed=5, masks=masks
    )
    augmented, moved, moved_masks = collect_targets(dataset)
    assert check_boxes_hug_masks(moved, moved_masks, atol=1.0, cropped=True) == 0
    dropped = flipped = 0
    for index in range(count):
        for row in range(2):
            if moved[index, row, 4] < 0:
                dropped += 1
                assert not moved_masks[index, row].any()
                continue
            shown = augmented[index, ..., row] > 0.5
            np.testing.assert_allclose(
                mask_extent(moved_masks[index, row]), mask_extent(shown), atol=1.0
            )
            flipped += row == 0 and moved[index, row, 0] > size / 2
    assert 0 < dropped < count
    assert 0 < flipped < count


@pytest.mark.parametrize("augment", [None, "flip", "flip_scale"])
def test_masks_leave_images_and_boxes_of_a_seed_unchanged(instances, augment):
    def batches(masks):
        return make_detection_dataset(
            instances.x_train,
            instances.y_train,
            batch_size=5,
            shuffle=True,
            seed=7,
            augment=augment,
            masks=masks,
        )

    images, boxes = collect(batches(None))
    with_masks = collect_targets(batches(instances.masks_train))
    np.testing.assert_array_equal(with_masks[0], images)
    np.testing.assert_array_equal(with_masks[1], boxes)
    if augment is not None:
        assert not np.array_equal(boxes, instances.y_train)  # the draw changed something


def test_callable_augment_takes_and_returns_masks(instances):
    def mirror(images, boxes, masks):
        assert masks.dtype == tf.uint8
        return tf.reverse(images, [2]), flip_boxes(boxes, 32.0), tf.reverse(masks, [3]) > 0

    dataset = make_detection_dataset(
        instances.x_train,
        instances.y_train,
        batch_size=5,
        augment=mirror,
        masks=instances.masks_train,
    )
    images, boxes, masks = collect_targets(dataset)
    np.testing.assert_allclose(images, instances.x_train[:, :, ::-1] / 255.0, atol=1e-7)
    assert masks.dtype == np.uint8
    np.testing.assert_array_equal(masks, instances.masks_train[..., ::-1])
    expected = instances.y_train.copy()
    rows = expected[..., 4] >= 0
    expected[rows, 0], expected[rows, 2] = (
        32 - instances.y_train[rows, 2],
        32 - instances.y_train[rows, 0],
    )
    np.testing.assert_array_equal(boxes, expected)

    # Without masks a callable keeps its two-argument form.
    images, boxes = collect(
        make_detection_dataset(
            instances.x_train, instances.y_train, batch_size=5, augment=lambda x, y: (1 - x, y)
        )
    )
    np.testing.assert_allclose(images, 1 - instances.x_train / 255.0, atol=1e-6)
    with pytest.raises(ValueError, match=r"`augment` given `masks` must return.*Received: 2 value"):
        make_detection_dataset(
            instances.x_train,
            instances.y_train,
            augment=lambda images, boxes, masks: (images, boxes),
            masks=instances.masks_train,
        )


def test_bad_masks_are_named(instances):
    images, boxes, masks = instances.x_train, instances.y_train, instances.masks_train
    shape = (
        r"`masks` must have shape \(N, max_boxes, H, W\).*\(12, 3\) of `boxes` and "
        r"\(H, W\)=\(32, 32\)"
    )
    for wrong in (masks[..., :31], masks[:11], masks[:, :2], masks[:, 0]):
        received = re.escape(f"Received: masks.shape={wrong.shape}")
        with pytest.raises(ValueError, match=f"{shape}.*{received}"):
            make_detection_dataset(images, boxes, masks=wrong)
    twos = masks.copy()
    twos[0, 0, 0, 0] = 2
    with pytest.raises(ValueError, match=r"`masks` must hold only 0 and 1. Received values: \[2\]"):
        make_detection_dataset(images, boxes, masks=twos)
    with pytest.raises(ValueError, match=r"`masks` must be bool or integer.*float32"):
        make_detection_dataset(images, boxes, masks=masks.astype(np.float32))
    image, row = np.argwhere(boxes[..., 4] < 0)[0]
    stray = masks.copy()
    stray[image, row, 5, 5] = 1
    with pytest.raises(
        ValueError, match=f"`masks` must be all 0 on the padding rows.*image {image}, row {row}"
    ):
        make_detection_dataset(images, boxes, masks=stray)


def test_instance_targets_keep_boxes_and_masks_together(instances):
    boxes, masks = instances.y_train, instances.masks_train
    targets = instance_targets(boxes.astype(np.int64), masks.astype(bool))
    assert targets.shape == (12,) and len(targets) == 12
    assert targets.dtype["boxes"] == np.dtype((np.float32, (3, 5)))
    assert targets.dtype["masks"] == np.dtype((np.uint8, (3, 32, 32)))
    for index in ([7, 0, 3], slice(2, 9, 3), boxes[:, 0, 4] == 1, np.s_[:5]):
        np.testing.assert_array_equal(targets[index]["boxes"], boxes[index])
        np.testing.assert_array_equal(targets[index]["masks"], masks[index])
    np.testing.assert_array_equal(targets[4]["masks"], masks[4])


def test_instance_targets_check_their_arguments(instances):
    boxes, masks = instances.y_train, instances.masks_train
    with pytest.raises(ValueError, match=r"`boxes` must have shape \(N, max_boxes, 5\)"):
        instance_targets(boxes[..., :4], masks)
    with pytest.raises(ValueError, match="`boxes` must be numeric"):
        instance_targets(boxes.astype(str), masks)
    received = re.escape("(N, max_boxes)=(12, 3) of `boxes`. Received: masks.shape=(11, 3, 32, 32)")
    with pytest.raises(ValueError, match=received):
        instance_targets(boxes, masks[:11])
    with pytest.raises(
        ValueError, match=r"`masks` must hold only 0 and 1. Received values: \[-1\]"
    ):
        instance_targets(boxes, masks.astype(np.int8) - 1)
    with pytest.raises(ValueError, match=r"\(height, width\)=\(32, 16\) of `masks`"):
        instance_targets(boxes, np.zeros((12, 3, 32, 16), np.uint8))
