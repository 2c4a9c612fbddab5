import numpy as np
import PIL.Image
import pytest
import scipy.ndimage

from kcnn.data import (
    AREA_BUCKETS,
    bucketed_masks,
    hole_ratio,
    irregular_masks,
    load_fashion_mnist,
    load_inpainting_data,
    load_mask_folder,
    make_inpainting_dataset,
)
from kcnn.data.masks import irregular_mask


@pytest.mark.parametrize("area_range", AREA_BUCKETS)
def test_hole_ratios_fall_in_their_bucket(area_range):
    masks = irregular_masks(40, image_size=32, area_range=area_range, seed=7)
    assert masks.shape == (40, 32, 32, 1) and masks.dtype == np.uint8
    assert set(np.unique(masks)) <= {0, 1}
    ratios = 1.0 - masks.mean(axis=(1, 2, 3))
    low, high = area_range
    assert np.all(ratios > low) and np.all(ratios < high), (ratios.min(), ratios.max())
    # The ratios spread over the bucket rather than piling up at one end.
    assert ratios.max() - ratios.min() > 0.4 * (high - low)
    np.testing.assert_allclose(hole_ratio(masks), ratios)


def test_masks_are_strokes_and_blobs_not_noise():
    masks = irregular_masks(20, image_size=64, area_range=(0.2, 0.3), seed=0)
    for mask in masks[..., 0]:
        _, components = scipy.ndimage.label(mask == 0)
        # A few connected holes, not scattered pixels.
        assert components <= 25
        # Holes are thick enough to survive one pixel of erosion somewhere, not only lines.
        assert scipy.ndimage.binary_erosion(mask == 0).sum() > 0


def test_same_seed_same_masks_and_longer_lists_extend_shorter_ones():
    first = irregular_masks(6, image_size=(24, 40), area_range=(0.3, 0.4), seed=3)
    assert first.shape == (6, 24, 40, 1)
    np.testing.assert_array_equal(first, irregular_masks(6, (24, 40), (0.3, 0.4), seed=3))
    np.testing.assert_array_equal(first, irregular_masks(9, (24, 40), (0.3, 0.4), seed=3)[:6])
    other = irregular_masks(6, image_size=(24, 40), area_range=(0.3, 0.4), seed=4)
    assert not any(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_bucketed_masks_cycle_through_the_buckets():
    masks, bucket = bucketed_masks(14, image_size=32, seed=2)
    assert bucket.tolist() == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5, 0, 1]
    for ratio, index in zip(hole_ratio(masks), bucket, strict=True):
        low, high = AREA_BUCKETS[index]
        assert low < ratio < high


@pytest.mark.parametrize(
    "area_range", [(0.3, 0.2), (0.1,), (-0.1, 0.2), (0.5, 1.5), "0.1-0.2", (True, 0.5)]
)
def test_bad_area_range_is_named(area_range):
    with pytest.raises(ValueError, match=r"`area_range` must be a pair \(low, high\)"):
        irregular_masks(1, image_size=16, area_range=area_range)


def test_bad_count_and_size_are_named():
    with pytest.raises(ValueError, match="`count` must be a positive int. Received: count=0"):
        irregular_masks(0)
    with pytest.raises(ValueError, match="`image_size` must be a positive int"):
        irregular_masks(1, image_size=0)


def write_png(path, array):
    PIL.Image.fromarray(array).save(path)


