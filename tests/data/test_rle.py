"""COCO instance masks: the three segmentation formats against masks built by hand, and the
shapes scenes' per-box masks against the scenes themselves."""

import json

import numpy as np
import pytest

from kcnn.data import decode_mask, encode_mask, instance_masks, load_coco_detection
from kcnn.data.shapes import make_shapes

from .test_folders import write_coco


def _runs(mask):
    """COCO's uncompressed RLE of `mask`, written here: lengths of alternating runs of 0s
    and 1s in column-major order, starting with 0s."""
    flat = np.asarray(mask, bool).flatten(order="F")
    runs, value, length = [], False, 0
    for pixel in flat:
        if pixel == value:
            length += 1
        else:
            runs.append(length)
            value, length = pixel, 1
    runs.append(length)
    return runs


def _rectangle_by_centres(x0, y0, x1, y1, height, width):
    """Pixels whose centre lies inside the rectangle."""
    ys, xs = np.mgrid[:height, :width] + 0.5
    return ((xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)).astype(np.uint8)


def test_every_coco_format_decodes_to_the_mask_it_describes():
    rng = np.random.default_rng(0)
    mask = (rng.random((7, 5)) < 0.4).astype(np.uint8)
    uncompressed = {"size": [7, 5], "counts": _runs(mask)}
    np.testing.assert_array_equal(decode_mask(uncompressed), mask)
    compressed = encode_mask(mask)
    assert isinstance(compressed["counts"], str) and compressed["size"] == [7, 5]
    json.dumps(compressed)
    np.testing.assert_array_equal(decode_mask(compressed), mask)
    # An axis-aligned rectangle: COCO's rasterisation keeps the pixels whose centre is inside.
    polygon = [[1.0, 1.0, 5.0, 1.0, 5.0, 4.0, 1.0, 4.0]]
    np.testing.assert_array_equal(
        decode_mask(polygon, 6, 7), _rectangle_by_centres(1, 1, 5, 4, 6, 7)
    )
    two = polygon + [[0.0, 5.0, 2.0, 5.0, 2.0, 6.0, 0.0, 6.0]]
    expected = _rectangle_by_centres(1, 1, 5, 4, 6, 7) | _rectangle_by_centres(0, 5, 2, 6, 6, 7)
    np.testing.assert_array_equal(decode_mask(two, 6, 7), expected)


def test_bad_segmentations_are_named():
    with pytest.raises(ValueError, match="need the image's `height` and `width`"):
        decode_mask([[0, 0, 4, 0, 4, 4]])
    with pytest.raises(ValueError, match="at least 3 points"):
        decode_mask([[0, 0, 4, 0]], 5, 5)
    with pytest.raises(ValueError, match="'size' and 'counts'"):
        decode_mask({"counts": [1, 2]})
    with pytest.raises(ValueError, match=r"`mask` must have shape \(H, W\)"):
        encode_mask(np.zeros((2, 3, 4)))


def test_shapes_masks_are_each_boxs_visible_pixels():
    scenes = make_shapes(6, image_size=32, seed=3, max_shapes=3)
    masks = instance_masks(scenes.instance_ids, 3)
    assert masks.shape == (6, 3, 32, 32) and masks.dtype == np.uint8
    for image in range(6):
        for row, box in enumerate(scenes.boxes[image]):
            rows, cols = np.nonzero(masks[image, row])
            # The tight box of the mask is the scene's box, exclusive max.
            np.testing.assert_array_equal(
                [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], box
            )
            # ... and the mask's pixels have the box's class in the scene's class mask.
            assert np.all(
                scenes.masks[image][masks[image, row] == 1] == scenes.box_classes[image][row]
            )
        assert not masks[image, len(scenes.boxes[image]) :].any()
        # Instances do not overlap: every shape pixel belongs to one mask.
        np.testing.assert_array_equal(masks[image].sum(0), scenes.masks[image] > 0)


def test_load_detection_data_gives_masks_only_when_asked():
    from kcnn.data import load_detection_data

    data = load_detection_data("shapes", train_count=3, test_count=2, image_size=32, masks=True)
    assert data.masks_train.shape == (3, 3, 32, 32) and data.masks_test.shape == (2, 3, 32, 32)
    for masks, boxes in ((data.masks_train, data.y_train), (data.masks_test, data.y_test)):
        padding = boxes[..., 4] < 0
        assert not masks[padding].any() and masks[~padding].any(axis=(1, 2)).all()
    assert load_detection_data("shapes", train_count=3, test_count=2).masks_train is None
    with pytest.raises(ValueError, match="`masks` must be True or False"):
        load_detection_data("shapes", train_count=3, test_count=2, masks="yes")


def test_coco_detection_reads_polygons_and_both_rles(tmp_path):
    mask = np.zeros((30, 40), np.uint8)
    mask[5:9, 3:12] = 1
    mask[20, 30] = 1
    annotations = [
        {
            "id": 1,
            "image_id": 10,
            "category_id": 3,
            "bbox": [2, 2, 10, 6],
            "segmentation": [[2.0, 2.0, 12.0, 2.0, 12.0, 8.0, 2.0, 8.0]],
        },
        {
            "id": 2,
            "image_id": 10,
            "category_id": 7,
            "bbox": [3, 5, 28, 16],
            "segmentation": {"size": [30, 40], "counts": _runs(mask)},
        },
        {
            "id": 4,
            "image_id": 10,
            "category_id": 1,
            "bbox": [3, 5, 28, 16],
            "segmentation": encode_mask(1 - mask),
        },
    ]
    data = load_coco_detection(write_coco(tmp_path, annotations), tmp_path / "images", masks=True)
    masks = data["masks"][0]
    assert masks.shape == (3, 30, 40) and masks.dtype == np.uint8
    np.testing.assert_array_equal(masks[0], _rectangle_by_centres(2, 2, 12, 8, 30, 40))
    np.testing.assert_array_equal(masks[1], mask)
    np.testing.assert_array_equal(masks[2], 1 - mask)
    assert data["masks"][1].shape == (0, 25, 20)
    assert "masks" not in load_coco_detection(
        write_coco(tmp_path, annotations), tmp_path / "images"
    )


def test_coco_detection_names_a_missing_or_bad_segmentation(tmp_path):
    annotation = {"id": 5, "image_id": 10, "category_id": 1, "bbox": [0, 0, 4, 4]}
    path = write_coco(tmp_path, [annotation])
    with pytest.raises(ValueError, match="Annotation 5 of image file .*first.png' has no segm"):
        load_coco_detection(path, tmp_path / "images", masks=True)
    path = write_coco(tmp_path, [{**annotation, "segmentation": {"size": [3, 3], "counts": [9]}}])
    with pytest.raises(
        ValueError, match=r"segmentation of size \(3, 3\) \(HxW\); the image is 30x40"
    ):
        load_coco_detection(path, tmp_path / "images", masks=True)
    with pytest.raises(ValueError, match="`masks` must be True or False"):
        load_coco_detection(path, tmp_path / "images", masks=1)
