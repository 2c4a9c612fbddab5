import math

import numpy as np
import pytest

from kcnn.data import SHAPE_CLASSES, ShapesData, make_shapes
from kcnn.data.shapes import _contrasting_color, _draw_shape


@pytest.fixture(scope="module")
def shapes():
    return make_shapes(48, image_size=64, seed=0)


def test_square_is_the_exact_rectangle():
    mask = _draw_shape("square", center=(20.0, 30.0), size=10, angle=0.0, image_shape=(64, 48))
    expected = np.zeros((64, 48), dtype=bool)
    expected[25:35, 15:25] = True
    np.testing.assert_array_equal(mask, expected)
    # A quarter turn maps the square onto itself.
    rotated = _draw_shape("square", (20.0, 30.0), 10, math.pi / 2, (64, 48))
    np.testing.assert_array_equal(rotated, expected)


def test_circle_area_and_pixels():
    radius, center = 20.0, (31.3, 29.8)
    mask = _draw_shape("circle", center, 2 * radius, 0.0, (64, 64))
    assert abs(mask.sum() - math.pi * radius**2) < 0.01 * math.pi * radius**2
    rows, cols = np.mgrid[:64, :64]
    distance = np.hypot(cols + 0.5 - center[0], rows + 0.5 - center[1])
    np.testing.assert_array_equal(mask, distance <= radius)


def test_triangle_and_star_areas():
    triangle = _draw_shape("triangle", (40.0, 40.0), 60, 0.3, (80, 80))
    assert abs(triangle.sum() - math.sqrt(3) / 4 * 60**2) < 0.02 * math.sqrt(3) / 4 * 60**2
    # A star with outer radius R and inner radius r is 10 triangles of area R r sin(36 deg) / 2.
    outer = 35.0
    star = _draw_shape("star", (40.0, 40.0), 2 * outer, 0.0, (80, 80))
    expected = 5 * outer * (outer / 2) * math.sin(math.pi / 5)
    assert abs(star.sum() - expected) < 0.02 * expected
    # Apex up: the top row of the star is at its centre column.
    rows, cols = np.nonzero(star)
    assert abs(cols[rows == rows.min()].mean() + 0.5 - 40.0) <= 1.0


def test_draw_clips_at_the_border():
    mask = _draw_shape("square", (0.0, 0.0), 10, 0.0, (20, 20))
    expected = np.zeros((20, 20), dtype=bool)
    expected[:5, :5] = True
    np.testing.assert_array_equal(mask, expected)


def test_types_and_shapes(shapes):
    assert isinstance(shapes, ShapesData) and len(shapes) == 48
    assert shapes.images.shape == (48, 64, 64, 3) and shapes.images.dtype == np.uint8
    assert shapes.masks.shape == (48, 64, 64) and shapes.masks.dtype == np.uint8
    assert shapes.class_names == ("background", "circle", "square", "triangle", "star")
    assert shapes.class_names[1:] == SHAPE_CLASSES
    for boxes, classes in zip(shapes.boxes, shapes.box_classes, strict=True):
        assert boxes.dtype == np.float32 and boxes.shape[1] == 4
        assert classes.dtype == np.int32 and len(classes) == len(boxes)
        assert 1 <= len(boxes) <= 3


