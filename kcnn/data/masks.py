"""Hole masks for image inpainting: irregular strokes and blobs, or a folder of mask images.

Masks follow `kcnn.layers.PartialConv2D`: 1 marks a valid (known) pixel, 0 a hole.
"""

import os

import numpy as np

from kcnn._validation import check_positive_int, normalize_image_size
from kcnn.data._imaging import resize_image
from kcnn.data.folders import _check_directory, _image_files, read_image

# Hole-area ratio buckets of Liu et al. (2018), section 4.1: the test masks are grouped by
# the share of the image they cover, in steps of 10% up to 60%.
AREA_BUCKETS = tuple((round(0.1 * k, 1), round(0.1 * (k + 1), 1)) for k in range(6))
HOLE_COLORS = ("black", "white")
# A shape that would overshoot the bucket is drawn again this much thinner, this often.
_SHRINK = 0.7
_MAX_REJECTIONS = 60


def check_area_range(area_range):
    if (
        not isinstance(area_range, (tuple, list))
        or len(area_range) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in area_range)
        or not 0.0 <= area_range[0] < area_range[1] <= 1.0
    ):
        raise ValueError(
            "`area_range` must be a pair (low, high) with 0 <= low < high <= 1. "
            f"Received: area_range={area_range!r}"
        )
    return float(area_range[0]), float(area_range[1])


def _segment_distance(rows, cols, start, end):
    """Distance of every pixel centre to the segment from `start` to `end` (row, col)."""
    direction = end - start
    length_squared = max(float(direction @ direction), 1e-12)
    along = ((rows - start[0]) * direction[0] + (cols - start[1]) * direction[1]) / length_squared
    along = np.clip(along, 0.0, 1.0)
    return np.hypot(
        rows - (start[0] + along * direction[0]), cols - (start[1] + along * direction[1])
    )


def _stroke(rows, cols, rng, size, scale):
    """A brush stroke: a random walk of 1-5 straight segments with round ends and joints."""
    radius = max(0.5, scale * rng.uniform(0.01, 0.06) * size)
    point = rng.uniform(0, size, 2)
    hole = np.zeros(rows.shape, dtype=bool)
    angle = rng.uniform(0, 2 * np.pi)
    for _ in range(int(rng.integers(1, 6))):
        angle += rng.normal(0.0, 0.8)
        length = rng.uniform(0.1, 0.5) * size
        end = point + length * np.array([np.sin(angle), np.cos(angle)])
        hole |= _segment_distance(rows, cols, point, end) <= radius
        point = end
    return hole


def _blob(rows, cols, rng, size, scale):
    """A blob: a rotated ellipse whose radius wobbles with the angle."""
    centre = rng.uniform(0, size, 2)
    radii = scale * rng.uniform(0.03, 0.15, 2) * size + 0.5
    rotation = rng.uniform(0, np.pi)
    d_row, d_col = rows - centre[0], cols - centre[1]
    u = d_row * np.cos(rotation) + d_col * np.sin(rotation)
    v = -d_row * np.sin(rotation) + d_col * np.cos(rotation)
    theta = np.arctan2(v, u)
    wobble = 1.0 + 0.25 * np.sin(int(rng.integers(2, 6)) * theta + rng.uniform(0, 2 * np.pi))
    return (u / radii[0]) ** 2 + (v / radii[1]) ** 2 <= wobble**2


def irregular_mask(image_size, area_range, rng):
    """One irregular mask whose hole ratio lies in `area_range` (see `irregular_masks`).

    Args:
        image_size: `(height, width)`.
        area_range: `(low, high)` hole-area ratio, `0 <= low < high <= 1`.
        rng: a `numpy.random.Generator`.

    Returns:
        uint8 array `(height, width, 1)`, 1 = valid, 0 = hole.
    """
    height, width = image_size
    low, high = area_range
    total = height * width
    # The bucket's lower end is exclusive (a mask of the 0-10% bucket has a hole): the ratio
    # must reach at least one pixel above `low`.
    target = max(rng.uniform(low, high), low + 1.0 / total)
    # Its upper end is exclusive too: whole pixels stop at least one short of it.
    target = min(target, (np.ceil(high * total) - 1) / total)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    hole = np.zeros((height, width), dtype=bool)
    scale, rejections = 1.0, 0
    size = float(max(height, width))
    while hole.sum() < target * total:
        shape = (_stroke if rng.random() < 0.7 else _blob)(rows, cols, rng, size, scale)
        candidate = hole | shape
        if candidate.sum() >= high * total:
            # Overshoot: draw a thinner shape, until even single pixels fit.
            rejections += 1
            scale *= _SHRINK
            if rejections > _MAX_REJECTIONS:
                free = np.flatnonzero(~hole.ravel())
                needed = int(np.ceil(target * total)) - int(hole.sum())
                hole.ravel()[rng.choice(free, size=needed, replace=False)] = True
            continue
        hole = candidate
    return (~hole).astype(np.uint8)[..., np.newaxis]


