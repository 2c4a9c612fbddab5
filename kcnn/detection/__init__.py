"""Anchor-free one-stage object detection: boxes, target assignment, loss, model, decoding
with per-class NMS (TFLite builtins only) and COCO evaluation with pycocotools."""

from kcnn.detection.assigner import task_aligned_assign
from kcnn.detection.boxes import (
    anchor_points,
    box_ciou,
    box_giou,
    box_iou,
    decode_distances,
    encode_distances,
)
from kcnn.detection.coco import (
    COCOMetricsCallback,
    coco_evaluate,
    load_coco_detections,
    load_coco_ground_truth,
    save_coco_detections,
    to_coco_detections,
    to_coco_ground_truth,
)
from kcnn.detection.decode import DetectionDecoder, decode_detections
from kcnn.detection.detector import Detector
from kcnn.detection.losses import DetectionLoss, varifocal_loss

__all__ = [
    "COCOMetricsCallback",
    "DetectionDecoder",
    "DetectionLoss",
    "Detector",
    "anchor_points",
    "box_ciou",
    "box_giou",
    "box_iou",
    "coco_evaluate",
    "decode_detections",
    "decode_distances",
    "encode_distances",
    "load_coco_detections",
    "load_coco_ground_truth",
    "save_coco_detections",
    "task_aligned_assign",
    "to_coco_detections",
    "to_coco_ground_truth",
    "varifocal_loss",
]
