"""Instance segmentation: `kcnn.detection.MaskRCNN`'s boxes and masks, evaluated with COCO
box and mask AP, exported whole.

The detection task with masks beside the boxes:

- Targets are one NumPy structured array per split (`kcnn.data.instance_targets`): each
  image's padded boxes `"boxes"` `(max_boxes, 5)` and their 0/1 instance masks `"masks"`
  `(max_boxes, H, W)`, kept together by every split and subset. Batches are
  `(images, {"boxes", "masks"})` (`make_detection_dataset(..., masks=...)`).
- The decoded detections carry `"masks"` `(B, D, m, m)`: each detection's mask
  probabilities in the frame of its box, as the model, the SavedModel and the TFLite file
  return them. Evaluation and plots paste them into the image
  (`kcnn.detection.paste_masks`: bilinear, >= 0.5) and score them with pycocotools'
  `iouType="segm"` beside `"bbox"`.
"""

import numpy as np

from kcnn.data import instance_targets, load_detection_data, make_detection_dataset
from kcnn.detection import (
    coco_evaluate,
    paste_masks,
    to_coco_detections,
    to_coco_ground_truth,
)
from kcnn.tasks.base import register_task
from kcnn.tasks.detection import (
    PLOT_SCORE_THRESHOLD,
    DetectionTask,
    pair_detections,
    per_class_json,
)

__all__ = ["MASK_IOU_TOLERANCE", "InstanceSegmentationTask"]

# Smallest IoU of a LiteRT detection's pasted mask with Keras's.
MASK_IOU_TOLERANCE = 0.99


