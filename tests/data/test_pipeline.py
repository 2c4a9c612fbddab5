import math

import numpy as np
import pytest
import tensorflow as tf

from kcnn.data import AUGMENTATIONS, make_dataset, make_segmentation_dataset


def random_images(count=10, height=8, width=10, channels=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, height, width, channels), np.uint8)


def collect(dataset):
    """All batches of one pass, concatenated per component."""
    batches = list(dataset.as_numpy_iterator())
    if isinstance(batches[0], tuple):
        return tuple(np.concatenate(parts) for parts in zip(*batches, strict=True))
    return np.concatenate(batches)


def flip_translate_candidates(image, pad_height, pad_width):
    """Every image `"flip_translate"` may produce, built with NumPy only."""
    candidates = []
    for flipped in (image, image[:, ::-1]):
        padded = np.pad(flipped, ((pad_height,) * 2, (pad_width,) * 2, (0, 0)), mode="reflect")
        for row in range(2 * pad_height + 1):
            for col in range(2 * pad_width + 1):
                candidates.append(padded[row : row + image.shape[0], col : col + image.shape[1]])
    return np.stack(candidates)


def test_batches_scale_and_order():
    images, labels = random_images(10), np.arange(10) * 3
    dataset = make_dataset(images, labels, batch_size=4)

    batches = list(dataset.as_numpy_iterator())
    assert [len(batch[0]) for batch in batches] == [4, 4, 2]
    x, y = collect(dataset)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, images / 255.0, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(y, labels)

    dropped = make_dataset(images, labels, batch_size=4, drop_remainder=True)
    assert dropped.element_spec[0].shape.as_list() == [4, 8, 10, 3]
    assert sum(1 for _ in dropped) == 2


def test_float_input_and_no_labels():
    images = random_images(5).astype(np.float64) / 255.0
    x = collect(make_dataset(images, batch_size=2))
    assert isinstance(make_dataset(images).element_spec, tf.TensorSpec)
    np.testing.assert_allclose(x, images, atol=1e-7)


def test_shuffle_is_a_seeded_permutation():
    images, labels = random_images(20), np.arange(20)

    _, first = collect(make_dataset(images, labels, batch_size=8, shuffle=True, seed=1))
    _, again = collect(make_dataset(images, labels, batch_size=8, shuffle=True, seed=1))
    _, other = collect(make_dataset(images, labels, batch_size=8, shuffle=True, seed=2))

    np.testing.assert_array_equal(np.sort(first), labels)
    assert not np.array_equal(first, labels)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_repeat():
    dataset = make_dataset(random_images(3), np.arange(3), batch_size=2, repeat=True)
    labels = np.concatenate([y for _, y in dataset.take(4).as_numpy_iterator()])
    np.testing.assert_array_equal(labels, [0, 1, 2, 0, 1, 2, 0, 1])


def test_flip():
    images = random_images(32)
    dataset = make_dataset(images, np.arange(32), batch_size=16, augment="flip", seed=3)
    x, y = collect(dataset)
    x = np.round(x * 255).astype(np.uint8)

    same = np.all(x == images[y], axis=(1, 2, 3))
    mirrored = np.all(x == images[y][:, :, ::-1], axis=(1, 2, 3))
    assert np.all(same | mirrored)
    assert 4 <= mirrored.sum() <= 28

    again, _ = collect(make_dataset(images, np.arange(32), batch_size=16, augment="flip", seed=3))
    np.testing.assert_array_equal(np.round(again * 255).astype(np.uint8), x)
    # A second pass over the same dataset draws new flips.
    second_epoch, _ = collect(dataset)
    assert not np.array_equal(np.round(second_epoch * 255).astype(np.uint8), x)


