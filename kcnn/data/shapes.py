"""Procedural shapes on real photo backgrounds, with exact masks and boxes."""

import dataclasses
import functools
import math

import numpy as np

from kcnn._validation import check_positive_int, normalize_image_size
from kcnn.data._imaging import resize_image
from kcnn.data.photos import PHOTO_SOURCES, load_photo

SHAPE_CLASSES = ("circle", "square", "triangle", "star")
SHAPES_CLASS_NAMES = ("background",) + SHAPE_CLASSES

BACKGROUNDS = ("photos", "plain")

# A star's inner vertices sit at this fraction of its outer radius; 0.5 keeps the arms thick
# enough to stay recognisable at 8 pixels.
_STAR_INNER_RATIO = 0.5
# Shapes smaller than this many visible pixels cannot be told apart, so they are never kept.
_MIN_VISIBLE_PIXELS = 8
# Euclidean RGB distance (out of 441) between a shape's colour and the mean colour under it.
_MIN_COLOR_DISTANCE = 100.0
_MAX_COLOR_TRIES = 32
_MAX_PLACEMENT_TRIES = 10


@dataclasses.dataclass(eq=False)
class ShapesData:
    """Images of shapes with per-pixel class masks and per-instance boxes.

    Attributes:
        images: uint8 array `(N, H, W, 3)`.
        masks: uint8 array `(N, H, W)`; the visible class of each pixel, 0 for
            background and `1..len(SHAPE_CLASSES)` for the shapes.
        boxes: list of N float32 arrays `(n_i, 4)`; `(x_min, y_min, x_max, y_max)`
            in pixels with exclusive max (`x_max` is the last column + 1), tight
            around the visible pixels of each instance.
        box_classes: list of N int32 arrays `(n_i,)`; class index of each box
            (1-based; 0 is background).
        class_names: tuple of str; `class_names[0] == "background"`.
        instance_ids: uint8 array `(N, H, W)`; 0 for background, `k` for the
            pixels of `boxes[i][k - 1]`.
    """

    images: np.ndarray
    masks: np.ndarray
    boxes: list
    box_classes: list
    class_names: tuple
    instance_ids: np.ndarray

    def __len__(self):
        return len(self.images)


def _pixel_centers(row_range, col_range):
    rows = np.arange(*row_range) + 0.5
    cols = np.arange(*col_range) + 0.5
    return np.meshgrid(cols, rows)


def _polygon_mask(vertices, height, width):
    """Pixels whose centre lies inside the polygon (even-odd rule).

    Pixel `(r, c)` covers `[c, c + 1) x [r, r + 1)` in `(x, y)` coordinates, so an
    axis-aligned square from `(x0, y0)` to `(x1, y1)` with integer corners fills
    exactly rows `y0..y1 - 1` and columns `x0..x1 - 1`.
    """
    mask = np.zeros((height, width), dtype=bool)
    xs, ys = vertices[:, 0], vertices[:, 1]
    col_range = (max(0, math.floor(xs.min())), min(width, math.ceil(xs.max()) + 1))
    row_range = (max(0, math.floor(ys.min())), min(height, math.ceil(ys.max()) + 1))
    if col_range[0] >= col_range[1] or row_range[0] >= row_range[1]:
        return mask
    x, y = _pixel_centers(row_range, col_range)
    inside = np.zeros(x.shape, dtype=bool)
    for (x1, y1), (x2, y2) in zip(vertices, np.roll(vertices, -1, axis=0), strict=True):
        if y1 == y2:
            continue  # A horizontal edge is never crossed by a horizontal ray.
        crosses = (y1 > y) != (y2 > y)
        x_cross = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (x < x_cross)
    mask[row_range[0] : row_range[1], col_range[0] : col_range[1]] = inside
    return mask


def _disk_mask(center, radius, height, width):
    mask = np.zeros((height, width), dtype=bool)
    cx, cy = center
    col_range = (max(0, math.floor(cx - radius)), min(width, math.ceil(cx + radius) + 1))
    row_range = (max(0, math.floor(cy - radius)), min(height, math.ceil(cy + radius) + 1))
    if col_range[0] >= col_range[1] or row_range[0] >= row_range[1]:
        return mask
    x, y = _pixel_centers(row_range, col_range)
    inside = (x - cx) ** 2 + (y - cy) ** 2 <= radius**2
    mask[row_range[0] : row_range[1], col_range[0] : col_range[1]] = inside
    return mask


def _shape_vertices(kind, center, size, angle):
    if kind == "square":
        corner_angles = np.pi / 4 + np.arange(4) * np.pi / 2
        radii = np.full(4, size / math.sqrt(2))
    elif kind == "triangle":
        # Equilateral with side `size`, apex up when `angle == 0`.
        corner_angles = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        radii = np.full(3, size / math.sqrt(3))
    elif kind == "star":
        corner_angles = -np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, size / 2, size / 2 * _STAR_INNER_RATIO)
    else:
        raise ValueError(f"`kind` must be one of {SHAPE_CLASSES}. Received: kind={kind!r}")
    corner_angles = corner_angles + angle
    return np.stack(
        [center[0] + radii * np.cos(corner_angles), center[1] + radii * np.sin(corner_angles)],
        axis=-1,
    )


