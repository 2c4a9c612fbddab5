"""Tasks: each kind of problem behind one `Task` contract (see `kcnn.tasks.base`).

Importing this package registers the six built-in tasks; `get_task(name)` returns one and
`task_names()` lists them.
"""

from kcnn.tasks.base import TASKS, Task, get_task, register_task, task_names
from kcnn.tasks.classification import (
    ClassificationTask,
    LabelSmoothingCrossEntropy,
    build_classifier,
)
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
from kcnn.tasks.instance_segmentation import InstanceSegmentationTask
from kcnn.tasks.localization import LocalizationLoss, LocalizationTask, localization_scores
from kcnn.tasks.losses import (
    CrossEntropyLoss,
    DiceLoss,
    FocalLoss,
    JaccardLoss,
    SumLoss,
    segmentation_loss,
)
from kcnn.tasks.segmentation import SegmentationTask, segmentation_scores

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
    "InstanceSegmentationTask",
    "JaccardLoss",
    "LabelSmoothingCrossEntropy",
    "LocalizationLoss",
    "LocalizationTask",
    "PeakSignalToNoiseRatio",
    "SegmentationTask",
    "StructuralSimilarity",
    "SumLoss",
    "Task",
    "build_classifier",
    "get_task",
    "inpainting_loss",
    "inpainting_scores",
    "localization_scores",
    "register_task",
    "segmentation_loss",
    "segmentation_scores",
    "task_names",
]
