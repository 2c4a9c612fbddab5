"""Datasets and tf.data pipelines: built-in offline data, user folders and COCO json.

Built-in data needs no network: Fashion-MNIST from the Debian package
`dataset-fashion-mnist`, scikit-learn's 8x8 digits, procedural shapes on
scikit-image's public-domain photos, and crops of those photos.
"""

from kcnn.data.digits import DIGITS_CLASSES, load_digits
from kcnn.data.fashion_mnist import (
    DEFAULT_FASHION_MNIST_DIR,
    FASHION_MNIST_CLASSES,
    load_fashion_mnist,
)
from kcnn.data.folders import (
    IMAGE_EXTENSIONS,
    load_coco_detection,
    load_image_folder,
    load_segmentation_folders,
    read_image,
)
from kcnn.data.idx import read_idx
from kcnn.data.photos import PHOTO_SOURCES, load_photo, load_photos
from kcnn.data.pipeline import AUGMENTATIONS, make_dataset, make_segmentation_dataset
from kcnn.data.registry import (
    CLASSIFICATION_DATASETS,
    SEGMENTATION_DATASETS,
    ClassificationData,
    SegmentationData,
    load_classification_data,
    load_segmentation_data,
)
from kcnn.data.shapes import SHAPE_CLASSES, SHAPES_CLASS_NAMES, ShapesData, make_shapes
from kcnn.data.subsets import per_class_subset

__all__ = [
    "AUGMENTATIONS",
    "CLASSIFICATION_DATASETS",
    "ClassificationData",
    "SEGMENTATION_DATASETS",
    "SegmentationData",
    "DEFAULT_FASHION_MNIST_DIR",
    "DIGITS_CLASSES",
    "FASHION_MNIST_CLASSES",
    "IMAGE_EXTENSIONS",
    "PHOTO_SOURCES",
    "SHAPE_CLASSES",
    "SHAPES_CLASS_NAMES",
    "ShapesData",
    "load_classification_data",
    "load_coco_detection",
    "load_digits",
    "load_fashion_mnist",
    "load_image_folder",
    "load_photo",
    "load_photos",
    "load_segmentation_data",
    "load_segmentation_folders",
    "make_dataset",
    "make_segmentation_dataset",
    "make_shapes",
    "per_class_subset",
    "read_idx",
    "read_image",
]
