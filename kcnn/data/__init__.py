"""Datasets and tf.data pipelines: built-in offline data, user folders and COCO json.

Built-in data needs no network: Fashion-MNIST from the Debian package
`dataset-fashion-mnist`, scikit-learn's 8x8 digits, procedural shapes on
scikit-image's public-domain photos, crops of those photos and of the nature photos of
Debian's `mate-backgrounds`, and irregular hole masks.
"""

from kcnn.data.augment import (
    LIST_AUGMENTATIONS,
    PCALighting,
    augmentation_layers,
    pca_lighting_basis,
)
from kcnn.data.detection import (
    DETECTION_AUGMENTATIONS,
    DETECTION_DATASETS,
    DetectionData,
    instance_masks,
    instance_targets,
    load_detection_data,
    make_detection_dataset,
    pad_boxes,
)
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
from kcnn.data.localization import (
    ITEM_THRESHOLD,
    LOCALIZATION_AUGMENTATIONS,
    LOCALIZATION_DATASETS,
    LocalizationData,
    load_localization_data,
    make_localization_dataset,
    paste_items,
)
from kcnn.data.masks import (
    AREA_BUCKETS,
    bucketed_masks,
    hole_ratio,
    irregular_masks,
    load_mask_folder,
)
from kcnn.data.photos import (
    MATE_PHOTO_SOURCES,
    PHOTO_COLLECTIONS,
    PHOTO_SOURCES,
    load_photo,
    load_photos,
)
from kcnn.data.pipeline import (
    AUGMENTATIONS,
    CLASSIFICATION_AUGMENTATIONS,
    make_dataset,
    make_inpainting_dataset,
    make_segmentation_dataset,
)
from kcnn.data.registry import (
    CLASSIFICATION_DATASETS,
    INPAINTING_DATASETS,
    SEGMENTATION_DATASETS,
    ClassificationData,
    ImageData,
    InpaintingData,
    SegmentationData,
    load_classification_data,
    load_inpainting_data,
    load_segmentation_data,
)
from kcnn.data.rle import decode_mask, encode_mask
from kcnn.data.shapes import SHAPE_CLASSES, SHAPES_CLASS_NAMES, ShapesData, make_shapes
from kcnn.data.subsets import per_class_subset, split_validation

__all__ = [
    "AREA_BUCKETS",
    "AUGMENTATIONS",
    "CLASSIFICATION_AUGMENTATIONS",
    "CLASSIFICATION_DATASETS",
    "ClassificationData",
    "ImageData",
    "DETECTION_AUGMENTATIONS",
    "DETECTION_DATASETS",
    "DetectionData",
    "INPAINTING_DATASETS",
    "InpaintingData",
    "LIST_AUGMENTATIONS",
    "LOCALIZATION_AUGMENTATIONS",
    "LOCALIZATION_DATASETS",
    "LocalizationData",
    "PCALighting",
    "SEGMENTATION_DATASETS",
    "SegmentationData",
    "DEFAULT_FASHION_MNIST_DIR",
    "DIGITS_CLASSES",
    "FASHION_MNIST_CLASSES",
    "IMAGE_EXTENSIONS",
    "ITEM_THRESHOLD",
    "MATE_PHOTO_SOURCES",
    "PHOTO_COLLECTIONS",
    "PHOTO_SOURCES",
    "SHAPE_CLASSES",
    "SHAPES_CLASS_NAMES",
    "ShapesData",
    "augmentation_layers",
    "bucketed_masks",
    "decode_mask",
    "encode_mask",
    "hole_ratio",
    "instance_masks",
    "instance_targets",
    "irregular_masks",
    "load_classification_data",
    "load_coco_detection",
    "load_detection_data",
    "load_digits",
    "load_fashion_mnist",
    "load_image_folder",
    "load_inpainting_data",
    "load_localization_data",
    "load_mask_folder",
    "load_photo",
    "load_photos",
    "load_segmentation_data",
    "load_segmentation_folders",
    "make_dataset",
    "make_detection_dataset",
    "make_inpainting_dataset",
    "make_localization_dataset",
    "make_segmentation_dataset",
    "make_shapes",
    "pad_boxes",
    "paste_items",
    "pca_lighting_basis",
    "per_class_subset",
    "split_validation",
    "read_idx",
    "read_image",
]