def test_boxes_are_tight_around_visible_instance_pixels(shapes):
    for index in range(len(shapes)):
        for k, (box, class_index) in enumerate(
            zip(shapes.boxes[index], shapes.box_classes[index], strict=True), start=1
        ):
            rows, cols = np.nonzero(shapes.instance_ids[index] == k)
            assert len(rows) >= 8
            np.testing.assert_array_equal(
                box, [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
            )
            assert np.all(shapes.masks[index][rows, cols] == class_index)
        assert shapes.instance_ids[index].max() == len(shapes.boxes[index])
        np.testing.assert_array_equal(shapes.masks[index] == 0, shapes.instance_ids[index] == 0)


def test_masks_and_boxes_agree_without_instance_ids(shapes):
    """Every shape pixel lies in a box of its class; every box edge touches its class."""
    for mask, boxes, classes in zip(shapes.masks, shapes.boxes, shapes.box_classes, strict=True):
        covered = np.zeros(mask.shape, dtype=bool)
        for (x_min, y_min, x_max, y_max), class_index in zip(
            boxes.astype(int), classes, strict=True
        ):
            inside = mask[y_min:y_max, x_min:x_max] == class_index
            assert inside[0].any() and inside[-1].any()
            assert inside[:, 0].any() and inside[:, -1].any()
            covered[y_min:y_max, x_min:x_max] |= inside
        np.testing.assert_array_equal(covered, mask > 0)


def test_shapes_are_solid_and_contrast(shapes):
    for image, ids in zip(shapes.images, shapes.instance_ids, strict=True):
        for k in range(1, ids.max() + 1):
            colors = image[ids == k]
            assert np.all(colors == colors[0])
    rng = np.random.default_rng(0)
    for reference in ([0, 0, 0], [128, 128, 128], [255, 10, 200]):
        color = _contrasting_color(rng, np.asarray(reference, dtype=float))
        assert np.linalg.norm(color.astype(float) - reference) >= 100


def test_every_class_appears(shapes):
    all_classes = np.concatenate(shapes.box_classes)
    assert set(all_classes) == {1, 2, 3, 4}
    assert set(np.unique(shapes.masks)) == {0, 1, 2, 3, 4}


def test_photo_backgrounds_are_textured_and_plain_ones_flat(shapes):
    background_values = [
        len(np.unique(image[mask == 0], axis=0))
        for image, mask in zip(shapes.images, shapes.masks, strict=True)
    ]
    assert np.median(background_values) > 50
    plain = make_shapes(4, image_size=32, seed=1, backgrounds="plain")
    for image, mask in zip(plain.images, plain.masks, strict=True):
        assert len(np.unique(image[mask == 0], axis=0)) == 1


def test_deterministic_and_prefix_stable(shapes):
    again = make_shapes(48, image_size=64, seed=0)
    np.testing.assert_array_equal(again.images, shapes.images)
    np.testing.assert_array_equal(again.masks, shapes.masks)
    for a, b in zip(again.boxes, shapes.boxes, strict=True):
        np.testing.assert_array_equal(a, b)
    prefix = make_shapes(5, image_size=64, seed=0)
    np.testing.assert_array_equal(prefix.images, shapes.images[:5])
    other = make_shapes(5, image_size=64, seed=1)
    assert not np.array_equal(other.images, prefix.images)


def test_rectangular_size_and_size_limits():
    data = make_shapes(6, image_size=(40, 72), seed=2, max_shapes=1, min_size=12, max_size=16)
    assert data.images.shape == (6, 40, 72, 3)
    for boxes, classes in zip(data.boxes, data.box_classes, strict=True):
        assert len(boxes) == 1
        width, height = boxes[0, 2] - boxes[0, 0], boxes[0, 3] - boxes[0, 1]
        # Extent of a size-s shape: at least ~s/2 (star arm) and at most s * sqrt(2) (square).
        assert 12 / 2 - 1 <= max(width, height) <= 16 * math.sqrt(2) + 1
        assert classes[0] in (1, 2, 3, 4)
    assert make_shapes(0).images.shape == (0, 64, 64, 3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_size": 8}, r"`image_size` must be an int >= 16 .*Received: image_size=8"),
        ({"image_size": (64, "a")}, r"`image_size` must be .*Received: image_size=\(64, 'a'\)"),
        ({"min_size": 20, "max_size": 10}, r"min_size <= max_size <= min\(height, width\)=64"),
        ({"max_size": 65}, r"Received: min_size=8, max_size=65"),
        ({"min_size": 2}, r"`min_size` must be an int >= 6. Received: min_size=2"),
        ({"backgrounds": "noise"}, r"`backgrounds` must be one of \('photos', 'plain'\)"),
        ({"max_shapes": 0}, r"`max_shapes` must be a positive int. Received: max_shapes=0"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_shapes(1, **kwargs)