def test_flip_translate_matches_numpy_reference():
    images = random_images(24, height=10, width=20, channels=1)
    x = collect(make_dataset(images, batch_size=8, augment="flip_translate", seed=0))
    x = np.round(x * 255).astype(np.uint8)
    pad_height, pad_width = math.ceil(0.1 * 10), math.ceil(0.1 * 20)

    shifted = 0
    for image, output in zip(images, x, strict=True):
        candidates = flip_translate_candidates(image, pad_height, pad_width)
        matches = np.nonzero(np.all(candidates == output, axis=(1, 2, 3)))[0]
        assert len(matches) > 0
        # Candidates are [unflipped shifts, flipped shifts]; the middle of each is unshifted.
        centre = pad_height * (2 * pad_width + 1) + pad_width
        unshifted = {centre, len(candidates) // 2 + centre}
        shifted += not unshifted & set(matches.tolist())
    assert shifted >= 12


def test_segmentation_flip_translate_keeps_masks_aligned():
    images = random_images(16, height=12, width=12)
    masks = images[..., 0] % 5  # A pixel's class is a function of its colour.

    dataset = make_segmentation_dataset(images, masks, batch_size=8, augment="flip_translate")
    x, m = collect(dataset)

    assert x.dtype == np.float32 and m.dtype == np.int32 and m.shape == (16, 12, 12)
    np.testing.assert_array_equal(m, np.round(x[..., 0] * 255).astype(np.int32) % 5)
    assert not np.array_equal(m, masks)  # Something did move.


def test_callable_augment():
    images = random_images(4)
    x = collect(make_dataset(images, batch_size=4, augment=lambda batch: 1.0 - batch))
    np.testing.assert_allclose(x, 1.0 - images / 255.0, atol=1e-6)

    masks = np.ones((4, 8, 10), np.uint8)
    x, m = collect(
        make_segmentation_dataset(
            images, masks, batch_size=2, augment=lambda batch, mask: (batch * 0.0, mask + 1)
        )
    )
    np.testing.assert_array_equal(x, 0.0)
    np.testing.assert_array_equal(m, 2)


def test_bad_arguments():
    images = random_images(4)
    with pytest.raises(
        ValueError,
        match=r"`augment` must be None, a callable, or one of \('flip', 'flip_translate', "
        r"'flip_translate_erase'\). "
        r"Received: augment='rotate'",
    ):
        make_dataset(images, augment="rotate")
    assert AUGMENTATIONS == ("flip", "flip_translate")
    with pytest.raises(
        ValueError,
        match=r"`images` and `labels` must have the same length. "
        r"Received: len\(images\)=4, len\(labels\)=3",
    ):
        make_dataset(images, np.arange(3))
    with pytest.raises(
        ValueError,
        match=r"`images` and `masks` must have the same length. "
        r"Received: len\(images\)=4, len\(masks\)=5",
    ):
        make_segmentation_dataset(images, np.zeros((5, 8, 10), np.uint8))
    with pytest.raises(ValueError, match=r"`masks` must have shape \(N, H, W\) matching"):
        make_segmentation_dataset(images, np.zeros((4, 8, 9), np.uint8))
    with pytest.raises(ValueError, match=r"`images` must be a 4-D array .*shape=\(4, 8, 10\)"):
        make_dataset(images[..., 0])
    with pytest.raises(
        ValueError, match=r"Float `images` must lie in \[0, 1\]. Received: min=0.0, max=255.0"
    ):
        make_dataset(images.astype(np.float32))
    with pytest.raises(
        ValueError, match=r"`batch_size` must be a positive int. Received: batch_size=0"
    ):
        make_dataset(images, batch_size=0)


def _away_from_borders(masks, distance=2):
    """Pixels whose neighbours up to `distance` away (4-connected) share their class."""
    keep = np.ones_like(masks, dtype=bool)
    for _ in range(distance):
        grown = keep.copy()
        for axis in (1, 2):
            for step in (1, -1):
                same = (np.roll(masks, step, axis=axis) == masks) & np.roll(keep, step, axis=axis)
                grown &= same
        keep = grown
    keep[:, :distance] = keep[:, -distance:] = False
    keep[:, :, :distance] = keep[:, :, -distance:] = False
    return keep


@pytest.mark.parametrize("augment", ["flip_scale", "flip_scale_color"])
def test_segmentation_scale_and_colour_keep_masks_aligned(augment):
    # Flat 8x8 blocks: away from block borders a pixel's colour names its class, whatever
    # zoom and crop were applied, as long as image and mask moved together.
    blocks = np.random.default_rng(5).integers(0, 5, (16, 4, 4))
    masks = np.kron(blocks, np.ones((8, 8), dtype=np.int64)).astype(np.uint8)
    palette = np.array([10, 60, 110, 160, 210], np.uint8)
    images = np.repeat(palette[masks][..., None], 3, axis=-1)
    x, m = collect(make_segmentation_dataset(images, masks, batch_size=8, augment=augment))
    assert set(np.unique(m)) <= set(range(5))  # nearest-neighbour: no blended class ids
    assert not np.array_equal(m, masks)
    inside = _away_from_borders(m)
    assert inside.mean() > 0.3
    values = np.round(x[..., 0] * 255)
    if augment == "flip_scale":
        np.testing.assert_array_equal(values[inside], palette[m[inside]])
        return
    # Colour jitter changes the image only: within an image, one class keeps one colour.
    for image_values, image_mask, image_inside in zip(values, m, inside, strict=True):
        for label in np.unique(image_mask[image_inside]):
            selected = image_values[(image_mask == label) & image_inside]
            assert np.ptp(selected) <= 1
    assert not np.allclose(values[inside], palette[m[inside]], atol=1)  # jitter did happen


def test_random_erasing_follows_the_papers_draws():
    """On constant images (the flip and shift leave them unchanged) every changed pixel is
    erased: one rectangle per image on about half the images, of 2-40% of the area and
    aspect 0.3-3.3 (Zhong et al. 2020, algorithm 1)."""
    images = np.full((400, 32, 32, 1), 128, np.uint8)
    labels = np.arange(400)
    x, y = collect(make_dataset(images, labels, batch_size=50, augment="flip_translate_erase"))
    np.testing.assert_array_equal(y, labels)
    changed = np.round(x[..., 0] * 255).astype(np.int32) != 128
    erased, areas = 0, []
    for image_changed in changed:
        if not image_changed.any():
            continue
        erased += 1
        rows, columns = np.nonzero(image_changed)
        top, bottom, left, right = rows.min(), rows.max(), columns.min(), columns.max()
        height, width = bottom - top + 1, right - left + 1
        # Nothing outside one rectangle; inside it, random values (1 in 256 may equal 128).
        assert image_changed[top : bottom + 1, left : right + 1].mean() > 0.9
        assert image_changed.sum() == image_changed[top : bottom + 1, left : right + 1].sum()
        areas.append(height * width / 1024)
        assert 0.3 / 1.5 <= height / width <= 1.5 / 0.3  # the aspect, up to rounding
    assert 160 <= erased <= 240  # p = 0.5 of 400 (+- 4 standard deviations)
    assert 0.01 <= min(areas) and max(areas) <= 0.45
    assert 0.15 <= np.mean(areas) <= 0.25  # U(0.02, 0.4) has mean 0.21
    again = collect(make_dataset(images, labels, batch_size=50, augment="flip_translate_erase"))
    np.testing.assert_array_equal(again[0], x)
    with pytest.raises(ValueError, match="flip_translate_erase"):
        make_segmentation_dataset(images, images[..., 0] % 2, augment="flip_translate_erase")
