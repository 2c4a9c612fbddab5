"""Plots: every function returns a matplotlib Figure; `save_figure` writes a PNG."""

from kcnn.viz.plots import (
    confusion_matrix,
    plot_confusion_matrix,
    plot_segmentation_grid,
    plot_training_curves,
    save_figure,
)

__all__ = [
    "confusion_matrix",
    "plot_confusion_matrix",
    "plot_segmentation_grid",
    "plot_training_curves",
    "save_figure",
]
