"""COCO-style box and mask evaluation with pycocotools, COCO JSON files, and a Keras mAP
callback.

Ground truth and detections are plain COCO dicts, as in the COCO data format
(https://cocodataset.org/#format-data): boxes are `[x, y, width, height]` in pixels. kcnn's
own boxes are `(x_min, y_min, x_max, y_max)` with exclusive max, so `width = x_max - x_min`.
Image `i` of an array gets id `i` unless `image_ids` says otherwise, and class `c` (0-based)
gets category id `c + 1` unless `category_ids` says otherwise. Instance masks are binary
`(H, W)` arrays, stored as COCO's run-length encoding (`encode_mask`).
"""

import contextlib
import copy
import io
import json
import math
import numbers
import os

import keras
import numpy as np

from kcnn._files import atomic_path
from kcnn.data.rle import decode_mask, encode_mask

METRIC_NAMES = ("map", "map50", "map75")
IOU_TYPES = ("bbox", "segm")


def _masks_like(masks, shape, name):
    """`masks` as a bool array of `shape`, or a ValueError naming `name`."""
    masks = np.asarray(masks)
    if masks.shape != tuple(shape):
        raise ValueError(f"`{name}` must have shape {tuple(shape)}. Received: {masks.shape}")
    return masks != 0


def _image_size(image_size):
    if isinstance(image_size, numbers.Integral) and not isinstance(image_size, bool):
        image_size = (image_size, image_size)
    if (
        not isinstance(image_size, (tuple, list))
        or len(image_size) != 2
        or not all(isinstance(side, numbers.Integral) and side > 0 for side in image_size)
    ):
        raise ValueError(
            "`image_size` must be a positive int or a tuple of 2 positive ints (height, width). "
            f"Received: image_size={image_size!r}"
        )
    return int(image_size[0]), int(image_size[1])


def _ids(ids, count, offset, name):
    if ids is None:
        return [index + offset for index in range(count)]
    ids = [int(value) for value in ids]
    if len(ids) != count or len(set(ids)) != count:
        raise ValueError(
            f"`{name}` must hold {count} distinct ints. Received: {name} of length {len(ids)} "
            f"with {len(set(ids))} distinct values"
        )
    return ids


def _xywh(box):
    x_min, y_min, x_max, y_max = (float(value) for value in box)
    return [x_min, y_min, x_max - x_min, y_max - y_min]


def to_coco_ground_truth(
    boxes, class_names, image_size, image_ids=None, category_ids=None, masks=None
):
    """Builds a COCO ground-truth dict from padded boxes (and their instance masks).

    Args:
        boxes: array `(N, max_boxes, 5)` of `(x_min, y_min, x_max, y_max, class)` rows,
            class 0-based and -1 for padding rows (`kcnn.data.detection.DetectionData`).
        class_names: sequence of str, one per class.
        image_size: int or `(height, width)` of the images.
        image_ids: None or N distinct ints. Defaults to `None`: `0 .. N - 1`.
        category_ids: None or one distinct int per class. Defaults to `None`:
            `1 .. len(class_names)`.
        masks: None or array `(N, max_boxes, H, W)`: the binary mask of each box row
            (`load_detection_data(..., masks=True)`). Defaults to `None`.

    Returns:
        A dict with `"images"`, `"annotations"` (bbox `[x, y, w, h]`, `area = w * h`,
        `iscrowd` 0; with `masks`, also `"segmentation"` as RLE and `area` the mask's pixel
        count, as in COCO's files) and `"categories"`.

    Raises:
        ValueError: if `boxes` does not have shape `(N, max_boxes, 5)`, a class is out of
            range, or the ids are not distinct; the message names the argument.

    Example:
    >>> boxes = np.array([[[2, 4, 10, 8, 1], [-1, -1, -1, -1, -1]]], "float32")
    >>> ground_truth = to_coco_ground_truth(boxes, ("cat", "dog"), image_size=16)
    >>> ground_truth["annotations"][0]["bbox"], ground_truth["annotations"][0]["category_id"]
    ([2.0, 4.0, 8.0, 4.0], 2)
    """
    boxes = np.asarray(boxes)
    if boxes.ndim != 3 or boxes.shape[2] != 5:
        raise ValueError(
            f"`boxes` must have shape (N, max_boxes, 5). Received: boxes.shape={boxes.shape}"
        )
    height, width = _image_size(image_size)
    class_names = tuple(class_names)
    category_ids = _ids(category_ids, len(class_names), 1, "category_ids")
    image_ids = _ids(image_ids, len(boxes), 0, "image_ids")
    classes = boxes[..., 4]
    if np.any((classes >= len(class_names)) | ((classes < 0) & (classes != -1))):
        raise ValueError(
            f"The classes of `boxes` must be in [0, {len(class_names)}) or -1 for padding. "
            f"Received: {sorted(set(classes.ravel().tolist()))}"
        )
    if masks is not None:
        masks = _masks_like(masks, (*boxes.shape[:2], height, width), "masks")
    annotations = []
    for index, (image_id, image_boxes) in enumerate(zip(image_ids, boxes, strict=True)):
        for row in np.flatnonzero(image_boxes[:, 4] >= 0):
            bbox = _xywh(image_boxes[row, :4])
            annotation = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": category_ids[int(image_boxes[row, 4])],
                "bbox": bbox,
                "area": bbox[2] * bbox[3],
                "iscrowd": 0,
            }
            if masks is not None:
                annotation["segmentation"] = encode_mask(masks[index, row])
                annotation["area"] = float(masks[index, row].sum())
            annotations.append(annotation)
    return {
        "images": [{"id": image_id, "height": height, "width": width} for image_id in image_ids],
        "annotations": annotations,
        "categories": [
            {"id": category_id, "name": name}
            for category_id, name in zip(category_ids, class_names, strict=True)
        ],
    }


