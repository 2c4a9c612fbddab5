"""User data from disk: class-per-folder images, segmentation pairs, COCO detection json."""

import json
import os

import numpy as np
import PIL.Image

from kcnn._validation import normalize_image_size
from kcnn.data._imaging import resize_image
from kcnn.data.rle import decode_mask

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
COLOR_MODES = ("rgb", "grayscale")

# Errors PIL raises for files it cannot identify or decode (UnidentifiedImageError and
# "image file is truncated" are OSErrors; some plugins raise SyntaxError or ValueError).
_PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError, PIL.Image.DecompressionBombError)


def _check_directory(directory, argument):
    if not os.path.exists(directory):
        raise FileNotFoundError(f"`{argument}` directory '{directory}' does not exist.")
    if not os.path.isdir(directory):
        raise NotADirectoryError(f"`{argument}` '{directory}' is a file, expected a directory.")


def _image_files(directory):
    """Sorted paths of the image files directly inside `directory` (hidden files skipped)."""
    names = sorted(
        name
        for name in os.listdir(directory)
        if not name.startswith(".")
        and name.lower().endswith(IMAGE_EXTENSIONS)
        and os.path.isfile(os.path.join(directory, name))
    )
    return [os.path.join(directory, name) for name in names]


def _open_image(path):
    try:
        image = PIL.Image.open(path)
        image.load()
    except _PIL_ERRORS as error:
        raise ValueError(f"Could not read image file '{path}': {error}") from None
    return image


def read_image(path, color_mode="rgb"):
    """Reads one image file as uint8 `(H, W, 3)` (`"rgb"`) or `(H, W, 1)` (`"grayscale"`).

    GIFs give their first frame; transparency is dropped.

    Args:
        path: str or path-like. A png, jpg, bmp or gif file.
        color_mode: str. `"rgb"` or `"grayscale"`. Defaults to `"rgb"`.

    Returns:
        uint8 array `(H, W, 3)` or `(H, W, 1)`.

    Raises:
        ValueError: if the file is corrupt or not an image (the message names the
            file), or `color_mode` is unknown.
    """
    if color_mode not in COLOR_MODES:
        raise ValueError(
            f"`color_mode` must be one of {COLOR_MODES}. Received: color_mode={color_mode!r}"
        )
    path = os.fspath(path)
    with _open_image(path) as image:
        array = np.asarray(image.convert("RGB" if color_mode == "rgb" else "L"))
    return array if array.ndim == 3 else array[..., np.newaxis]


def _colors_to_indices(array, path, class_colors):
    """Maps an RGB mask to class indices by exact colour; any other colour is an error."""
    rgb = array[..., :3].astype(np.int64)
    codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    palette = {(r << 16) | (g << 8) | b: index for index, (r, g, b) in enumerate(class_colors)}
    unknown = np.setdiff1d(np.unique(codes), list(palette))
    if unknown.size:
        first = int(unknown[0])
        colour = ((first >> 16) & 255, (first >> 8) & 255, first & 255)
        raise ValueError(
            f"Mask file '{path}' has colour {colour} that is not in `class_colors` "
            f"({len(class_colors)} colours)."
        )
    lookup = np.zeros(int(codes.max()) + 1, dtype=np.uint8)
    for code, index in palette.items():
        if code < lookup.size:
            lookup[code] = index
    return lookup[codes]


def _read_mask(path, class_colors=None, num_classes=None):
    """Reads a class-index mask: palette, grey or 1-bit PNGs, or RGB with equal channels.

    With `class_colors`, an RGB(A) mask is mapped to class indices by colour instead. With
    `num_classes`, an index at or above it is an error naming the file.
    """
    with _open_image(path) as image:
        array = np.asarray(image)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if class_colors is not None:
        if array.ndim != 3:
            raise ValueError(
                f"Mask file '{path}' is single-channel; `class_colors` expects RGB masks."
            )
        return _colors_to_indices(array, path, class_colors)
    if array.ndim == 3:
        if not np.all(array[..., :3] == array[..., :1]):
            raise ValueError(
                f"Mask file '{path}' has colour pixels; expected a single-channel image of "
                "class indices (grey, palette or 1-bit)."
            )
        array = array[..., 0]
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError(
            f"Mask file '{path}' holds class indices outside [0, 255]: "
            f"min={array.min()}, max={array.max()}."
        )
    if num_classes is not None and array.size and array.max() >= num_classes:
        raise ValueError(
            f"Mask file '{path}' holds class index {array.max()}, but there are only "
            f"{num_classes} classes (indices 0 to {num_classes - 1})."
        )
    return array.astype(np.uint8)


