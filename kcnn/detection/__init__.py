"""Anchor-free one-stage object detection: boxes, target assignment, loss and model."""

from kcnn.detection.assigner import task_aligned_assign
from kcnn.detection.boxes import (
    anchor_points,
    box_ciou,
    box_giou,
    box_iou,
    decode_distances,
    encode_distances,
)
from kcnn.detection.detector import Detector
from kcnn.detection.losses import DetectionLoss, varifocal_loss

__all__ = [
    "DetectionLoss",
    "Detector",
    "anchor_points",
    "box_ciou",
    "box_giou",
    "box_iou",
    "decode_distances",
    "encode_distances",
    "task_aligned_assign",
    "varifocal_loss",
]