def to_coco_detections(
    boxes, scores, classes, counts, image_ids=None, category_ids=None, masks=None
):
    """Turns decoded detections (`kcnn.detection.decode.decode_detections`) into a COCO
    results list.

    Args:
        boxes: array `(N, max_detections, 4)` of `(x_min, y_min, x_max, y_max)` pixels.
        scores: array `(N, max_detections)`.
        classes: int array `(N, max_detections)`, 0-based.
        counts: int array `(N,)`; only the first `counts[i]` rows of image `i` are read.
        image_ids: None or N ints. Defaults to `None`: `0 .. N - 1`.
        category_ids: None or a sequence mapping class `c` to `category_ids[c]`.
            Defaults to `None`: `c + 1`.
        masks: None or array `(N, max_detections, H, W)`: each detection's binary mask in
            image pixels. Defaults to `None`.

    Returns:
        A list of `{"image_id", "category_id", "bbox": [x, y, w, h], "score"}` dicts, with
        `"segmentation"` (RLE) when `masks` are given.

    Example:
    >>> detections = to_coco_detections(
    ...     [[[1, 2, 4, 6], [0, 0, 0, 0]]], [[0.9, 0.0]], [[0, -1]], [1])
    >>> detections
    [{'image_id': 0, 'category_id': 1, 'bbox': [1.0, 2.0, 3.0, 4.0], 'score': 0.9}]
    """
    boxes, scores = np.asarray(boxes), np.asarray(scores)
    classes, counts = np.asarray(classes), np.asarray(counts).reshape(-1)
    if boxes.ndim != 3 or boxes.shape[2] != 4 or scores.shape != boxes.shape[:2]:
        raise ValueError(
            "`boxes` must have shape (N, max_detections, 4) and `scores` (N, max_detections). "
            f"Received: boxes.shape={boxes.shape}, scores.shape={scores.shape}"
        )
    if classes.shape != scores.shape or counts.shape != (len(boxes),):
        raise ValueError(
            "`classes` must have shape (N, max_detections) and `counts` (N,). "
            f"Received: classes.shape={classes.shape}, counts.shape={counts.shape}"
        )
    image_ids = _ids(image_ids, len(boxes), 0, "image_ids")
    if masks is not None:
        masks = np.asarray(masks)
        if masks.ndim != 4 or masks.shape[:2] != boxes.shape[:2]:
            raise ValueError(
                "`masks` must have shape (N, max_detections, H, W). "
                f"Received: masks.shape={masks.shape}, boxes.shape={boxes.shape}"
            )
    detections = []
    for index, image_id in enumerate(image_ids):
        for row in range(int(counts[index])):
            category = int(classes[index, row])
            detection = {
                "image_id": image_id,
                "category_id": category + 1 if category_ids is None else category_ids[category],
                "bbox": _xywh(boxes[index, row]),
                "score": float(scores[index, row]),
            }
            if masks is not None:
                detection["segmentation"] = encode_mask(masks[index, row])
            detections.append(detection)
    return detections


