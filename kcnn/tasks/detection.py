"""Object detection: the anchor-free `Detector` trained with `DetectionLoss` (or keras-hub's
RetinaNet, `kcnn.detection.RetinaNet`, with `RetinaNetLoss`, or the two-stage
`kcnn.detection.FasterRCNN`, which computes its losses in its own `train_step`), evaluated
with COCO mAP, exported with its decoding and NMS.

Conventions shared by the data, the model, the loss and the evaluation:

- Targets are padded boxes `(B, max_boxes, 5)` = `(x_min, y_min, x_max, y_max, class)` in
  pixels, class 0-based (no background class), -1 for padding rows
  (`kcnn.data.detection.DetectionData`).
- The model returns `(B, points, 4 + num_classes)`: box channels (distances to anchor points
  for `Detector`, deltas to anchor boxes for `RetinaNet`), then class logits;
  `kcnn.detection.detection_decoder(model)` turns them into boxes after per-class
  NMS. `FasterRCNN` suppresses inside the model and returns its final detections, which
  its decoder unpacks.
- One decoder setting (`DetectionDecoder`'s defaults: score >= 0.05, IoU 0.5, at most 100
  detections) serves the evaluation, the SavedModel and the TFLite file, so the mAP in
  `metrics.json` is the mAP of what the exports return.
"""

import math

import numpy as np

from kcnn.data import load_detection_data, make_detection_dataset
from kcnn.detection import (
    COCOMetricsCallback,
    coco_evaluate,
    detection_decoder,
    detection_loss,
    detector_with_decoder,
    to_coco_detections,
    to_coco_ground_truth,
)
from kcnn.detection.detectors import LOSS_KEYS, RETINANET_LOSS_KEYS
from kcnn.export.serving import ServingSignature, detection_endpoint, uint8_image_specs
from kcnn.tasks.base import Task, register_task
from kcnn.viz import plot_detection_grid

__all__ = ["LOSS_KEYS", "RETINANET_LOSS_KEYS", "DetectionTask"]

# Largest relative difference of a LiteRT box from Keras's (pixels; absolute below 1 px).
BOX_TOLERANCE = 1e-3
# predictions.png shows detections scoring at least this much (metrics count them all).
PLOT_SCORE_THRESHOLD = 0.3
PLOT_IMAGES = 6


def _ground_truth_rows(boxes):
    """`(boxes (n, 4), classes (n,))` of one image's padded `(max_boxes, 5)` rows."""
    boxes = np.asarray(boxes)
    kept = boxes[boxes[:, 4] >= 0]
    return kept[:, :4], kept[:, 4].astype(np.int64)


def pair_detections(expected, actual):
    """Pairs the detections of two runs on the same images (Keras's and LiteRT's).

    Within an image, each expected detection is paired with the unpaired actual one of its
    class whose box is nearest (largest coordinate difference), not row by row: two
    detections whose scores differ by float rounding may come out of NMS in either order.

    Returns:
        `(pairs, unpaired)`: `(image, expected_row, actual_row)` triples, and the number of
        expected detections without an actual one of their class. Rows beyond the smaller
        of the two counts of an image are not paired.
    """
    counts = np.minimum(np.asarray(expected["count"]), np.asarray(actual["count"]))
    expected_boxes = np.asarray(expected["boxes"], np.float64)
    actual_boxes = np.asarray(actual["boxes"], np.float64)
    pairs, unpaired = [], 0
    for image, count in enumerate(counts):
        free = np.ones(count, bool)
        for row in range(count):
            candidates = np.flatnonzero(
                free & (actual["classes"][image, :count] == expected["classes"][image, row])
            )
            if not candidates.size:
                unpaired += 1
                continue
            errors = np.abs(actual_boxes[image, candidates] - expected_boxes[image, row])
            best = candidates[np.argmin(errors.max(axis=1))]
            free[best] = False
            pairs.append((image, row, best))
    return pairs, unpaired


def per_class_json(values):
    """`{class name: AP}` for `metrics.json`: NaN (a class without test objects) is not JSON,
    so it becomes None ("no value")."""
    return {name: None if math.isnan(value) else value for name, value in values.items()}


def _as_numpy(detections):
    return {name: np.asarray(value) for name, value in detections.items()}


