import numpy as np
import PIL.Image
import pytest
import skimage.data

from kcnn.data import PHOTO_SOURCES, load_photo, load_photos, photos
from kcnn.data.photos import (
    MATE_PHOTO_DIR,
    MATE_PHOTO_SOURCES,
    MATE_SHORT_SIDE,
    PHOTO_COLLECTIONS,
)


def reference_photo(name):
    """The photo straight from scikit-image, grey repeated to RGB."""
    photo = getattr(skimage.data, name)()
    return np.repeat(photo[..., None], 3, axis=-1) if photo.ndim == 2 else photo[..., :3]


def test_splits_are_disjoint_and_load_offline():
    assert set(PHOTO_SOURCES) == {"train", "test"}
    assert not set(PHOTO_SOURCES["train"]) & set(PHOTO_SOURCES["test"])
    for name in PHOTO_SOURCES["train"] + PHOTO_SOURCES["test"]:
        photo = load_photo(name)
        assert photo.dtype == np.uint8 and photo.ndim == 3 and photo.shape[2] == 3
        assert not photo.flags.writeable


@pytest.mark.parametrize("split", ["train", "test"])
def test_crops_come_from_their_split(split):
    crops, names, offsets = load_photos(
        crop_size=24, crops_per_photo=3, split=split, seed=5, return_sources=True
    )
    assert crops.shape == (3 * len(PHOTO_SOURCES[split]), 24, 24, 3)
    assert crops.dtype == np.uint8
    assert names == [name for name in PHOTO_SOURCES[split] for _ in range(3)]
    other = "test" if split == "train" else "train"
    assert not set(names) & set(PHOTO_SOURCES[other])
    for crop, name, (row, col) in zip(crops, names, offsets, strict=True):
        np.testing.assert_array_equal(crop, reference_photo(name)[row : row + 24, col : col + 24])
        assert crop.std() >= 2.0  # Blank crops (retina border) are redrawn.


def test_deterministic_for_a_seed():
    a = load_photos(crop_size=16, crops_per_photo=2, split="test", seed=1)
    b = load_photos(crop_size=16, crops_per_photo=2, split="test", seed=1)
    c = load_photos(crop_size=16, crops_per_photo=2, split="test", seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len({crop.tobytes() for crop in a}) == len(a)


def test_crop_larger_than_a_photo():
    crops = load_photos(crop_size=320, crops_per_photo=1, split="test")
    assert crops.shape == (4, 320, 320, 3)  # chelsea (300 rows) is upscaled to fit.


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"split": "validation"},
            r"`split` must be one of \['test', 'train'\]. "
            r"Received: split='validation'",
        ),
        ({"crop_size": 0}, r"`crop_size` must be a positive int. Received: crop_size=0"),
        ({"crops_per_photo": 1.5}, r"`crops_per_photo` must be a positive int"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_photos(**kwargs)


def test_unknown_photo():
    with pytest.raises(ValueError, match=r"`name` must be one of .*Received: name='lena'"):
        load_photo("lena")


def test_mate_photos_are_shrunk_real_photographs_split_by_photo():
    assert not set(MATE_PHOTO_SOURCES["train"]) & set(MATE_PHOTO_SOURCES["test"])
    for name in MATE_PHOTO_SOURCES["test"]:
        photo = load_photo(name)
        path = f"{MATE_PHOTO_DIR}/{name.split('/')[1]}.jpg"
        with PIL.Image.open(path) as original:
            width, height = original.size
            reference = np.asarray(
                original.convert("RGB").resize(photo.shape[1::-1], PIL.Image.BOX), np.float64
            )
        assert min(photo.shape[:2]) == MATE_SHORT_SIDE
        assert photo.shape[1] / photo.shape[0] == pytest.approx(width / height, rel=0.01)
        # An antialiased shrink: close to the box-filter average of the original's pixels.
        assert np.abs(photo - reference).mean() < 4.0
        assert photo.std() > 20  # a photograph, not a flat colour


def test_collections():
    assert PHOTO_COLLECTIONS["all"]["test"] == PHOTO_SOURCES["test"] + MATE_PHOTO_SOURCES["test"]
    crops, names, _ = load_photos(16, 2, "test", seed=3, collection="all", return_sources=True)
    assert names == [name for name in PHOTO_COLLECTIONS["all"]["test"] for _ in range(2)]
    # A photo's crops do not depend on the collection it was drawn with.
    skimage_only = load_photos(16, 2, "test", seed=3, collection="skimage")
    mate_only = load_photos(16, 2, "test", seed=3, collection="mate")
    np.testing.assert_array_equal(crops, np.concatenate([skimage_only, mate_only]))
    with pytest.raises(ValueError, match=r"`collection` must be one of \['all', 'mate', 's"):
        load_photos(collection="debian")


def test_missing_package_is_named(monkeypatch, tmp_path):
    monkeypatch.setattr(photos, "MATE_PHOTO_DIR", str(tmp_path))
    load_photo.cache_clear()
    try:
        with pytest.raises(FileNotFoundError, match=r"apt-get install mate-backgrounds"):
            load_photo("mate/Dune")
    finally:
        load_photo.cache_clear()