def _fail(source, message):
    raise ValueError(f"{source}: {message}")


def _check_bbox(bbox, source, what):
    if (
        not isinstance(bbox, (list, tuple))
        or len(bbox) != 4
        or not all(isinstance(value, numbers.Real) for value in bbox)
        or bbox[2] < 0
        or bbox[3] < 0
    ):
        _fail(source, f"{what} has bbox {bbox!r}; expected [x, y, width, height], sizes >= 0.")


def _check_ground_truth(ground_truth, source):
    """Validates a COCO ground-truth dict; returns a copy with `id`, `area` and `iscrowd`
    filled in where missing."""
    if not isinstance(ground_truth, dict) or not all(
        isinstance(ground_truth.get(key), list) for key in ("images", "annotations", "categories")
    ):
        _fail(source, 'expected a dict with the lists "images", "annotations" and "categories".')
    for key in ("images", "annotations", "categories"):
        for index, entry in enumerate(ground_truth[key]):
            if not isinstance(entry, dict) or (key != "annotations" and "id" not in entry):
                _fail(source, f'{key} entry {index} must be a dict with an "id". Got {entry!r}')
    ground_truth = copy.deepcopy(ground_truth)
    image_ids = {image.get("id") for image in ground_truth["images"]}
    category_ids = {category.get("id") for category in ground_truth["categories"]}
    for index, annotation in enumerate(ground_truth["annotations"]):
        what = f"annotation {index}"
        if annotation.get("image_id") not in image_ids:
            _fail(source, f"{what} refers to image id {annotation.get('image_id')!r}, not listed.")
        if annotation.get("category_id") not in category_ids:
            _fail(
                source,
                f"{what} refers to category id {annotation.get('category_id')!r}, not listed.",
            )
        _check_bbox(annotation.get("bbox"), source, what)
        annotation.setdefault("id", index + 1)
        annotation.setdefault("area", annotation["bbox"][2] * annotation["bbox"][3])
        annotation.setdefault("iscrowd", 0)
    return ground_truth


def _check_detections(detections, source, ground_truth=None, iou_type="bbox"):
    if not isinstance(detections, list):
        _fail(source, "expected a list of detections.")
    image_ids = category_ids = None
    if ground_truth is not None:
        image_ids = {image["id"] for image in ground_truth["images"]}
        category_ids = {category["id"] for category in ground_truth["categories"]}
    for index, detection in enumerate(detections):
        what = f"detection {index}"
        if not isinstance(detection, dict) or not {
            "image_id",
            "category_id",
            "bbox",
            "score",
        } <= set(detection):
            _fail(source, f'{what} must be a dict with "image_id", "category_id", "bbox", "score".')
        _check_bbox(detection["bbox"], source, what)
        if iou_type == "segm" and not isinstance(detection.get("segmentation"), dict):
            _fail(source, f'{what} has no "segmentation" RLE, which mask AP needs.')
        if image_ids is not None and detection["image_id"] not in image_ids:
            _fail(
                source, f"{what} has image id {detection['image_id']!r}, not in the ground truth."
            )
        if category_ids is not None and detection["category_id"] not in category_ids:
            _fail(
                source,
                f"{what} has category id {detection['category_id']!r}, not in the ground truth.",
            )
    return detections


def _read_json(path):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"COCO json file '{path}' does not exist.")
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"'{path}' is not valid JSON: {error}") from None


def load_coco_ground_truth(path):
    """Reads a COCO annotation file (`images`, `annotations`, `categories`) for
    `coco_evaluate`.

    Annotations without `id`, `area` or `iscrowd` get them (`area = width * height`,
    `iscrowd = 0`). To train on the images of such a file, see
    `kcnn.data.load_coco_detection`.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if it is not JSON or not COCO ground truth; the message names the file
            and the offending annotation.
    """
    return _check_ground_truth(_read_json(path), f"'{os.fspath(path)}'")