@register_task("instance_segmentation")
class InstanceSegmentationTask(DetectionTask):
    """Instance segmentation: COCO box and mask AP of a `MaskRCNN`'s decoded detections;
    served and exported with the decoder, so an image goes in and detections with their
    masks come out."""

    tflite_outputs = (
        f"{DetectionTask.tflite_outputs}; masks (B, D, m, m) float32 probabilities of each "
        "detection's mask in the frame of its box (kcnn.detection.paste_masks pastes them "
        "into the image: bilinear, >= 0.5), zeros on padding rows"
    )

    def load_dataset(self, name, **kwargs):
        """The detection data set `name` with instance masks: `y_train` and `y_test` are
        `instance_targets` of its boxes and masks (`masks_train` and `masks_test` are then
        None: the masks live in the targets).

        Raises:
            ValueError: for `masks=False`: instance segmentation needs the masks.
        """
        if kwargs.pop("masks", True) is not True:
            raise ValueError(
                "The instance_segmentation task trains on instance masks; leave out "
                "`data.args.masks` or set it to true."
            )
        data = load_detection_data(name, masks=True, **kwargs)
        data.y_train = instance_targets(data.y_train, data.masks_train)
        data.y_test = instance_targets(data.y_test, data.masks_test)
        data.masks_train = data.masks_test = None
        return data

    def make_dataset(self, data, images, targets, batch_size, shuffle=False, seed=0, augment=None):
        return make_detection_dataset(
            images,
            targets["boxes"],
            batch_size=batch_size,
            shuffle=shuffle,
            seed=seed,
            augment=augment,
            masks=targets["masks"],
        )

    def boxes_of(self, targets):
        """The `"boxes"` of `instance_targets`."""
        return targets["boxes"]

    def mask_scores(self, detections, targets, class_names, image_size):
        """COCO mask mAP@[.5:.95], mAP@.5, mAP@.75 and per-class AP of decoded `detections`
        (masks pasted into images of `image_size`) against the `instance_targets`."""
        pasted = paste_masks(detections["masks"], detections["boxes"], image_size)
        ground_truth = to_coco_ground_truth(
            targets["boxes"], class_names, image_size, masks=targets["masks"]
        )
        results = to_coco_detections(
            detections["boxes"],
            detections["scores"],
            detections["classes"],
            detections["count"],
            masks=pasted,
        )
        return coco_evaluate(ground_truth, results, iou_type="segm")

    def export_metric(self, images, targets, class_names):
        """`("mask_map50", function)`: COCO mask AP@.5 of decoded detections against the
        `targets`, the metric an export's parity report compares."""
        image_size = np.asarray(images).shape[1:3]

        def mask_map50(detections):
            return self.mask_scores(detections, targets, class_names, image_size)["map50"]

        return "mask_map50", mask_map50

    def compare_exports(self, expected, actual):
        """`DetectionTask.compare_exports` and the masks: each LiteRT detection's mask,
        pasted at its own box, against its Keras pair's (`pair_detections`), in a frame
        that holds every box. They agree when every pair's IoU is >= `MASK_IOU_TOLERANCE`
        (two empty masks agree)."""
        entries = super().compare_exports(expected, actual)
        pairs, _ = pair_detections(expected, actual)
        corners = np.concatenate([np.ravel(expected["boxes"]), np.ravel(actual["boxes"]), [1.0]])
        frame = (int(np.ceil(corners.max())),) * 2
        ious = []
        for image, row, best in pairs:
            keras_mask, litert_mask = (
                paste_masks(masks[image, index][None], boxes[image, index][None], frame)[0]
                for masks, boxes, index in (
                    (expected["masks"], expected["boxes"], row),
                    (actual["masks"], actual["boxes"], best),
                )
            )
            union = np.logical_or(keras_mask, litert_mask).sum()
            ious.append(np.logical_and(keras_mask, litert_mask).sum() / union if union else 1.0)
        entries["min_mask_iou"] = float(min(ious, default=1.0))
        entries["mean_mask_iou"] = float(np.mean(ious)) if ious else 1.0
        entries["mask_iou_tolerance"] = MASK_IOU_TOLERANCE
        if entries["min_mask_iou"] < MASK_IOU_TOLERANCE:
            problem = (
                f"masks overlap Keras's with IoU down to {entries['min_mask_iou']:.4f} "
                f"(tolerance {MASK_IOU_TOLERANCE})"
            )
            previous = entries.get("mismatch")
            entries["mismatch"] = (
                f"{previous}; {problem}"
                if previous
                else f"detects differently from Keras: {problem}"
            )
        return entries

    def evaluate(self, model, data, batch_size=32, train_config=None, predictions=None):
        """`DetectionTask.evaluate`'s box metrics on the test split (with its boxes) and
        the masks': `mask_map`, `mask_map50`, `mask_map75`, `mask_per_class_ap`."""
        detections = self.predict(model, data, batch_size) if predictions is None else predictions
        metrics = super().evaluate(model, data, batch_size, train_config, detections)
        scores = self.mask_scores(detections, data.y_test, data.class_names, data.x_test.shape[1:3])
        metrics.update(
            {
                "mask_map": scores["map"],
                "mask_map50": scores["map50"],
                "mask_map75": scores["map75"],
                "mask_per_class_ap": per_class_json(scores["per_class"]),
            }
        )
        return metrics

    plot_title = f"held-out images: truth and detections >= {PLOT_SCORE_THRESHOLD}, masks"

    def plotted_truth(self, targets, index):
        """`DetectionTask.plotted_truth` and the boxes' masks: `predictions.png` draws the
        masks under the boxes."""
        boxes, masks = targets["boxes"][index], targets["masks"][index]
        valid = boxes[:, 4] >= 0
        return boxes[valid, :4], boxes[valid, 4].astype(np.int64), masks[valid]

    def plotted_detections(self, detections, index, image_size):
        """`DetectionTask.plotted_detections` and their masks pasted into the image."""
        count = detections["count"][index]
        keep = detections["scores"][index, :count] >= PLOT_SCORE_THRESHOLD
        boxes, classes, scores = super().plotted_detections(detections, index, image_size)
        return (
            boxes,
            classes,
            scores,
            paste_masks(detections["masks"][index, :count][keep], boxes, image_size),
        )

    def summary(self, metrics):
        return (
            f"{super().summary(metrics)}; mask mAP@[.5:.95] {metrics['mask_map']:.4f}, "
            f"mask mAP@.5 {metrics['mask_map50']:.4f}, mask mAP@.75 {metrics['mask_map75']:.4f}"
        )