def irregular_masks(count, image_size=64, area_range=(0.1, 0.2), seed=0):
    """Random irregular hole masks with a hole-area ratio inside `area_range`.

    In the spirit of the irregular masks of Liu, Reda, Shih, Wang, Tao & Catanzaro, "Image
    Inpainting for Irregular Holes Using Partial Convolutions", 2018 (arXiv:1804.07723):
    brush strokes (random walks of 1-5 straight segments, 1-12% of the image side thick,
    round ends) and wobbly elliptic blobs are drawn until the share of hole pixels reaches
    a ratio drawn uniformly in `area_range`; a shape that would reach the upper end is drawn
    again thinner, so every mask's ratio lies in `(low, high)` (at least one hole pixel
    above `low`). The paper groups test masks by ratio in buckets of 10% up to 60%
    (`AREA_BUCKETS`); pass one of them as `area_range`.

    Args:
        count: int >= 1. Number of masks.
        image_size: int or `(height, width)`. Defaults to `64`.
        area_range: `(low, high)` with `0 <= low < high <= 1`: the hole-area ratio of
            each mask lies in `(low, high)`. Defaults to `(0.1, 0.2)`.
        seed: int. Mask `i` depends only on `seed` and `i`, so the same seed gives the same
            masks and a longer list starts with a shorter one. Defaults to `0`.

    Returns:
        uint8 array `(count, height, width, 1)`: 1 = valid pixel, 0 = hole (the convention
        of `kcnn.layers.PartialConv2D`).

    Raises:
        ValueError: if `count` is not a positive int, `image_size` is not a positive size,
            or `area_range` is not a pair `0 <= low < high <= 1`.

    Example:

    >>> masks = irregular_masks(4, image_size=32, area_range=(0.2, 0.3), seed=1)
    >>> masks.shape, masks.dtype
    ((4, 32, 32, 1), dtype('uint8'))
    >>> ratios = hole_ratio(masks)
    >>> bool(np.all((ratios > 0.2) & (ratios < 0.3)))
    True
    """
    count = check_positive_int(count, "count")
    image_size = normalize_image_size(image_size)
    area_range = check_area_range(area_range)
    return np.stack(
        [
            irregular_mask(image_size, area_range, np.random.default_rng([seed, index]))
            for index in range(count)
        ]
    )


def bucketed_masks(count, image_size=64, buckets=AREA_BUCKETS, seed=0):
    """`count` masks whose hole ratios cycle through `buckets`: mask `i` falls in
    `buckets[i % len(buckets)]`.

    Args:
        count: int >= 1.
        image_size: int or `(height, width)`. Defaults to `64`.
        buckets: sequence of `(low, high)` ratio ranges. Defaults to `AREA_BUCKETS`
            (0-10%, ..., 50-60%).
        seed: int. Defaults to `0`.

    Returns:
        `(masks, bucket_index)`: uint8 `(count, height, width, 1)` and int64 `(count,)`.

    Example:

    >>> masks, bucket = bucketed_masks(12, image_size=32)
    >>> bucket[:7].tolist()
    [0, 1, 2, 3, 4, 5, 0]
    """
    count = check_positive_int(count, "count")
    image_size = normalize_image_size(image_size)
    buckets = [check_area_range(bucket) for bucket in buckets]
    if not buckets:
        raise ValueError("`buckets` must hold at least one (low, high) pair. Received: []")
    bucket_index = np.arange(count) % len(buckets)
    masks = np.stack(
        [
            irregular_mask(image_size, buckets[b], np.random.default_rng([seed, index]))
            for index, b in enumerate(bucket_index)
        ]
    )
    return masks, bucket_index.astype(np.int64)


def load_mask_folder(directory, image_size=None, holes="black", threshold=128):
    """Reads a folder of mask images (png, jpg, bmp, gif) as inpainting masks.

    Each file is read as greyscale and thresholded; `holes` says which side is the hole.
    NVIDIA's irregular mask data set, for instance, draws holes in black on white; other
    collections use white holes.

    Args:
        directory: str or path-like. Folder of mask images (sub-folders are not read).
        image_size: None, int or `(height, width)`. Resize every mask (nearest neighbour)
            to this size; None keeps the sizes, which must then all be equal. Defaults to
            None.
        holes: `"black"` (pixels below `threshold` are holes) or `"white"` (pixels at or
            above it are holes). Defaults to `"black"`.
        threshold: int in [1, 255]. Grey level separating the two sides. Defaults to 128.

    Returns:
        uint8 array `(N, height, width, 1)`, 1 = valid, 0 = hole, in file-name order.

    Raises:
        ValueError: if `holes` is not `"black"` or `"white"`, `threshold` is outside
            [1, 255], the folder holds no image, a file is not an image, or (without
            `image_size`) two masks differ in size; the message names the folder or file.
        FileNotFoundError: if `directory` does not exist.
    """
    if holes not in HOLE_COLORS:
        raise ValueError(f"`holes` must be one of {HOLE_COLORS}. Received: holes={holes!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, int) or not 1 <= threshold <= 255:
        raise ValueError(
            f"`threshold` must be an int in [1, 255]. Received: threshold={threshold!r}"
        )
    _check_directory(directory, "directory")
    files = _image_files(directory)
    if not files:
        raise ValueError(f"Mask folder '{directory}' holds no image file.")
    size = None if image_size is None else normalize_image_size(image_size)
    masks = []
    for path in files:
        grey = read_image(path, color_mode="grayscale")[..., 0]
        if size is not None:
            grey = resize_image(grey, *size, nearest=True)
        if masks and grey.shape != masks[0].shape:
            raise ValueError(
                f"Mask file '{os.fspath(path)}' is {grey.shape[1]}x{grey.shape[0]}, unlike "
                f"the first mask of '{directory}' ({masks[0].shape[1]}x{masks[0].shape[0]}); "
                "pass `image_size` to resize them."
            )
        valid = grey >= threshold if holes == "black" else grey < threshold
        masks.append(valid.astype(np.uint8))
    return np.stack(masks)[..., np.newaxis]


def hole_ratio(masks):
    """Share of hole pixels of each mask of a `(N, H, W, 1)` (or `(N, H, W)`) batch."""
    masks = np.asarray(masks)
    return 1.0 - masks.reshape(len(masks), -1).mean(axis=1, dtype=np.float64)