def test_mask_folder_black_or_white_holes_and_resizing(tmp_path):
    grey = np.full((8, 12), 255, np.uint8)
    grey[2:5, 3:7] = 0
    write_png(tmp_path / "b.png", grey)
    write_png(tmp_path / "a.png", np.full((8, 12), 255, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    masks = load_mask_folder(tmp_path)
    assert masks.shape == (2, 8, 12, 1) and masks.dtype == np.uint8
    assert masks[0].min() == 1  # a.png comes first: all valid
    assert masks[1].sum() == 8 * 12 - 12 and masks[1, 2:5, 3:7].max() == 0
    white = load_mask_folder(tmp_path, holes="white")
    np.testing.assert_array_equal(white, 1 - masks)
    resized = load_mask_folder(tmp_path, image_size=(16, 24))
    assert resized.shape == (2, 16, 24, 1)
    assert set(np.unique(resized)) == {0, 1}
    assert hole_ratio(resized)[1] == pytest.approx(hole_ratio(masks)[1])


def test_mask_folder_errors_name_the_argument_or_file(tmp_path):
    with pytest.raises(ValueError, match="`holes` must be one of"):
        load_mask_folder(tmp_path, holes="grey")
    with pytest.raises(ValueError, match="`threshold` must be an int in"):
        load_mask_folder(tmp_path, threshold=0)
    with pytest.raises(ValueError, match="holds no image file"):
        load_mask_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mask_folder(tmp_path / "missing")
    write_png(tmp_path / "a.png", np.zeros((8, 8), np.uint8))
    write_png(tmp_path / "b.png", np.zeros((8, 9), np.uint8))
    with pytest.raises(ValueError, match=r"b\.png' is 9x8, unlike"):
        load_mask_folder(tmp_path)


def test_inpainting_batches_carry_masked_image_mask_and_target():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    masks = irregular_masks(6, image_size=16, area_range=(0.2, 0.4))
    (masked, mask), target = next(iter(make_inpainting_dataset(images, masks, batch_size=6)))
    truth = images / np.float32(255)
    np.testing.assert_allclose(masked, truth * masks, atol=1e-7)
    np.testing.assert_array_equal(mask, masks)
    np.testing.assert_allclose(target, np.concatenate([truth, masks], axis=-1), atol=1e-7)


def test_training_batches_draw_fresh_masks_from_the_pool():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    own = np.ones((8, 16, 16, 1), np.uint8)
    pool = irregular_masks(5, image_size=16, area_range=(0.2, 0.4))
    dataset = make_inpainting_dataset(
        images, own, batch_size=8, shuffle=True, seed=1, mask_pool=pool, repeat=True
    )
    variants = {
        np.ascontiguousarray(m).tobytes()
        for p in pool[..., 0]
        for m in (p, p[::-1], p[:, ::-1], p[::-1, ::-1])
    }
    epochs = [mask.numpy() for (_, mask), _ in dataset.take(2)]
    for drawn in epochs:
        assert all(m[..., 0].astype(np.uint8).tobytes() in variants for m in drawn)
    assert not np.array_equal(epochs[0], epochs[1])
    again = [
        mask.numpy()
        for (_, mask), _ in make_inpainting_dataset(
            images, own, batch_size=8, shuffle=True, seed=1, mask_pool=pool, repeat=True
        ).take(2)
    ]
    np.testing.assert_array_equal(epochs, again)


def test_inpainting_dataset_rejects_bad_masks():
    images = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=r"`masks` must have shape \(N, H, W, 1\)"):
        make_inpainting_dataset(images, np.ones((2, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="must hold only 0 \\(hole\\) and 1"):
        make_inpainting_dataset(images, np.full((2, 8, 8, 1), 255, np.uint8))
    with pytest.raises(ValueError, match="`augment` must be None, a callable, or one of"):
        make_inpainting_dataset(images, np.ones((2, 8, 8, 1)), augment="flip_translate")


def test_photos_inpainting_data_holds_out_photos_and_buckets_test_masks(tmp_path):
    data = load_inpainting_data(
        "photos", image_size=32, train_crops_per_photo=2, test_crops_per_photo=3, mask_pool_size=6
    )
    # 17 training and 7 test photos (`collection="all"`).
    assert data.x_train.shape == (34, 32, 32, 3) and data.x_test.shape == (21, 32, 32, 3)
    assert data.y_train.shape == (34, 32, 32, 1) and data.mask_pool.shape == (6, 32, 32, 1)
    skimage_only = load_inpainting_data(
        "photos", image_size=32, train_crops_per_photo=2, collection="skimage", mask_pool_size=6
    )
    np.testing.assert_array_equal(skimage_only.x_train, data.x_train[:16])
    assert data.class_names == ()
    ratios = hole_ratio(data.y_test)
    for index, ratio in enumerate(ratios):
        low, high = AREA_BUCKETS[index % 6]
        assert low < ratio < high
    write_png(tmp_path / "m.png", np.where(np.eye(20, dtype=bool), 0, 255).astype(np.uint8))
    own = load_inpainting_data(
        "photos",
        image_size=20,
        train_crops_per_photo=1,
        test_crops_per_photo=1,
        mask_path=str(tmp_path),
    )
    assert own.mask_pool.shape == (1, 20, 20, 1) and own.y_test.min(axis=(1, 2, 3)).max() == 0


def test_fashion_holes_pads_items_and_draws_large_holes():
    data = load_inpainting_data("fashion_holes", train_size=40, test_size=9, mask_pool_size=12)
    (x_train, _), (x_test, _) = load_fashion_mnist()
    assert data.x_train.shape == (40, 32, 32, 1) and data.x_test.shape == (9, 32, 32, 1)
    # Padded by 2 pixels of background; the items inside are Fashion-MNIST's.
    np.testing.assert_array_equal(data.x_test[:, 2:30, 2:30, 0], x_test[:9].reshape(9, 28, 28))
    assert data.x_train[:, :2].max() == 0 and data.x_train[:, :, 30:].max() == 0
    train_items = {item.tobytes() for item in x_train.reshape(-1, 28, 28)}
    assert all(item[2:30, 2:30, 0].tobytes() in train_items for item in data.x_train)
    for index, ratio in enumerate(hole_ratio(data.y_test)):
        low, high = AREA_BUCKETS[3 + index % 3]
        assert low < ratio < high
    pool_ratios = hole_ratio(data.mask_pool)
    assert pool_ratios.min() > 0.3 and pool_ratios.max() < 0.6
    with pytest.raises(ValueError, match="`train_size` must be a positive int"):
        load_inpainting_data("fashion_holes", train_size=0)


@pytest.mark.parametrize(("index", "bucket"), [(60, 3), (233, 5), (325, 4)])
def test_a_hole_ratio_never_reaches_the_end_of_its_bucket(index, bucket):
    # Masks whose drawn ratio fell within one pixel of the bucket's end used to land on it
    # (a 30-40% mask with a 40.04% hole): the fashion_holes test masks 60, 233 and 325.
    low, high = AREA_BUCKETS[bucket]
    mask = irregular_mask((32, 32), (low, high), np.random.default_rng([1_000_003, index]))
    assert low < hole_ratio(mask[np.newaxis])[0] < high