def _stack_same_size(arrays, paths, image_size, nearest=False):
    if image_size is not None:
        height, width = image_size
        return np.stack([resize_image(array, height, width, nearest) for array in arrays])
    for array, path in zip(arrays, paths, strict=True):
        if array.shape[:2] != arrays[0].shape[:2]:
            raise ValueError(
                f"Image file '{path}' has size {array.shape[0]}x{array.shape[1]} (HxW) but "
                f"'{paths[0]}' has {arrays[0].shape[0]}x{arrays[0].shape[1]}; all images must "
                "have the same size unless `image_size` is given."
            )
    return np.stack(arrays)


def load_image_folder(directory, image_size=None, color_mode="rgb"):
    """Loads a classification dataset stored as one subfolder per class.

    ```
    directory/
      cat/  001.png  002.jpg ...
      dog/  a.bmp ...
    ```

    Class names are the subfolder names in sorted order and labels index them.
    Files with other extensions and hidden entries are ignored. Everything is
    read into memory, so this suits small datasets.

    Args:
        directory: str or path-like. Root folder.
        image_size: int, tuple `(height, width)` or None. Size to resize every
            image to (bilinear). Defaults to `None`: keep the files' size, which
            must then be the same for all images.
        color_mode: str. `"rgb"` (3 channels) or `"grayscale"` (1 channel).
            Defaults to `"rgb"`.

    Returns:
        `(images, labels, class_names)`: uint8 `(N, H, W, C)`, int64 `(N,)` and a
        tuple of str.

    Raises:
        FileNotFoundError: if `directory` does not exist.
        NotADirectoryError: if `directory` is a file.
        ValueError: if there are no class subfolders, a class subfolder holds no
            images, an image file is corrupt, or sizes differ without
            `image_size`; the message names the folder or file.

    Example:

        images, labels, class_names = load_image_folder("flowers/", image_size=64)
        images.shape[1:], class_names[labels[0]]
        # ((64, 64, 3), 'daisy')
    """
    directory = os.fspath(directory)
    if image_size is not None:
        image_size = normalize_image_size(image_size)
    if color_mode not in COLOR_MODES:
        raise ValueError(
            f"`color_mode` must be one of {COLOR_MODES}. Received: color_mode={color_mode!r}"
        )
    _check_directory(directory, "directory")
    class_names = tuple(
        sorted(
            name
            for name in os.listdir(directory)
            if not name.startswith(".") and os.path.isdir(os.path.join(directory, name))
        )
    )
    if not class_names:
        raise ValueError(
            f"Image folder '{directory}' has no class subfolders; expected one subfolder per "
            f"class holding its images, e.g. '{os.path.join(directory, 'cat', '001.png')}'."
        )
    paths, labels = [], []
    for label, class_name in enumerate(class_names):
        class_dir = os.path.join(directory, class_name)
        files = _image_files(class_dir)
        if not files:
            raise ValueError(
                f"Class folder '{class_dir}' holds no images; expected files ending in "
                f"{', '.join(IMAGE_EXTENSIONS)}."
            )
        paths.extend(files)
        labels.extend([label] * len(files))
    images = [read_image(path, color_mode) for path in paths]
    images = _stack_same_size(images, paths, image_size)
    return images, np.asarray(labels, dtype=np.int64), class_names


def _files_by_stem(directory, argument):
    _check_directory(directory, argument)
    files = _image_files(directory)
    if not files:
        raise ValueError(
            f"`{argument}` '{directory}' holds no images; expected files ending in "
            f"{', '.join(IMAGE_EXTENSIONS)}."
        )
    by_stem = {}
    for path in files:
        stem = os.path.splitext(os.path.basename(path))[0]
        if stem in by_stem:
            raise ValueError(
                f"Files '{by_stem[stem]}' and '{path}' have the same name stem '{stem}'; "
                "images and masks are paired by stem, so each stem must be unique."
            )
        by_stem[stem] = path
    return by_stem


