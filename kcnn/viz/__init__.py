"""Plots and explanations: every plot function returns a matplotlib Figure; `save_figure`
writes a PNG. The computations (`saliency_map`, `grad_cam`, `fgsm`, `embed`, ...) return
NumPy arrays."""

from kcnn.viz.deformable import deformable_sampling_locations, plot_deformable_sampling
from kcnn.viz.embedding import EMBEDDING_METHODS, embed, nearest_neighbours
from kcnn.viz.explain import (
    METHODS,
    conv_layer_names,
    explain,
    find_layer,
    grad_cam,
    layer_output,
    load_image_for_model,
    occlusion_map,
    saliency_map,
)
from kcnn.viz.explain_plots import (
    plot_adversarial,
    plot_deep_dream,
    plot_embedding,
    plot_feature_maps,
    plot_filters,
    plot_neighbours,
    plot_saliency,
)
from kcnn.viz.plots import (
    confusion_matrix,
    draw_boxes,
    plot_boxes,
    plot_confusion_matrix,
    plot_detection_grid,
    plot_inpainting_grid,
    plot_segmentation_grid,
    plot_training_curves,
    save_figure,
    show_image,
)
from kcnn.viz.synthesis import deep_dream, fgsm

__all__ = [
    "EMBEDDING_METHODS",
    "METHODS",
    "confusion_matrix",
    "conv_layer_names",
    "deep_dream",
    "deformable_sampling_locations",
    "draw_boxes",
    "embed",
    "explain",
    "fgsm",
    "find_layer",
    "grad_cam",
    "layer_output",
    "load_image_for_model",
    "nearest_neighbours",
    "occlusion_map",
    "plot_adversarial",
    "plot_boxes",
    "plot_confusion_matrix",
    "plot_detection_grid",
    "plot_deep_dream",
    "plot_deformable_sampling",
    "plot_embedding",
    "plot_feature_maps",
    "plot_filters",
    "plot_inpainting_grid",
    "plot_neighbours",
    "plot_saliency",
    "plot_segmentation_grid",
    "plot_training_curves",
    "saliency_map",
    "save_figure",
    "show_image",
]
