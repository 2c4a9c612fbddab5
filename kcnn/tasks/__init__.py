"""Task models: a backbone plus the head, losses and metrics of one task."""

from kcnn.tasks.classification import ClassificationTask, build_classifier
from kcnn.tasks.detection import DetectionTask
from kcnn.tasks.inpainting import (
    HoleL1,
    InpaintingLoss,
    InpaintingTask,
    PeakSignalToNoiseRatio,
    StructuralSimilarity,
    inpainting_loss,
    inpainting_scores,
)
from kcnn.tasks.losses import (
    CrossEntropyLoss,
    DiceLoss,
    FocalLoss,
    JaccardLoss,
    SumLoss,
    segmentation_loss,
)
from kcnn.tasks.segmentation import SegmentationTask, segmentation_scores

TASKS = {
    task.name: task
    for task in (ClassificationTask(), SegmentationTask(), InpaintingTask(), DetectionTask())
}

__all__ = [
    "TASKS",
    "ClassificationTask",
    "CrossEntropyLoss",
    "DetectionTask",
    "DiceLoss",
    "FocalLoss",
    "HoleL1",
    "InpaintingLoss",
    "InpaintingTask",
    "JaccardLoss",
    "PeakSignalToNoiseRatio",
    "SegmentationTask",
    "StructuralSimilarity",
    "SumLoss",
    "build_classifier",
    "inpainting_loss",
    "inpainting_scores",
    "segmentation_loss",
    "segmentation_scores",
]
