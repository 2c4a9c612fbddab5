import numpy as np
import pytest

from kcnn.data.detection import load_detection_data, make_detection_dataset, pad_boxes
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