def _circumradius(kind, size):
    if kind == "square":
        return size / math.sqrt(2)
    if kind == "triangle":
        return size / math.sqrt(3)
    return size / 2


def _draw_shape(kind, center, size, angle, image_shape):
    """Rasterises one shape into a boolean `(height, width)` mask.

    Args:
        kind: str. One of `SHAPE_CLASSES`.
        center: `(x, y)` centre in pixel coordinates (pixel `(r, c)` spans
            `[c, c + 1) x [r, r + 1)`).
        size: float. Circle diameter, square side, triangle side, or star outer
            diameter.
        angle: float. Rotation in radians (ignored for circles).
        image_shape: `(height, width)`.
    """
    height, width = image_shape
    if kind == "circle":
        return _disk_mask(center, size / 2, height, width)
    return _polygon_mask(_shape_vertices(kind, center, size, angle), height, width)


def _contrasting_color(rng, reference):
    """A random RGB colour at least `_MIN_COLOR_DISTANCE` from `reference` when possible."""
    best_color, best_distance = None, -1.0
    for _ in range(_MAX_COLOR_TRIES):
        color = rng.integers(0, 256, size=3)
        distance = float(np.linalg.norm(color - reference))
        if distance >= _MIN_COLOR_DISTANCE:
            return color.astype(np.uint8)
        if distance > best_distance:
            best_color, best_distance = color, distance
    return best_color.astype(np.uint8)


@functools.lru_cache(maxsize=8)
def _background_pool(height, width):
    """All bundled photos rescaled so that a crop of twice the image size just fits."""
    pool = []
    for name in sorted(name for names in PHOTO_SOURCES.values() for name in names):
        photo = load_photo(name)
        scale = 2 * max(height / photo.shape[0], width / photo.shape[1])
        pool.append(
            resize_image(
                photo,
                max(2 * height, round(photo.shape[0] * scale)),
                max(2 * width, round(photo.shape[1] * scale)),
            )
        )
    return pool


def _photo_background(rng, height, width):
    pool = _background_pool(height, width)
    photo = pool[int(rng.integers(len(pool)))]
    scale = rng.uniform(1.0, 2.0)
    crop_height, crop_width = round(height * scale), round(width * scale)
    row = int(rng.integers(0, photo.shape[0] - crop_height + 1))
    col = int(rng.integers(0, photo.shape[1] - crop_width + 1))
    crop = photo[row : row + crop_height, col : col + crop_width]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return resize_image(crop, height, width)


def _make_scene(
    rng, height, width, backgrounds, max_shapes, min_size, max_size, min_visible_fraction
):
    if backgrounds == "photos":
        image = _photo_background(rng, height, width)
    else:
        image = np.broadcast_to(rng.integers(0, 256, size=3).astype(np.uint8), (height, width, 3))
        image = image.copy()
    instance_ids = np.zeros((height, width), dtype=np.uint8)
    classes, areas = [], []
    for _ in range(int(rng.integers(1, max_shapes + 1))):
        for _ in range(_MAX_PLACEMENT_TRIES):
            class_index = int(rng.integers(len(SHAPE_CLASSES)))
            kind = SHAPE_CLASSES[class_index]
            size = rng.uniform(min_size, max_size)
            angle = 0.0 if kind == "circle" else rng.uniform(0, 2 * np.pi)
            radius = _circumradius(kind, size)
            center = (
                rng.uniform(min(radius, width / 2), max(width - radius, width / 2)),
                rng.uniform(min(radius, height / 2), max(height - radius, height / 2)),
            )
            shape_mask = _draw_shape(kind, center, size, angle, (height, width))
            area = int(shape_mask.sum())
            if area < _MIN_VISIBLE_PIXELS:
                continue
            candidate = np.where(shape_mask, len(classes) + 1, instance_ids).astype(np.uint8)
            visible = np.bincount(candidate.ravel(), minlength=len(classes) + 2)[1:]
            needed = [
                max(min_visible_fraction * drawn_area, _MIN_VISIBLE_PIXELS)
                for drawn_area in areas + [area]
            ]
            if np.all(visible >= np.asarray(needed)):
                color = _contrasting_color(rng, image[shape_mask].mean(axis=0))
                image[shape_mask] = color
                instance_ids = candidate
                classes.append(class_index + 1)
                areas.append(area)
                break

    boxes = np.zeros((len(classes), 4), dtype=np.float32)
    for index in range(len(classes)):
        rows, cols = np.nonzero(instance_ids == index + 1)
        boxes[index] = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
    class_of_instance = np.asarray([0] + classes, dtype=np.uint8)
    return (
        image,
        class_of_instance[instance_ids],
        instance_ids,
        boxes,
        np.asarray(classes, np.int32),
    )