def load_segmentation_folders(
    image_dir, mask_dir, image_size=None, class_colors=None, num_classes=None
):
    """Loads a segmentation dataset from an image folder and a mask folder.

    Images and masks are paired by file stem (`image_dir/road_01.jpg` with
    `mask_dir/road_01.png`). A mask is an image of class indices: grey ("L"),
    palette ("P", whose indices are used) or 1-bit PNGs, or RGB whose channels
    are equal. Use a lossless format for masks (png, bmp, gif).

    Args:
        image_dir: str or path-like. Folder of images.
        mask_dir: str or path-like. Folder of masks.
        image_size: int, tuple `(height, width)` or None. Size to resize to
            (bilinear for images, nearest for masks). Defaults to `None`: keep the
            files' size, which must then be the same for all pairs.
        class_colors: None or a sequence of `(r, g, b)` colours, one per class: masks are
            RGB images painted in these colours (class k = `class_colors[k]`); any other
            colour is an error naming the file. Defaults to `None` (index masks).
        num_classes: None or int. With index masks, an index >= `num_classes` is an error
            naming the file. Defaults to `None` (no check).

    Returns:
        `(images, masks)`: uint8 `(N, H, W, 3)` and uint8 `(N, H, W)`, in sorted
        stem order.

    Raises:
        FileNotFoundError: if a folder does not exist, or an image has no mask
            or a mask no image (the message names the file and the folder
            searched).
        NotADirectoryError: if a folder argument is a file.
        ValueError: if a folder holds no images, two files share a stem, a file
            is corrupt, a mask's size differs from its image's (the message names
            both files), a mask has colour pixels, or sizes differ without
            `image_size`.

    Example:

        images, masks = load_segmentation_folders("data/images", "data/masks", 128)
        images.shape[1:], masks.shape[1:]
        # ((128, 128, 3), (128, 128))
    """
    image_dir, mask_dir = os.fspath(image_dir), os.fspath(mask_dir)
    if image_size is not None:
        image_size = normalize_image_size(image_size)
    image_files = _files_by_stem(image_dir, "image_dir")
    mask_files = _files_by_stem(mask_dir, "mask_dir")
    for stem, path in sorted(image_files.items()):
        if stem not in mask_files:
            raise FileNotFoundError(
                f"Image file '{path}' has no mask: expected a file named '{stem}.<ext>' in "
                f"mask directory '{mask_dir}'."
            )
    for stem, path in sorted(mask_files.items()):
        if stem not in image_files:
            raise FileNotFoundError(
                f"Mask file '{path}' has no image: expected a file named '{stem}.<ext>' in "
                f"image directory '{image_dir}'."
            )

    stems = sorted(image_files)
    images, masks = [], []
    for stem in stems:
        image = read_image(image_files[stem])
        mask = _read_mask(mask_files[stem], class_colors, num_classes)
        if mask.shape != image.shape[:2]:
            raise ValueError(
                f"Mask file '{mask_files[stem]}' has size {mask.shape[0]}x{mask.shape[1]} (HxW) "
                f"but its image '{image_files[stem]}' has {image.shape[0]}x{image.shape[1]}; "
                "a mask must have its image's size."
            )
        images.append(image)
        masks.append(mask)
    image_paths = [image_files[stem] for stem in stems]
    images = _stack_same_size(images, image_paths, image_size)
    masks = _stack_same_size(masks, image_paths, image_size, nearest=True)
    return images, masks


def _coco_field(record, key, annotation_file, where):
    if not isinstance(record, dict) or key not in record:
        raise ValueError(f"COCO annotation file '{annotation_file}': {where} has no field '{key}'.")
    return record[key]


