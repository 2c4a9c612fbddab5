import numpy as np
import pytest

from kcnn.data import (
    ITEM_THRESHOLD,
    load_localization_data,
    make_localization_dataset,
    make_shapes,
    paste_items,
)
from kcnn.data.localization import TEST_SEED_OFFSET

RNG = np.random.default_rng(0)


def tight_box(image, threshold):
    """The bounds of the pixels at or above `threshold`, read off the canvas itself."""
    rows, columns = np.nonzero(image.max(axis=-1) >= threshold)
    return [columns.min(), rows.min(), columns.max() + 1, rows.max() + 1]


def items(count):
    """Bright blobs of random extent inside 28x28 frames, as Fashion-MNIST items are."""
    frames = np.zeros((count, 28, 28, 1), np.uint8)
    for frame in frames:
        top, left = RNG.integers(0, 10, size=2)
        bottom, right = RNG.integers(18, 29, size=2)
        frame[top:bottom, left:right] = RNG.integers(60, 256, size=(bottom - top, right - left, 1))
    return frames


def test_pasted_items_have_the_box_of_their_pixels_and_stay_put_when_others_change():
    frames, labels = items(12), np.arange(12) % 10
    images, rows = paste_items(frames, labels, canvas_size=(48, 56), scale_range=(0.75, 1.5))
    assert images.shape == (12, 48, 56, 1) and rows.dtype == np.float32
    for image, row, label in zip(images, rows, labels, strict=True):
        assert row[:4].tolist() == tight_box(image, ITEM_THRESHOLD)
        assert row[4] == label
        width, height = row[2] - row[0], row[3] - row[1]
        assert max(width, height) <= round(1.5 * 28)
    # Item i's placement depends on (seed, i) only.
    again, again_rows = paste_items(frames[:5], labels[:5], (48, 56), (0.75, 1.5))
    np.testing.assert_array_equal(again, images[:5])
    np.testing.assert_array_equal(again_rows, rows[:5])
    other, _ = paste_items(frames[:5], labels[:5], (48, 56), (0.75, 1.5), seed=1)
    assert not np.array_equal(other, images[:5])


def test_a_scale_of_one_copies_the_item_unchanged():
    frames = items(3)
    images, rows = paste_items(frames, [0, 1, 2], canvas_size=40, scale_range=(1.0, 1.0))
    for image, row, frame in zip(images, rows, frames, strict=True):
        # The pasted square's top-left is where the item's own box starts, less its offset.
        item_box = tight_box(frame, ITEM_THRESHOLD)
        left, top = int(row[0]) - item_box[0], int(row[1]) - item_box[1]
        np.testing.assert_array_equal(image[top : top + 28, left : left + 28], frame)
        assert image.sum() == frame.sum()


def test_paste_items_rejects_bad_arguments():
    frames = items(2)
    with pytest.raises(ValueError, match=r"`scale_range` must be \(low, high\)"):
        paste_items(frames, [0, 1], canvas_size=32, scale_range=(1.0, 1.5))
    with pytest.raises(ValueError, match=r"`scale_range`"):
        paste_items(frames, [0, 1], scale_range=(0.0, 1.0))
    with pytest.raises(ValueError, match=r"`labels` must have one entry per item"):
        paste_items(frames, [0], canvas_size=48)
    with pytest.raises(ValueError, match=r"`items` must be a uint8 array"):
        paste_items(frames[0], [0], canvas_size=48)


def test_single_shape_scenes_are_make_shapes_scenes_with_zero_based_classes():
    data = load_localization_data("shapes", train_count=6, test_count=3, image_size=32, seed=4)
    assert data.y_train.shape == (6, 5) and data.class_names[0] == "circle"
    for split, images, rows in (
        (4, data.x_train, data.y_train),
        (4 + TEST_SEED_OFFSET, data.x_test, data.y_test),
    ):
        scenes = make_shapes(len(images), image_size=32, seed=split, max_shapes=1)
        np.testing.assert_array_equal(images, scenes.images)
        for row, mask, classes in zip(rows, scenes.masks, scenes.box_classes, strict=True):
            assert row[:4].tolist() == tight_box(mask[..., None], 1)
            assert row[4] == classes[0] - 1
    empty = load_localization_data("shapes", train_count=2, test_count=0, image_size=32)
    assert empty.x_test.shape == (0, 32, 32, 3) and empty.y_test.shape == (0, 5)
    with pytest.raises(ValueError, match=r"`train_count` must be a non-negative int"):
        load_localization_data("shapes", train_count=-1)


def test_localized_fashion_mnist_draws_train_and_test_items_from_their_splits():
    data = load_localization_data("localized_fashion_mnist", train_count=20, test_count=10)
    assert data.x_train.shape == (20, 48, 48, 1) and data.x_test.shape == (10, 48, 48, 1)
    assert len(data.class_names) == 10
    for images, rows in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        for image, row in zip(images, rows, strict=True):
            assert row[:4].tolist() == tight_box(image, ITEM_THRESHOLD)
    with pytest.raises(ValueError, match=r"`test_count` must be at most 10000"):
        load_localization_data("localized_fashion_mnist", train_count=1, test_count=10001)


def test_dataset_targets_are_fractions_and_flips_mirror_the_box():
    frames = items(16)
    images, rows = paste_items(frames, np.arange(16) % 10, canvas_size=(44, 48))
    plain = next(iter(make_localization_dataset(images, rows, batch_size=16)))[1].numpy()
    np.testing.assert_allclose(plain[:, :4], rows[:, :4] / [48, 44, 48, 44], rtol=1e-6)
    np.testing.assert_array_equal(plain[:, 4], rows[:, 4])
    batch, targets = next(
        iter(make_localization_dataset(images, rows, batch_size=16, shuffle=True, augment="flip"))
    )
    batch, targets = (batch.numpy() * 255).round(), targets.numpy()
    flipped = 0
    for image, target in zip(batch, targets, strict=True):
        # Each target is the box of its (possibly flipped) image's own pixels.
        box = np.array(tight_box(image, ITEM_THRESHOLD)) / [48, 44, 48, 44]
        np.testing.assert_allclose(target[:4], box, atol=1e-6)
        flipped += not any(np.allclose(target[:4], row[:4] / [48, 44, 48, 44]) for row in rows)
    assert 0 < flipped < 16


def test_dataset_rejects_bad_rows_and_augmentations():
    images, rows = paste_items(items(2), [0, 1], canvas_size=48)
    with pytest.raises(ValueError, match=r"`rows` must be an array \(N, 5\)"):
        make_localization_dataset(images, rows[:, :4])
    with pytest.raises(ValueError, match=r"`augment` must be None or one of \('flip',\)"):
        make_localization_dataset(images, rows, augment="flip_scale")