def make_shapes(
    count,
    image_size=64,
    seed=0,
    max_shapes=3,
    min_size=None,
    max_size=None,
    backgrounds="photos",
    min_visible_fraction=0.5,
):
    """Generates scenes of coloured shapes with exact class masks and boxes.

    Each image shows 1 to `max_shapes` shapes from `SHAPE_CLASSES` (circle,
    square, triangle, star), each filled with a random solid colour chosen to
    contrast with the mean colour beneath it, on a random crop of a bundled
    public-domain photo (`PHOTO_SOURCES`, both splits). Later shapes occlude
    earlier ones; `masks` holds the visible class of each pixel and every box is
    the tight box of its instance's visible pixels. A shape is placed only where
    every shape in the image, old and new, keeps at least `min_visible_fraction`
    of its pixels (and at least 8 pixels) visible; otherwise it is placed again
    (up to 10 tries) or left out, so no kept box is hidden and no visible shape
    lacks a box.

    Images are drawn from `numpy.random.default_rng([seed, index])`, so the same
    seed gives identical arrays and `make_shapes(n, seed=s)` is a prefix of
    `make_shapes(m, seed=s)` for `m > n`.

    Args:
        count: int. Number of images (0 allowed).
        image_size: int or tuple `(height, width)`, each >= 16. Defaults to `64`.
        seed: int. Defaults to `0`.
        max_shapes: int in `[1, 255]`. Most shapes per image. Defaults to `3`.
        min_size: int or None. Smallest shape size in pixels (circle diameter,
            square side, triangle side, star outer diameter), >= 6. Defaults to
            `None`, meaning `max(8, min(height, width) // 8)`.
        max_size: int or None. Largest shape size, in `[min_size, min(height,
            width)]`. Defaults to `None`, meaning `min(height, width) // 2`.
        backgrounds: str. `"photos"` (random photo crops) or `"plain"` (one
            random colour per image). Defaults to `"photos"`.
        min_visible_fraction: float in `[0, 1]`. Defaults to `0.5`.

    Returns:
        A `ShapesData` with `images` uint8 `(count, H, W, 3)`, `masks` uint8
        `(count, H, W)`, `boxes` (float32 `(n_i, 4)` xyxy, exclusive max),
        `box_classes` (int32, 1-based), `class_names` (`"background"` first) and
        `instance_ids` uint8 `(count, H, W)`.

    Raises:
        ValueError: if an argument is out of range; the message names it.

    Example:

    >>> data = make_shapes(8, image_size=64, seed=0)
    >>> data.images.shape, data.masks.shape, data.class_names[1]
    ((8, 64, 64, 3), (8, 64, 64), 'circle')
    """
    count = check_positive_int(count, "count", minimum=0)
    height, width = normalize_image_size(image_size, minimum=16)
    max_shapes = check_positive_int(max_shapes, "max_shapes")
    if max_shapes > 255:
        raise ValueError(f"`max_shapes` must be <= 255. Received: max_shapes={max_shapes}")
    side = min(height, width)
    if min_size is None:
        min_size = max(8, side // 8)
    min_size = check_positive_int(min_size, "min_size", minimum=6)
    max_size = check_positive_int(
        max(side // 2, min_size) if max_size is None else max_size, "max_size", minimum=6
    )
    if not min_size <= max_size <= side:
        raise ValueError(
            "`min_size` and `max_size` must satisfy min_size <= max_size <= "
            f"min(height, width)={side}. Received: min_size={min_size}, max_size={max_size}"
        )
    if backgrounds not in BACKGROUNDS:
        raise ValueError(
            f"`backgrounds` must be one of {BACKGROUNDS}. Received: backgrounds={backgrounds!r}"
        )
    if not 0.0 <= min_visible_fraction <= 1.0:
        raise ValueError(
            "`min_visible_fraction` must be in [0, 1]. "
            f"Received: min_visible_fraction={min_visible_fraction!r}"
        )

    images = np.zeros((count, height, width, 3), dtype=np.uint8)
    masks = np.zeros((count, height, width), dtype=np.uint8)
    instance_ids = np.zeros((count, height, width), dtype=np.uint8)
    boxes, box_classes = [], []
    for index in range(count):
        rng = np.random.default_rng([seed, index])
        image, mask, ids, image_boxes, classes = _make_scene(
            rng, height, width, backgrounds, max_shapes, min_size, max_size, min_visible_fraction
        )
        images[index], masks[index], instance_ids[index] = image, mask, ids
        boxes.append(image_boxes)
        box_classes.append(classes)
    return ShapesData(images, masks, boxes, box_classes, SHAPES_CLASS_NAMES, instance_ids)