def _read_coco_json(annotation_file, include_crowd):
    """Returns `(images_info, annotations_by_image, class_index, class_names, category_ids)`."""
    try:
        with open(annotation_file, encoding="utf-8") as file:
            coco = json.load(file)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(
            f"COCO annotation file '{annotation_file}' is not valid json: {error}"
        ) from None
    images_info = _coco_field(coco, "images", annotation_file, "the top level")
    annotations = _coco_field(coco, "annotations", annotation_file, "the top level")
    categories = _coco_field(coco, "categories", annotation_file, "the top level")

    for category in categories:
        _coco_field(category, "id", annotation_file, "a category")
        _coco_field(category, "name", annotation_file, f"category {category['id']}")
    categories = sorted(categories, key=lambda category: category["id"])
    category_ids = tuple(category["id"] for category in categories)
    class_index = {category_id: index + 1 for index, category_id in enumerate(category_ids)}
    class_names = ("background",) + tuple(str(category["name"]) for category in categories)

    annotations_by_image = {}
    for info in images_info:
        image_id = _coco_field(info, "id", annotation_file, "an image")
        _coco_field(info, "file_name", annotation_file, f"image {image_id}")
        annotations_by_image[image_id] = []
    for annotation in annotations:
        where = f"annotation {annotation.get('id', '?') if isinstance(annotation, dict) else '?'}"
        for key in ("image_id", "category_id", "bbox"):
            _coco_field(annotation, key, annotation_file, where)
        if annotation["image_id"] not in annotations_by_image:
            raise ValueError(
                f"COCO annotation file '{annotation_file}': {where} refers to image_id "
                f"{annotation['image_id']}, which is not in `images`."
            )
        if annotation["category_id"] not in class_index:
            raise ValueError(
                f"COCO annotation file '{annotation_file}': {where} refers to category_id "
                f"{annotation['category_id']}, which is not in `categories` "
                f"(ids {list(category_ids)})."
            )
        if include_crowd or not annotation.get("iscrowd", 0):
            annotations_by_image[annotation["image_id"]].append(annotation)
    return images_info, annotations_by_image, class_index, class_names, category_ids


def _coco_masks(annotations, path, height, width):
    """The 0/1 masks `(n, H, W)` of one image's annotations' segmentations."""
    masks = np.zeros((len(annotations), height, width), dtype=np.uint8)
    for index, annotation in enumerate(annotations):
        where = f"Annotation {annotation.get('id', '?')} of image file '{path}'"
        if "segmentation" not in annotation:
            raise ValueError(f"{where} has no segmentation (`masks=True` needs one).")
        try:
            mask = decode_mask(annotation["segmentation"], height, width)
        except (ValueError, TypeError) as error:
            raise ValueError(f"{where}: {error}") from None
        if mask.shape != (height, width):
            raise ValueError(
                f"{where} has a segmentation of size {mask.shape} (HxW); the image is "
                f"{height}x{width}."
            )
        masks[index] = mask
    return masks


def _coco_boxes(annotations, class_index, path, height, width):
    """Converts one image's annotations to xyxy boxes and class indices, checking bounds."""
    boxes = np.zeros((len(annotations), 4), dtype=np.float32)
    classes = np.zeros(len(annotations), dtype=np.int32)
    for index, annotation in enumerate(annotations):
        bbox = annotation["bbox"]
        where = f"Box {bbox} (x, y, width, height) of annotation {annotation.get('id', '?')}"
        if (
            not isinstance(bbox, list | tuple)
            or len(bbox) != 4
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in bbox)
        ):
            raise ValueError(f"{where} for image file '{path}' must be a list of 4 numbers.")
        x, y, box_width, box_height = (float(value) for value in bbox)
        if box_width <= 0 or box_height <= 0:
            raise ValueError(f"{where} for image file '{path}' has non-positive width or height.")
        if x < 0 or y < 0 or x + box_width > width or y + box_height > height:
            raise ValueError(
                f"{where} lies outside image file '{path}' of width {width} and height {height}."
            )
        boxes[index] = (x, y, x + box_width, y + box_height)
        classes[index] = class_index[annotation["category_id"]]
    return boxes, classes


