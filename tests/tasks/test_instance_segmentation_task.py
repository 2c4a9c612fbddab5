"""The instance segmentation task: its data keep boxes and masks together, its mask AP is
pycocotools' `segm` AP of the masks pasted back (perfect masks score 1, wrong ones 0 while
the boxes still score 1), and its export comparison checks the masks."""

import numpy as np
import pytest

from kcnn.data import split_validation
from kcnn.detection import mask_targets
from kcnn.tasks import get_task


@pytest.fixture(scope="module")
def task():
    return get_task("instance_segmentation")


@pytest.fixture(scope="module")
def scenes(task):
    return task.load_dataset("shapes", image_size=48, train_count=6, test_count=5, seed=2)


def _ground_truth_detections(targets, mask_size=28):
    """Detections that are the ground truth: its boxes, score 1, and its masks RoIAligned
    into the frame of each box (what a perfect Mask R-CNN returns)."""
    boxes = targets["boxes"]
    valid = boxes[..., 4] >= 0
    masks = np.asarray(
        mask_targets(
            targets["masks"],
            boxes[..., :4],
            np.broadcast_to(np.arange(boxes.shape[1]), valid.shape),
            mask_size,
        )
    )
    return {
        "boxes": np.where(valid[..., None], boxes[..., :4], 0.0),
        "scores": valid.astype(np.float32),
        "classes": np.where(valid, boxes[..., 4], -1).astype(np.int32),
        "count": valid.sum(axis=1).astype(np.int32),
        "masks": np.where(valid[..., None, None], masks, 0.0),
    }


def test_targets_hold_each_image_boxes_and_masks_together(task, scenes):
    assert scenes.masks_train is None and scenes.y_train.dtype.names == ("boxes", "masks")
    boxes, masks = scenes.y_train["boxes"], scenes.y_train["masks"]
    # In the shapes scenes a box is its mask's extent: the pairing is checkable.
    for box, mask in zip(boxes.reshape(-1, 5), masks.reshape(-1, 48, 48), strict=True):
        if box[4] < 0:
            assert not mask.any()
            continue
        rows, columns = np.nonzero(mask)
        np.testing.assert_array_equal(
            box[:4], [columns.min(), rows.min(), columns.max() + 1, rows.max() + 1]
        )
    (kept, kept_targets), (held, held_targets) = split_validation(
        scenes.x_train, scenes.y_train, 0.34, 0
    )
    assert len(kept) + len(held) == 6
    for images, targets in ((kept, kept_targets), (held, held_targets)):
        for image, target in zip(images, targets, strict=True):
            index = next(i for i, x in enumerate(scenes.x_train) if np.array_equal(x, image))
            np.testing.assert_array_equal(target["masks"], masks[index])
    with pytest.raises(ValueError, match="instance masks"):
        task.load_dataset("shapes", image_size=48, train_count=2, test_count=1, masks=False)


def test_batches_carry_boxes_and_masks(task, scenes):
    images, targets = next(iter(task.make_dataset(scenes, scenes.x_test, scenes.y_test, 5)))
    np.testing.assert_array_equal(targets["boxes"], scenes.y_test["boxes"])
    np.testing.assert_array_equal(targets["masks"], scenes.y_test["masks"])
    assert images.shape == (5, 48, 48, 3)


def test_mask_ap_scores_pasted_masks_against_the_ground_truth(task, scenes):
    perfect = _ground_truth_detections(scenes.y_test)
    scores = task.mask_scores(perfect, scenes.y_test, scenes.class_names, (48, 48))
    assert scores["map50"] == pytest.approx(1.0) and scores["map"] > 0.9
    # The boxes right, every mask a sliver in the box's top-left corner: box AP stays 1,
    # mask AP falls to 0.
    slivers = {**perfect, "masks": np.zeros_like(perfect["masks"])}
    slivers["masks"][..., :3, :3] = 1.0
    box_scores = task.coco_scores(slivers, scenes.y_test["boxes"], scenes.class_names, (48, 48))
    assert box_scores["map50"] == pytest.approx(1.0)
    assert task.mask_scores(slivers, scenes.y_test, scenes.class_names, (48, 48))["map50"] == 0.0
    name, metric = task.export_metric(scenes.x_test, scenes.y_test, scenes.class_names)
    assert name == "mask_map50" and metric(perfect) == pytest.approx(1.0)


def test_export_comparison_checks_each_pasted_mask(task, scenes):
    perfect = _ground_truth_detections(scenes.y_test)
    same = task.compare_exports(perfect, perfect)
    assert "mismatch" not in same and same["min_mask_iou"] == 1.0
    # LiteRT's rows in another order within an image still pair with Keras's.
    swapped = {name: value.copy() for name, value in perfect.items()}
    image = int(np.argmax(perfect["count"]))
    for value in swapped.values():
        if value.ndim > 1:
            value[image, [0, 1]] = value[image, [1, 0]]
    assert "mismatch" not in task.compare_exports(perfect, swapped)
    shrunk = {name: value.copy() for name, value in perfect.items()}
    shrunk["masks"][image, 0, :, 14:] = 0.0
    report = task.compare_exports(perfect, shrunk)
    assert report["min_mask_iou"] < 0.9 and "masks overlap" in report["mismatch"]
