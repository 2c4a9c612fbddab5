import re

import numpy as np
import pytest

from kcnn.data import per_class_subset, split_validation
from kcnn.data.detection import instance_targets, load_detection_data


def labelled(counts):
    labels = np.repeat(np.arange(len(counts)), counts)
    images = np.stack([np.full((2, 2, 1), index, dtype=np.int64) for index in range(labels.size)])
    return images, labels


def test_keeps_count_images_of_every_class_with_their_own_labels():
    images, labels = labelled([5, 8, 12])
    kept_images, kept_labels = per_class_subset(images, labels, count=4, seed=3)
    assert np.bincount(kept_labels).tolist() == [4, 4, 4]
    # Each kept image is an original image with its original label, in the original order.
    indices = kept_images[:, 0, 0, 0]
    assert np.all(np.diff(indices) > 0)
    np.testing.assert_array_equal(labels[indices], kept_labels)


def test_the_draw_depends_on_the_seed_only():
    images, labels = labelled([20, 20])
    first = per_class_subset(images, labels, 5, seed=0)[0]
    np.testing.assert_array_equal(per_class_subset(images, labels, 5, seed=0)[0], first)
    assert not np.array_equal(per_class_subset(images, labels, 5, seed=1)[0], first)


@pytest.mark.parametrize(
    "count, message",
    [
        (0, "`count` must be a positive int. Received: count=0"),
        (2.5, "`count` must be a positive int. Received: count=2.5"),
        (6, "Class 0 has 5 images, fewer than `count`=6."),
    ],
)
def test_bad_counts_are_named(count, message):
    images, labels = labelled([5, 8])
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        per_class_subset(images, labels, count)


def test_labels_must_be_one_per_image():
    images, labels = labelled([3, 3])
    with pytest.raises(
        ValueError, match=re.escape("labels.shape=(5,) for images.shape=(6, 2, 2, 1)")
    ):
        per_class_subset(images, labels[:5], 2)


def test_structured_targets_split_at_random_with_their_fields_together():
    data = load_detection_data("shapes", train_count=10, test_count=1, image_size=32, masks=True)
    targets = instance_targets(data.y_train, data.masks_train)
    (kept_images, kept), (held_images, held) = split_validation(data.x_train, targets, 0.3, 2)
    assert kept.dtype == targets.dtype and (len(kept), len(held)) == (7, 3)

    def rows(images):
        return [
            next(i for i, original in enumerate(data.x_train) if np.array_equal(image, original))
            for image in images
        ]

    kept_rows, held_rows = rows(kept_images), rows(held_images)
    assert sorted(kept_rows + held_rows) == list(range(10))  # disjoint, and nothing is lost
    for part_rows, part in ((kept_rows, kept), (held_rows, held)):
        assert part_rows == sorted(part_rows)  # original order
        # Each image keeps its own boxes and its own masks.
        np.testing.assert_array_equal(part["boxes"], data.y_train[part_rows])
        np.testing.assert_array_equal(part["masks"], data.masks_train[part_rows])
    # The seeded random subset of per-image targets, not a split by class.
    _, (_, held_boxes) = split_validation(data.x_train, data.y_train, 0.3, 2)
    np.testing.assert_array_equal(held["boxes"], held_boxes)
    _, (_, other_seed) = split_validation(data.x_train, targets, 0.3, 3)
    assert not np.array_equal(other_seed, held)