@register_task("detection")
class DetectionTask(Task):
    """Object detection: COCO mAP of decoded, NMS-suppressed detections; served and exported
    with the decoder, so an image goes in and final detections come out."""

    # Largest mAP@.5 drop an int8 export may have (`export.int8_tolerance`).
    int8_tolerance = 0.02
    tflite_outputs = (
        "final detections after per-class NMS, in model_input_size pixels: boxes (B, D, 4) "
        "xyxy, scores (B, D), classes (B, D) int32, -1 for padding rows, count (B,)"
    )

    def load_dataset(self, name, **kwargs):
        return load_detection_data(name, **kwargs)

    def make_dataset(self, data, images, boxes, batch_size, shuffle=False, seed=0, augment=None):
        return make_detection_dataset(
            images, boxes, batch_size=batch_size, shuffle=shuffle, seed=seed, augment=augment
        )

    def boxes_of(self, targets):
        """The padded boxes `(N, max_boxes, 5)` of a split's targets: the targets
        themselves (a task whose targets hold more says where its boxes are)."""
        return targets

    def loss(self, train_config, model):
        """The model's loss (`kcnn.detection.detection_loss`: `DetectionLoss` for a
        `Detector`, `RetinaNetLoss` for a `RetinaNet`) with the `train.loss` options
        (`LOSS_KEYS` / `RETINANET_LOSS_KEYS`).

        Raises:
            ValueError: for a `train.loss` key the model's loss does not take (named).
        """
        return detection_loss(model, **dict(train_config.loss or {}))

    def callbacks(self, model, data, validation, data_config):
        """A `COCOMetricsCallback` logging `val_map`, `val_map50` and `val_map75` on the
        validation split (`(images, boxes)`, or None: no callback). mAP needs decoding and
        NMS of whole images, not a per-batch Keras metric."""
        if validation is None:
            return []
        images, targets = validation
        return [
            COCOMetricsCallback(
                images,
                self.boxes_of(targets),
                data.class_names,
                detection_decoder(model),
                batch_size=data_config.batch_size,
            )
        ]

    def detect(self, model, images, batch_size=32):
        """Final detections of `model` on uint8 `images`: a dict of NumPy `boxes`, `scores`,
        `classes`, `count` (see `kcnn.detection.DetectionDecoder`)."""
        raw = model.predict(self.model_inputs(images, None), batch_size=batch_size, verbose=0)
        return _as_numpy(detection_decoder(model)(raw))

    def coco_scores(self, detections, boxes, class_names, image_size):
        """COCO mAP@[.5:.95], mAP@.5, mAP@.75 and per-class AP of decoded `detections`
        against padded ground-truth `boxes` (see `kcnn.detection.coco_evaluate`)."""
        ground_truth = to_coco_ground_truth(boxes, class_names, image_size)
        results = to_coco_detections(
            detections["boxes"], detections["scores"], detections["classes"], detections["count"]
        )
        return coco_evaluate(ground_truth, results)

    def export_metric(self, images, boxes, class_names):
        """`("map50", function)`: COCO mAP@.5 of decoded detections (the outputs of the
        exported TFLite file, which decodes and suppresses itself, and of the Keras model
        with its decoder) against `boxes`, the task metric an export's parity report
        compares."""
        image_size = np.asarray(images).shape[1:3]

        def map50(detections):
            return self.coco_scores(detections, boxes, class_names, image_size)["map50"]

        return "map50", map50

    def tflite_model(self, model):
        """The model the TFLite files are converted from: `image -> model -> decoder`, so a
        file takes an image and returns final detections (builtin ops only)."""
        return detector_with_decoder(model)

    def serving_signature(self, model, class_names, image_size=None):
        """uint8 images -> detections after per-class NMS, boxes in input-image pixels."""
        endpoint = detection_endpoint(model, detection_decoder(model), class_names, image_size)
        return ServingSignature(endpoint, uint8_image_specs(model))

    def compare_exports(self, expected, actual):
        """Parity of LiteRT detections with Keras's (see `parity_report`'s `compare`).

        They agree when every image has the same detection count and each Keras detection
        has a LiteRT one of the same class (`pair_detections`) with its box within
        `BOX_TOLERANCE` relative (absolute below 1 pixel). `max_abs_error` is the largest
        box difference in pixels over the pairs.
        """
        same_count = np.asarray(expected["count"]) == np.asarray(actual["count"])
        keras_boxes = np.asarray(expected["boxes"], np.float64)
        litert_boxes = np.asarray(actual["boxes"], np.float64)
        keras_scores = np.asarray(expected["scores"], np.float64)
        litert_scores = np.asarray(actual["scores"], np.float64)
        pairs, unpaired = pair_detections(expected, actual)
        paired = len(pairs)
        box_errors, relative_errors, score_errors = [], [], []
        for image, row, best in pairs:
            error = np.abs(litert_boxes[image, best] - keras_boxes[image, row])
            box_errors.append(error.max())
            relative_errors.append((error / np.maximum(np.abs(keras_boxes[image, row]), 1.0)).max())
            score_errors.append(abs(litert_scores[image, best] - keras_scores[image, row]))
        entries = {
            "max_abs_error": float(max(box_errors, default=0.0)),
            "max_relative_box_error": float(max(relative_errors, default=0.0)),
            "max_score_error": float(max(score_errors, default=0.0)),
            "count_agreement": float(np.mean(same_count)),
            "class_agreement": paired / (paired + unpaired) if paired + unpaired else 1.0,
            "box_tolerance": BOX_TOLERANCE,
        }
        problems = []
        if not same_count.all():
            problems.append(
                f"{int(np.sum(~same_count))} of {len(same_count)} images have another "
                "detection count"
            )
        if unpaired:
            problems.append(f"{unpaired} detections have another class")
        if entries["max_relative_box_error"] > BOX_TOLERANCE:
            problems.append(
                f"boxes differ by up to {entries['max_relative_box_error']:.3g} relative "
                f"(tolerance {BOX_TOLERANCE})"
            )
        if problems:
            entries["mismatch"] = "detects differently from Keras: " + "; ".join(problems)
        return entries

    def predict(self, model, data, batch_size=32):
        """The decoded detections on the test images (see `detect`)."""
        return self.detect(model, data.x_test, batch_size)

    def evaluate(self, model, data, batch_size=32, train_config=None, predictions=None):
        """COCO mAP@[.5:.95], mAP@.5, mAP@.75 and per-class AP on the test split, with the
        decoder's settings."""
        detections = self.predict(model, data, batch_size) if predictions is None else predictions
        boxes = self.boxes_of(data.y_test)
        scores = self.coco_scores(detections, boxes, data.class_names, data.x_test.shape[1:3])
        decoder = detection_decoder(model)
        return {
            "map": scores["map"],
            "map50": scores["map50"],
            "map75": scores["map75"],
            "per_class_ap": per_class_json(scores["per_class"]),
            "test_images": int(len(data.x_test)),
            "test_boxes": int(np.sum(np.asarray(boxes)[..., 4] >= 0)),
            "decoder": {
                "score_threshold": decoder.score_threshold,
                "iou_threshold": decoder.iou_threshold,
                "max_detections": decoder.max_detections,
            },
        }

    plot_title = f"held-out images: ground truth and detections scoring >= {PLOT_SCORE_THRESHOLD}"

    def plotted_truth(self, targets, index):
        """What `predictions.png` draws of image `index`'s ground truth: `(boxes, classes)`."""
        return _ground_truth_rows(targets[index])

    def plotted_detections(self, detections, index, image_size):
        """What `predictions.png` draws of image `index`'s detections: `(boxes, classes,
        scores)` of those scoring >= `PLOT_SCORE_THRESHOLD`."""
        count = detections["count"][index]
        keep = detections["scores"][index, :count] >= PLOT_SCORE_THRESHOLD
        return tuple(detections[key][index, :count][keep] for key in ("boxes", "classes", "scores"))

    def plot(self, model, data, batch_size=32, train_config=None, predictions=None):
        """`predictions.png`: ground truth beside detections scoring >= 0.3 on six test
        images."""
        detections = self.predict(model, data, batch_size) if predictions is None else predictions
        shown = range(min(PLOT_IMAGES, len(data.x_test)))
        image_size = data.x_test.shape[1:3]
        figure = plot_detection_grid(
            data.x_test[: len(shown)],
            [self.plotted_truth(data.y_test, index) for index in shown],
            [self.plotted_detections(detections, index, image_size) for index in shown],
            data.class_names,
            title=self.plot_title,
        )
        return {"predictions.png": figure}

    def summary(self, metrics):
        return (
            f"test mAP@[.5:.95] {metrics['map']:.4f}, mAP@.5 {metrics['map50']:.4f}, "
            f"mAP@.75 {metrics['map75']:.4f} on {metrics['test_images']} images"
        )