def load_coco_detections(path):
    """Reads a COCO results file: a JSON list of `{"image_id", "category_id", "bbox",
    "score"}`.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if it is not JSON or not a results list; the message names the file.
    """
    return _check_detections(_read_json(path), f"'{os.fspath(path)}'")


def save_coco_detections(detections, path):
    """Writes a COCO results list as JSON (atomically: a failed write leaves `path` as it
    was). Returns `path`."""
    _check_detections(detections, "`detections`")
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(detections))
    return path


def coco_evaluate(ground_truth, detections, iou_type="bbox"):
    """COCO box or mask AP of `detections` against `ground_truth`, computed by pycocotools'
    COCOeval.

    Every image of `ground_truth` counts, also the ones without any detection: their boxes
    are all missed (keras-cv#2504 was an evaluator that dropped such images and inflated
    mAP). An empty `detections` list scores 0. pycocotools' printed report is captured, not
    shown.

    Args:
        ground_truth: COCO ground-truth dict (`to_coco_ground_truth`,
            `load_coco_ground_truth`).
        detections: list of COCO results (`to_coco_detections`, `load_coco_detections`).
        iou_type: `"bbox"` (box IoU) or `"segm"` (mask IoU: every ground-truth annotation
            and detection needs a `"segmentation"`). Defaults to `"bbox"`.

    Returns:
        A dict of floats: `"map"` (AP averaged over IoU thresholds 0.50:0.05:0.95, COCO's primary
        metric), `"map50"`, `"map75"` (AP at IoU 0.5 and 0.75), all over at most 100
        detections per image and all object sizes, and `"per_class"`: `{category name:
        AP@[.5:.95]}`, NaN for a category without ground-truth boxes (left out of the
        means, as COCO does). pycocotools divides by `tp + fp + eps`, so a perfect score
        is 1 - 2e-16 rather than exactly 1.

    Raises:
        ValueError: if the inputs are not COCO ground truth and results, a detection names
            an image or category the ground truth does not list, or the ground truth has no
            boxes (AP is undefined).

    Example:
    >>> boxes = np.array([[[0, 0, 8, 8, 0]]], "float32")
    >>> ground_truth = to_coco_ground_truth(boxes, ("square",), image_size=16)
    >>> perfect = [{"image_id": 0, "category_id": 1, "bbox": [0, 0, 8, 8], "score": 1.0}]
    >>> metrics = coco_evaluate(ground_truth, perfect)
    >>> round(metrics["map"], 9), coco_evaluate(ground_truth, [])["map"]
    (1.0, 0.0)
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if iou_type not in IOU_TYPES:
        raise ValueError(f"`iou_type` must be one of {IOU_TYPES}. Received: {iou_type!r}")
    ground_truth = _check_ground_truth(ground_truth, "`ground_truth`")
    _check_detections(detections, "`detections`", ground_truth, iou_type)
    if not ground_truth["annotations"]:
        raise ValueError("`ground_truth` has no boxes, so AP is undefined.")
    if iou_type == "segm":
        for index, annotation in enumerate(ground_truth["annotations"]):
            if "segmentation" not in annotation:
                _fail("`ground_truth`", f'annotation {index} has no "segmentation" for mask AP.')
    results = []
    for index, detection in enumerate(detections):
        x, y, width, height = (float(value) for value in detection["bbox"])
        result = {
            "id": index + 1,
            "image_id": detection["image_id"],
            "category_id": detection["category_id"],
            "bbox": [x, y, width, height],
            "score": float(detection["score"]),
            "area": width * height,
            "iscrowd": 0,
        }
        if iou_type == "segm":
            result["segmentation"] = detection["segmentation"]
            result["area"] = float(decode_mask(detection["segmentation"]).sum())
        results.append(result)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_ground_truth = COCO()
        coco_ground_truth.dataset = ground_truth
        coco_ground_truth.createIndex()
        # Built directly rather than with COCO.loadRes, which fails on an empty list.
        coco_detections = COCO()
        coco_detections.dataset = {
            "images": ground_truth["images"],
            "categories": ground_truth["categories"],
            "annotations": results,
        }
        coco_detections.createIndex()
        evaluator = COCOeval(coco_ground_truth, coco_detections, iou_type)
        # All ground-truth images, with or without detections (COCOeval's default, made
        # explicit because it is what keeps missed images counted).
        evaluator.params.imgIds = sorted(coco_ground_truth.getImgIds())
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    # precision: [IoU threshold, recall point, category, area range, max detections];
    # area range 0 is "all" and the last max-detections setting is 100. -1 marks a category
    # without ground truth.
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    per_class = {}
    for index, category_id in enumerate(evaluator.params.catIds):
        values = precision[:, :, index]
        name = coco_ground_truth.cats[category_id].get("name", str(category_id))
        per_class[name] = float(values[values > -1].mean()) if np.any(values > -1) else math.nan
    stats = evaluator.stats
    return {"map": float(stats[0]), "map50": float(stats[1]), "map75": float(stats[2])} | {
        "per_class": per_class
    }


class COCOMetricsCallback(keras.callbacks.Callback):
    """Evaluates COCO box mAP on held-out images at the end of training epochs.

    After every `every`-th epoch (and the last), runs the model on `images`, decodes its
    predictions with `decode_fn`, and writes `val_map`, `val_map50` and `val_map75` (see
    `coco_evaluate`) into the epoch's `logs`, so that `History`, `CSVLogger` and
    `TensorBoard` record them and `EarlyStopping` or `ModelCheckpoint` can monitor them.
    Put it before those callbacks in the `callbacks` list. Skipped epochs log NaN, so
    every metric has one value per epoch. The last full result is kept in `self.result`.

    Args:
        images: array `(N, H, W, C)`, uint8 (divided by 255 before the model sees it, as
            `make_detection_dataset` does) or float.
        boxes: array `(N, max_boxes, 5)` of ground-truth boxes (see
            `kcnn.data.detection.DetectionData`).
        class_names: sequence of str.
        decode_fn: callable mapping the model's predictions for a batch to
            `(boxes, scores, classes, counts)` (e.g. a `functools.partial` of
            `decode_detections`) or to a dict with those keys, `"count"` for the counts
            (e.g. a `DetectionDecoder` layer).
        every: int. Evaluate every this many epochs. Defaults to `1`.
        batch_size: int. Prediction batch size. Defaults to `32`.

    Example:

        decoder = DetectionDecoder(num_classes, image_size, strides)
        callback = COCOMetricsCallback(data.x_test, data.y_test, data.class_names, decoder)
        history = model.fit(train, epochs=10, callbacks=[callback])
        history.history["val_map"]
    """

    def __init__(self, images, boxes, class_names, decode_fn, every=1, batch_size=32):
        super().__init__()
        images = np.asarray(images)
        if images.ndim != 4:
            raise ValueError(
                f"`images` must have shape (N, H, W, C). Received: images.shape={images.shape}"
            )
        boxes = np.asarray(boxes)
        if len(boxes) != len(images):
            raise ValueError(
                "`images` and `boxes` must have the same length. Received: "
                f"len(images)={len(images)}, len(boxes)={len(boxes)}"
            )
        for name, value in (("every", every), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"`{name}` must be a positive int. Received: {name}={value!r}")
        if not callable(decode_fn):
            raise ValueError(f"`decode_fn` must be callable. Received: decode_fn={decode_fn!r}")
        self.images = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images
        self.ground_truth = to_coco_ground_truth(boxes, class_names, images.shape[1:3])
        self.decode_fn = decode_fn
        self.every = int(every)
        self.batch_size = int(batch_size)
        self.result = None

    def _detections(self):
        parts = []
        for start in range(0, len(self.images), self.batch_size):
            predictions = self.model(self.images[start : start + self.batch_size], training=False)
            decoded = self.decode_fn(predictions)
            if isinstance(decoded, dict):
                decoded = tuple(decoded[key] for key in ("boxes", "scores", "classes", "count"))
            parts.append([np.asarray(value) for value in decoded])
        boxes, scores, classes, counts = (
            np.concatenate(arrays) for arrays in zip(*parts, strict=True)
        )
        return to_coco_detections(boxes, scores, classes, counts)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        last_epoch = epoch + 1 == (self.params or {}).get("epochs")
        if (epoch + 1) % self.every and not last_epoch:
            for name in METRIC_NAMES:
                logs[f"val_{name}"] = math.nan
            return
        self.result = coco_evaluate(self.ground_truth, self._detections())
        for name in METRIC_NAMES:
            logs[f"val_{name}"] = self.result[name]
