"""Random crops of real photographs that load offline: the public-domain photos bundled with
scikit-image and the nature photographs of Debian's `mate-backgrounds` package."""

import functools
import os

import numpy as np
import PIL.Image
import skimage.data

from kcnn._validation import check_positive_int
from kcnn.data._imaging import resize_image

# Photos and textures shipped inside the scikit-image wheel (so they load offline) whose
# docstrings state CC0 or public domain. A photo belongs to exactly one split, so test
# crops never share content with training crops.
PHOTO_SOURCES = {
    "train": (
        "astronaut",  # NASA, public domain; colour
        "camera",  # Lav Varshney, CC0; grey
        "coffee",  # Rachel Michetti, CC0; colour
        "rocket",  # SpaceX, public domain; colour
        "hubble_deep_field",  # NASA, public domain; colour
        "brick",  # CC0Textures, CC0; grey texture
        "grass",  # DeviantArt linolafett, CC0; grey texture
        "clock",  # Stefan van der Walt, public domain; grey
    ),
    "test": (
        "chelsea",  # Stefan van der Walt, CC0; colour
        "retina",  # Mikael Haggstrom, CC0; colour
        "gravel",  # CC0Textures, CC0; grey texture
        "cell",  # Paul Mueller, CC0; grey
    ),
}

# Photographs of Debian's `mate-backgrounds` package (GPL-2+; authors in
# /usr/share/doc/mate-backgrounds/copyright), read from where the package installs them and
# named "mate/<file stem>". Split by photo like `PHOTO_SOURCES`.
MATE_PHOTO_DIR = "/usr/share/backgrounds/mate/nature"
MATE_PHOTO_SOURCES = {
    "train": tuple(
        f"mate/{stem}"
        for stem in (
            "Aqua",  # a water drop
            "Blinds",  # a backlit leaf
            "FreshFlower",
            "Garden",
            "GreenMeadow",
            "RainDrops",
            "Storm",  # clouds over a road
            "TwoWings",  # dandelion seeds
            "Wood",  # planks
        )
    ),
    "test": tuple(f"mate/{stem}" for stem in ("Dune", "LadyBird", "YellowFlower")),
}
# The `mate-backgrounds` photos are 1280-2560 pixels wide; they are shrunk (antialiased) so
# their short side is this many pixels, about the size of scikit-image's photos, so that a
# 64x64 crop holds an edge or a texture rather than a flat patch of a zoomed-in photo.
MATE_SHORT_SIDE = 512
# What `load_photos(collection=...)` draws from.
PHOTO_COLLECTIONS = {
    "skimage": PHOTO_SOURCES,
    "mate": MATE_PHOTO_SOURCES,
    "all": {split: PHOTO_SOURCES[split] + MATE_PHOTO_SOURCES[split] for split in PHOTO_SOURCES},
}
# Seeds of crop positions index this list, so adding photos never moves another's crops.
_ALL_PHOTOS = (
    sorted(name for names in PHOTO_SOURCES.values() for name in names)
    + list(MATE_PHOTO_SOURCES["train"])
    + list(MATE_PHOTO_SOURCES["test"])
)

# A crop whose standard deviation is below this many grey levels is blank (the black
# border around `retina`, the bare wall in `clock`) and is drawn again.
_BLANK_CROP_STD = 2.0
_MAX_CROP_TRIES = 10


@functools.cache
def load_photo(name):
    """Returns one photo as a read-only uint8 `(H, W, 3)` array.

    Args:
        name: str. A name from `PHOTO_SOURCES` (scikit-image's, e.g. `"astronaut"`) or
            `MATE_PHOTO_SOURCES` (e.g. `"mate/Dune"`, shrunk to a short side of
            `MATE_SHORT_SIDE` pixels). Grey photos are repeated over 3 channels.

    Returns:
        A read-only uint8 array of shape `(H, W, 3)`.

    Raises:
        ValueError: if `name` is not in `PHOTO_SOURCES` or `MATE_PHOTO_SOURCES`.
        FileNotFoundError: for a `"mate/..."` photo when Debian's `mate-backgrounds`
            package is not installed.
    """
    if name not in _ALL_PHOTOS:
        raise ValueError(f"`name` must be one of {_ALL_PHOTOS}. Received: name={name!r}")
    if name.startswith("mate/"):
        photo = _load_mate_photo(name)
    else:
        photo = np.asarray(getattr(skimage.data, name)(), dtype=np.uint8)
    if photo.ndim == 2:
        photo = np.repeat(photo[..., np.newaxis], 3, axis=-1)
    photo = np.ascontiguousarray(photo[..., :3])
    photo.flags.writeable = False
    return photo


