"""Names -> classification datasets, so configs can pick data with a string."""

import dataclasses
import inspect

import numpy as np
import sklearn.model_selection

from kcnn._validation import check_fraction, check_positive_int, normalize_image_size
from kcnn.data._imaging import resize_image
from kcnn.data.digits import DIGITS_CLASSES, load_digits
from kcnn.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from kcnn.data.folders import load_image_folder, load_segmentation_folders
from kcnn.data.masks import (
    AREA_BUCKETS,
    bucketed_masks,
    check_area_range,
    irregular_masks,
    load_mask_folder,
)
from kcnn.data.photos import load_photos
from kcnn.data.shapes import make_shapes


@dataclasses.dataclass(eq=False)
class ImageData:
    """Images and their targets, split into train and test: the common base of every task's
    data set (what the targets are is the subclass's: labels, masks, hole masks, boxes).

    Attributes:
        x_train: uint8 array `(N_train, H, W, C)`.
        y_train: array `(N_train, ...)` of targets.
        x_test: uint8 array `(N_test, H, W, C)`.
        y_test: array `(N_test, ...)`.
        class_names: tuple of str (empty when the task has no classes).
        name: str. The registry name the data was loaded under.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple
    name: str

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def input_shape(self):
        return tuple(self.x_train.shape[1:])


class ClassificationData(ImageData):
    """A classification dataset split into train and test: `y_*` are int64 arrays `(N,)` of
    indices into `class_names`."""


def _resize_all(images, image_size):
    if image_size is None:
        return images
    height, width = normalize_image_size(image_size)
    return np.stack([resize_image(image, height, width) for image in images])


def _fashion_mnist(path=None, image_size=None, seed=0):
    # The official split is fixed; `seed` is accepted so every dataset takes the same kwargs.
    del seed
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist(path)
    x_train, x_test = _resize_all(x_train, image_size), _resize_all(x_test, image_size)
    return x_train, y_train, x_test, y_test, FASHION_MNIST_CLASSES


def _digits(test_fraction=0.2, image_size=None, seed=0):
    (x_train, y_train), (x_test, y_test) = load_digits(test_fraction=test_fraction, seed=seed)
    x_train, x_test = _resize_all(x_train, image_size), _resize_all(x_test, image_size)
    return x_train, y_train, x_test, y_test, DIGITS_CLASSES


def _image_folder(
    path, test_fraction=0.2, image_size=None, seed=0, color_mode="rgb", test_path=None
):
    images, labels, class_names = load_image_folder(path, image_size, color_mode)
    if test_path is not None:
        x_test, y_test, test_class_names = load_image_folder(test_path, image_size, color_mode)
        if test_class_names != class_names:
            raise ValueError(
                f"Test folder '{test_path}' has classes {list(test_class_names)} but "
                f"folder '{path}' has {list(class_names)}; expected the same class subfolders."
            )
        return images, labels, x_test, y_test, class_names
    check_fraction(test_fraction, "test_fraction")
    x_train, x_test, y_train, y_test = sklearn.model_selection.train_test_split(
        images, labels, test_size=test_fraction, stratify=labels, random_state=seed
    )
    return x_train, y_train, x_test, y_test, class_names


# Registry name -> builder returning (x_train, y_train, x_test, y_test, class_names). The keyword
# arguments of each builder are the ones `load_classification_data` accepts for that name.
CLASSIFICATION_DATASETS = {
    "fashion_mnist": _fashion_mnist,
    "digits": _digits,
    "image_folder": _image_folder,
}


def load_classification_data(name, **kwargs):
    """Loads a registered classification dataset by name.

    | name              | keyword arguments                                           |
    |-------------------|-------------------------------------------------------------|
    | `"fashion_mnist"` | `path=None`, `image_size=None`, `seed=0` (unused: the split |
    |                   | is the official one); see `load_fashion_mnist`              |
    | `"digits"`        | `test_fraction=0.2`, `image_size=None`, `seed=0`; see       |
    |                   | `load_digits`                                               |
    | `"image_folder"`  | `path` (required), `test_fraction=0.2`, `image_size=None`,  |
    |                   | `seed=0`, `color_mode="rgb"`, `test_path=None`              |

    `image_size` (int or `(height, width)`) resizes every image (bilinear).
    `"image_folder"` reads `path` with `load_image_folder` and splits it with a
    stratified seeded split, unless `test_path` names a second folder with the
    same class subfolders to use as the test set.

    Args:
        name: str. A key of `CLASSIFICATION_DATASETS`.
        **kwargs: keyword arguments of that dataset (table above).

    Returns:
        A `ClassificationData`.

    Raises:
        ValueError: if `name` is unknown (the message lists the known names), a
            keyword argument is not accepted by that dataset (the message names
            it and lists the accepted ones), or a required one is missing.

    Example:

    >>> data = load_classification_data("digits", test_fraction=0.25, seed=1)
    >>> data.x_train.shape[1:], data.class_names[:3]
    ((8, 8, 1), ('0', '1', '2'))
    """
    return _load(CLASSIFICATION_DATASETS, "classification", ClassificationData, name, kwargs)


def _load(registry, kind, data_class, name, kwargs):
    if name not in registry:
        raise ValueError(f"Unknown {kind} dataset `name`={name!r}. Known names: {sorted(registry)}")
    builder = registry[name]
    parameters = inspect.signature(builder).parameters
    unknown = sorted(set(kwargs) - set(parameters))
    if unknown:
        raise ValueError(
            f"Dataset {name!r} does not accept keyword argument(s) {unknown}. "
            f"Accepted: {list(parameters)}"
        )
    missing = [
        parameter
        for parameter, spec in parameters.items()
        if spec.default is inspect.Parameter.empty and parameter not in kwargs
    ]
    if missing:
        raise ValueError(f"Dataset {name!r} requires keyword argument(s) {missing}.")
    x_train, y_train, x_test, y_test, class_names, *extra = builder(**kwargs)
    return data_class(x_train, y_train, x_test, y_test, tuple(class_names), name, *extra)


class SegmentationData(ImageData):
    """A segmentation dataset split into train and test: `y_*` are uint8 masks `(N, H, W)`
    of class indices into `class_names` (index 0 is usually the background)."""


# Seeds of held-out `shapes` scenes are offset from the training seed by this much, so the
# two splits never share a scene.
TEST_SEED_OFFSET = 1_000_003


def _shapes(train_count=600, test_count=150, image_size=64, seed=0, max_shapes=3):
    train = make_shapes(train_count, image_size=image_size, seed=seed, max_shapes=max_shapes)
    test = make_shapes(
        test_count, image_size=image_size, seed=seed + TEST_SEED_OFFSET, max_shapes=max_shapes
    )
    return train.images, train.masks, test.images, test.masks, train.class_names


def _segmentation_folders(
    path,
    mask_path,
    class_names,
    test_fraction=0.2,
    image_size=None,
    seed=0,
    class_colors=None,
):
    images, masks = load_segmentation_folders(
        path, mask_path, image_size, class_colors=class_colors, num_classes=len(class_names)
    )
    check_fraction(test_fraction, "test_fraction")
    order = np.random.default_rng(seed).permutation(len(images))
    test_size = max(1, int(round(test_fraction * len(images))))
    test, train = order[:test_size], order[test_size:]
    return images[train], masks[train], images[test], masks[test], class_names


SEGMENTATION_DATASETS = {
    "shapes": _shapes,
    "segmentation_folders": _segmentation_folders,
}


def load_segmentation_data(name, **kwargs):
    """Loads a registered segmentation dataset by name.

    | name                     | keyword arguments                                       |
    |--------------------------|---------------------------------------------------------|
    | `"shapes"`               | `train_count=600`, `test_count=150`, `image_size=64`,   |
    |                          | `seed=0`, `max_shapes=3`; test scenes use another seed  |
    | `"segmentation_folders"` | `path` (images), `mask_path`, `class_names` (required), |
    |                          | `test_fraction=0.2`, `image_size`, `seed`,              |
    |                          | `class_colors` (RGB masks; see                          |
    |                          | `load_segmentation_folders`)                            |

    Returns:
        A `SegmentationData`.

    Raises:
        ValueError: for an unknown name or keyword argument (listing the accepted ones).

    Example:
    >>> data = load_segmentation_data("shapes", train_count=8, test_count=4, image_size=32)
    >>> data.x_train.shape, data.y_test.shape, data.class_names[0]
    ((8, 32, 32, 3), (4, 32, 32), 'background')
    """
    return _load(SEGMENTATION_DATASETS, "segmentation", SegmentationData, name, kwargs)


@dataclasses.dataclass(eq=False)
class InpaintingData(ImageData):
    """An inpainting dataset: images, each with a hole mask, split into train and test.

    Attributes:
        x_train, x_test: uint8 images `(N, H, W, C)`.
        y_train, y_test: uint8 masks `(N, H, W, 1)`, 1 = valid, 0 = hole. The test masks
            are fixed (seeded); a training image's mask is used when it is held out for
            validation, while training batches draw from `mask_pool`.
        class_names: `()` (no classes).
        name: str.
        mask_pool: uint8 masks `(M, H, W, 1)` that training batches draw from, a fresh
            draw (and random flips) for every image of every epoch.
    """

    mask_pool: np.ndarray = None


def _inpainting_masks(image_size, area_range, mask_pool_size, mask_path, mask_holes, seed, counts):
    """The training mask pool and one mask per training and test image."""
    train_count, test_count, test_buckets = counts
    rng = np.random.default_rng(seed)
    if mask_path is None:
        pool = irregular_masks(mask_pool_size, image_size, tuple(area_range), seed)
        # Test masks cycle through the buckets, drawn with their own seed.
        test_masks, _ = bucketed_masks(
            test_count, image_size, buckets=test_buckets, seed=seed + TEST_SEED_OFFSET
        )
    else:
        pool = load_mask_folder(mask_path, image_size, holes=mask_holes)
        test_masks = pool[rng.integers(0, len(pool), test_count)]
    train_masks = pool[rng.integers(0, len(pool), train_count)]
    return pool, train_masks, test_masks


def _photos(
    image_size=64,
    train_crops_per_photo=250,
    test_crops_per_photo=24,
    area_range=(0.0, 0.6),
    mask_pool_size=2000,
    mask_path=None,
    mask_holes="black",
    collection="all",
    seed=0,
):
    x_train = load_photos(image_size, train_crops_per_photo, "train", seed, collection=collection)
    x_test = load_photos(
        image_size, test_crops_per_photo, "test", seed + TEST_SEED_OFFSET, collection=collection
    )
    pool, train_masks, test_masks = _inpainting_masks(
        image_size,
        area_range,
        mask_pool_size,
        mask_path,
        mask_holes,
        seed,
        (len(x_train), len(x_test), AREA_BUCKETS),
    )
    return x_train, train_masks, x_test, test_masks, (), pool


# Fashion-MNIST's 28x28 items are padded with background (0) to this side, which a U-Net
# of depth <= 5 divides.
FASHION_HOLES_SIDE = 32


def _fashion_holes(
    path=None,
    train_size=12000,
    test_size=600,
    area_range=(0.3, 0.6),
    mask_pool_size=2000,
    seed=0,
):
    check_positive_int(train_size, "train_size")
    check_positive_int(test_size, "test_size")
    (x_train, _), (x_test, _) = load_fashion_mnist(path)
    rng = np.random.default_rng(seed)
    x_train = x_train[np.sort(rng.permutation(len(x_train))[:train_size])]
    x_test = x_test[:test_size]
    border = (FASHION_HOLES_SIDE - x_train.shape[1]) // 2
    pad = ((0, 0), (border, border), (border, border), (0, 0))
    x_train = np.pad(x_train.reshape(*x_train.shape[:3], 1), pad)
    x_test = np.pad(x_test.reshape(*x_test.shape[:3], 1), pad)
    low, high = check_area_range(area_range)
    buckets = [b for b in AREA_BUCKETS if b[0] >= low - 1e-9 and b[1] <= high + 1e-9] or [
        (low, high)
    ]
    pool, train_masks, test_masks = _inpainting_masks(
        FASHION_HOLES_SIDE,
        (low, high),
        mask_pool_size,
        None,
        "black",
        seed,
        (len(x_train), len(x_test), buckets),
    )
    return x_train, train_masks, x_test, test_masks, (), pool


INPAINTING_DATASETS = {"photos": _photos, "fashion_holes": _fashion_holes}


def load_inpainting_data(name, **kwargs):
    """Loads a registered inpainting dataset by name.

    | name              | keyword arguments                                                |
    |-------------------|------------------------------------------------------------------|
    | `"photos"`        | `image_size=64`, `train_crops_per_photo=250`,                    |
    |                   | `test_crops_per_photo=24`, `area_range=(0.0, 0.6)`,              |
    |                   | `mask_pool_size=2000`, `mask_path=None`, `mask_holes="black"`,   |
    |                   | `collection="all"`, `seed=0`                                     |
    | `"fashion_holes"` | `path=None`, `train_size=12000`, `test_size=600`,                |
    |                   | `area_range=(0.3, 0.6)`, `mask_pool_size=2000`, `seed=0`         |

    `"photos"` crops real photographs (`load_photos` of `collection`: by default
    scikit-image's 12 bundled photos and the 12 nature photos of Debian's
    `mate-backgrounds`): training crops from the training photos, test crops from the test
    photos, which training never sees.
    Training masks are a pool of `mask_pool_size` irregular masks (`irregular_masks`) with
    hole ratios in `area_range`; the test masks cycle through the hole-area buckets 0-10%,
    ..., 50-60% with another seed. With `mask_path`, the masks of that folder
    (`load_mask_folder(mask_path, image_size, holes=mask_holes)`) are the pool, and each
    test image gets one of them (seeded).

    `"fashion_holes"` is where a learned prior must win over interpolation: Fashion-MNIST
    items (`load_fashion_mnist(path)`, grey, padded with background to 32x32) with large
    irregular holes, ratios in `area_range`; `train_size` items drawn (seeded) from the
    training set, the first `test_size` of the test set, whose masks cycle through the
    hole-area buckets inside `area_range` (30-40%, 40-50%, 50-60% by default).

    Returns:
        An `InpaintingData`.

    Raises:
        ValueError: for an unknown name or keyword argument (listing the accepted ones).

    Example:
    >>> data = load_inpainting_data(
    ...     "photos", image_size=32, train_crops_per_photo=2, test_crops_per_photo=3,
    ...     mask_pool_size=8)
    >>> data.x_train.shape, data.y_test.shape, data.mask_pool.shape
    ((34, 32, 32, 3), (21, 32, 32, 1), (8, 32, 32, 1))
    """
    return _load(INPAINTING_DATASETS, "inpainting", InpaintingData, name, kwargs)