def load_coco_detection(annotation_file, image_dir, include_crowd=False, masks=False):
    """Loads a COCO-format object detection dataset.

    Reads the `images`, `annotations` and `categories` of a COCO json file and
    the image files named by `images[*].file_name` under `image_dir`. COCO boxes
    `[x, y, width, height]` become `[x_min, y_min, x_max, y_max]` with
    `x_max = x + width`, `y_max = y + height`.

    Class indices: categories are sorted by COCO `id` and numbered from 1, so
    `class_names[0] == "background"` and `class_names[k]` is the category with
    the k-th smallest id (COCO ids 1, 2, 5 become 1, 2, 3). This matches
    `make_shapes`. `category_ids[k - 1]` gives the original id back.

    Images are returned in the order of the json `images` list; an image without
    annotations gets an empty `(0, 4)` box array.

    Args:
        annotation_file: str or path-like. The COCO json file.
        image_dir: str or path-like. Folder that `file_name` paths are relative to.
        include_crowd: bool. Keep annotations with `iscrowd == 1`. Defaults to
            `False`.
        masks: bool. Also read each annotation's `segmentation` (polygons, uncompressed
            or compressed RLE, decoded by pycocotools as `COCO.annToMask` does) into
            `"masks"`. Defaults to `False`.

    Returns:
        A dict with keys `"images"` (list of uint8 `(H, W, 3)`), `"boxes"` (list
        of float32 `(n_i, 4)` xyxy), `"box_classes"` (list of int32 `(n_i,)`),
        `"class_names"` (tuple of str), `"category_ids"` (tuple of int),
        `"image_ids"` (list of int) and `"file_names"` (list of str); with `masks`, also
        `"masks"` (list of uint8 `(n_i, H, W)`, 0/1, row `j` the mask of box `j`).

    Raises:
        FileNotFoundError: if the json file, `image_dir` or an image file is
            missing.
        ValueError: if the json is malformed, an annotation refers to an unknown
            image or category, a box has non-positive size or lies outside its
            image (the message names the image file and the box), a segmentation is
            missing or malformed when `masks` is set, the json
            width/height disagree with the file, or an image is corrupt.

    Example:

        data = load_coco_detection("coco/annotations.json", "coco/images")
        data["boxes"][0].shape, data["class_names"][0]
        # ((3, 4), 'background')
    """
    annotation_file, image_dir = os.fspath(annotation_file), os.fspath(image_dir)
    if not isinstance(masks, bool):
        raise ValueError(f"`masks` must be True or False. Received: masks={masks!r}")
    if not os.path.isfile(annotation_file):
        raise FileNotFoundError(f"COCO annotation file '{annotation_file}' does not exist.")
    _check_directory(image_dir, "image_dir")
    images_info, annotations_by_image, class_index, class_names, category_ids = _read_coco_json(
        annotation_file, include_crowd
    )

    result = {
        "images": [],
        "boxes": [],
        "box_classes": [],
        "class_names": class_names,
        "category_ids": category_ids,
        "image_ids": [],
        "file_names": [],
    }
    if masks:
        result["masks"] = []
    root = os.path.realpath(image_dir)
    for info in images_info:
        path = os.path.join(image_dir, info["file_name"])
        if os.path.commonpath([root, os.path.realpath(path)]) != root:
            raise ValueError(
                f"Image file_name {info['file_name']!r} (image id {info['id']} in "
                f"'{annotation_file}') lies outside the image folder '{image_dir}'."
            )
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"Image file '{path}' (image id {info['id']} in '{annotation_file}') "
                "does not exist."
            )
        image = read_image(path)
        height, width = image.shape[:2]
        if (info.get("height", height), info.get("width", width)) != (height, width):
            raise ValueError(
                f"Image file '{path}' is {height}x{width} (HxW) but '{annotation_file}' says "
                f"{info.get('height')}x{info.get('width')}."
            )
        boxes, classes = _coco_boxes(
            annotations_by_image[info["id"]], class_index, path, height, width
        )
        if masks:
            result["masks"].append(
                _coco_masks(annotations_by_image[info["id"]], path, height, width)
            )
        result["images"].append(image)
        result["boxes"].append(boxes)
        result["box_classes"].append(classes)
        result["image_ids"].append(info["id"])
        result["file_names"].append(info["file_name"])
    return result