def _load_mate_photo(name):
    path = os.path.join(MATE_PHOTO_DIR, name.split("/", 1)[1] + ".jpg")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Photo {name!r} needs {path}, which Debian's package `mate-backgrounds` installs: "
            "run `apt-get install mate-backgrounds` (scripts/setup_env.sh does), or use "
            '`collection="skimage"`.'
        )
    with PIL.Image.open(path) as image:
        image = image.convert("RGB")
        scale = MATE_SHORT_SIDE / min(image.size)
        if scale < 1:
            size = (round(image.size[0] * scale), round(image.size[1] * scale))
            image = image.resize(size, PIL.Image.BILINEAR, reducing_gap=2.0)
        return np.asarray(image, dtype=np.uint8)


@functools.cache
def _photo_at_least(name, min_side):
    photo = load_photo(name)
    short_side = min(photo.shape[:2])
    if short_side >= min_side:
        return photo
    scale = min_side / short_side
    resized = resize_image(
        photo,
        max(min_side, round(photo.shape[0] * scale)),
        max(min_side, round(photo.shape[1] * scale)),
    )
    resized.flags.writeable = False
    return resized


def load_photos(
    crop_size=64,
    crops_per_photo=16,
    split="train",
    seed=0,
    return_sources=False,
    collection="skimage",
):
    """Returns random square crops of real photos that load offline.

    Useful as natural images for inpainting, denoising or reconstruction tasks
    without any download. `collection` picks the photos:

    - `"skimage"`: scikit-image's bundled CC0 / public-domain photos, `PHOTO_SOURCES`:
      train astronaut, camera, coffee, rocket, hubble_deep_field, brick, grass, clock;
      test chelsea, retina, gravel, cell.
    - `"mate"`: the nature photographs of Debian's `mate-backgrounds` package
      (GPL-2+), `MATE_PHOTO_SOURCES`: 9 for training, 3 (Dune, LadyBird,
      YellowFlower) for testing, shrunk to a short side of 512 pixels.
    - `"all"`: both, 17 training and 7 test photos.

    No photo is in both splits. Grey photos are repeated over 3 channels. A photo
    whose short side is smaller than `crop_size` is first upscaled (bilinear) so
    that the crop fits. A nearly blank crop (standard deviation below 2 grey
    levels) is drawn again, up to 10 times.

    Args:
        crop_size: int. Side of the square crops in pixels. Defaults to `64`.
        crops_per_photo: int. Crops taken from each photo. Defaults to `16`.
        split: str. `"train"` or `"test"`. Defaults to `"train"`.
        seed: int. Seed of the crop positions; the same seed gives the same
            crops. Defaults to `0`.
        return_sources: bool. If `True`, also return where each crop came from.
            Defaults to `False`.
        collection: str. `"skimage"`, `"mate"` or `"all"` (see above). Defaults to
            `"skimage"`. A photo's crops depend on `seed`, `crop_size` and the photo
            only, not on the collection.

    Returns:
        uint8 array of shape `(len(photos) * crops_per_photo, crop_size, crop_size, 3)`,
        grouped photo by photo in the order of `PHOTO_COLLECTIONS[collection][split]`.
        With `return_sources=True`, a tuple `(crops, names, offsets)` where `names[i]`
        is the photo of crop `i` and `offsets[i]` its `(row, col)` top-left corner in
        that photo (after any resizing).

    Raises:
        ValueError: if `split` is not `"train"` or `"test"`, `collection` is not a
            known collection, or `crop_size` or `crops_per_photo` is not a positive int.
        FileNotFoundError: if `collection` needs `mate-backgrounds` and it is not
            installed.

    Example:

    >>> crops = load_photos(crop_size=32, crops_per_photo=4, split="test")
    >>> crops.shape, crops.dtype
    ((16, 32, 32, 3), dtype('uint8'))
    """
    if split not in PHOTO_SOURCES:
        raise ValueError(
            f"`split` must be one of {sorted(PHOTO_SOURCES)}. Received: split={split!r}"
        )
    if collection not in PHOTO_COLLECTIONS:
        raise ValueError(
            f"`collection` must be one of {sorted(PHOTO_COLLECTIONS)}. "
            f"Received: collection={collection!r}"
        )
    crop_size = check_positive_int(crop_size, "crop_size")
    crops_per_photo = check_positive_int(crops_per_photo, "crops_per_photo")

    crops, names, offsets = [], [], []
    for name in PHOTO_COLLECTIONS[collection][split]:
        photo = _photo_at_least(name, crop_size)
        # One stream per photo, so a photo's crops do not depend on the other photos.
        rng = np.random.default_rng([seed, _ALL_PHOTOS.index(name)])
        for _ in range(crops_per_photo):
            for _ in range(_MAX_CROP_TRIES):
                row = int(rng.integers(0, photo.shape[0] - crop_size + 1))
                col = int(rng.integers(0, photo.shape[1] - crop_size + 1))
                crop = photo[row : row + crop_size, col : col + crop_size]
                if crop.std() >= _BLANK_CROP_STD:
                    break
            crops.append(crop)
            names.append(name)
            offsets.append((row, col))
    crops = np.stack(crops)
    if return_sources:
        return crops, names, np.asarray(offsets, dtype=np.int64)
    return crops
