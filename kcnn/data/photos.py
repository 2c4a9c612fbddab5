"""Random crops of the public-domain photos bundled with scikit-image (no download)."""

import functools

import numpy as np
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

# A crop whose standard deviation is below this many grey levels is blank (the black
# border around `retina`, the bare wall in `clock`) and is drawn again.
_BLANK_CROP_STD = 2.0
_MAX_CROP_TRIES = 10


@functools.cache
def load_photo(name):
    """Returns one bundled photo as a read-only uint8 `(H, W, 3)` array.

    Args:
        name: str. A name from `PHOTO_SOURCES`, e.g. `"astronaut"`. Grey photos
            are repeated over 3 channels.

    Returns:
        A read-only uint8 array of shape `(H, W, 3)`.

    Raises:
        ValueError: if `name` is not in `PHOTO_SOURCES`.
    """
    known = [photo for names in PHOTO_SOURCES.values() for photo in names]
    if name not in known:
        raise ValueError(f"`name` must be one of {known}. Received: name={name!r}")
    photo = np.asarray(getattr(skimage.data, name)(), dtype=np.uint8)
    if photo.ndim == 2:
        photo = np.repeat(photo[..., np.newaxis], 3, axis=-1)
    photo = np.ascontiguousarray(photo[..., :3])
    photo.flags.writeable = False
    return photo


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


def load_photos(crop_size=64, crops_per_photo=16, split="train", seed=0, return_sources=False):
    """Returns random square crops of the bundled CC0 / public-domain photos.

    Useful as natural images for inpainting, denoising or reconstruction tasks
    without any download. The photos of each split are listed in
    `PHOTO_SOURCES`:

    - `"train"`: astronaut, camera, coffee, rocket, hubble_deep_field, brick,
      grass, clock.
    - `"test"`: chelsea, retina, gravel, cell.

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

    Returns:
        uint8 array of shape `(len(PHOTO_SOURCES[split]) * crops_per_photo,
        crop_size, crop_size, 3)`, grouped photo by photo in the order of
        `PHOTO_SOURCES[split]`. With `return_sources=True`, a tuple
        `(crops, names, offsets)` where `names[i]` is the photo of crop `i` and
        `offsets[i]` its `(row, col)` top-left corner in that photo (after any
        upscaling).

    Raises:
        ValueError: if `split` is not `"train"` or `"test"`, or `crop_size` or
            `crops_per_photo` is not a positive int.

    Example:

    >>> crops = load_photos(crop_size=32, crops_per_photo=4, split="test")
    >>> crops.shape, crops.dtype
    ((16, 32, 32, 3), dtype('uint8'))
    """
    if split not in PHOTO_SOURCES:
        raise ValueError(
            f"`split` must be one of {sorted(PHOTO_SOURCES)}. Received: split={split!r}"
        )
    crop_size = check_positive_int(crop_size, "crop_size")
    crops_per_photo = check_positive_int(crops_per_photo, "crops_per_photo")
    all_names = sorted(name for names in PHOTO_SOURCES.values() for name in names)

    crops, names, offsets = [], [], []
    for name in PHOTO_SOURCES[split]:
        photo = _photo_at_least(name, crop_size)
        # One stream per photo, so a photo's crops do not depend on the other photos.
        rng = np.random.default_rng([seed, all_names.index(name)])
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
