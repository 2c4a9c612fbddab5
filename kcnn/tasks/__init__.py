"""Task models: a backbone plus the head, losses and metrics of one task."""

from kcnn.tasks.classification import ClassificationTask, build_classifier
from kcnn.tasks.losses import (
    CrossEntropyLoss,
    DiceLoss,
    FocalLoss,
    JaccardLoss,
    SumLoss,
    segmentation_loss,
)
from kcnn.tasks.segmentation import SegmentationTask, segmentation_scores

TASKS = {task.name: task for task in (ClassificationTask(), SegmentationTask())}

__all__ = [
    "TASKS",
    "ClassificationTask",
    "CrossEntropyLoss",
    "DiceLoss",
    "FocalLoss",
    "JaccardLoss",
    "SegmentationTask",
    "SumLoss",
    "build_classifier",
    "segmentation_loss",
    "segmentation_scores",
]
