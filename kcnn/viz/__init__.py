"""Plots and explanations: every plot function returns a matplotlib Figure; `save_figure`
writes a PNG. The computations (`saliency_map`, `grad_cam`, `guided_backprop`,
`deconvnet_projection`, `top_activating_patches`, `style_transfer`, `fgsm`, `embed`, ...)
return NumPy arrays."""

from kcnn.viz.backprojection import (
    backward_rule,
    deconvnet_projection,
    guided_backprop,
    guided_grad_cam,
)
from kcnn.viz.deformable import deformable_sampling_locations, plot_deformable_sampling
from kcnn.viz.embedding import EMBEDDING_METHODS, embed, nearest_neighbours
from kcnn.viz.explain import (
    conv_layer_names,
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
    plot_top_patches,
    signed_display,
)
from kcnn.viz.methods import METHODS, PIXEL_SPACE_METHODS, explain
from kcnn.viz.pareto import pareto_front, plot_pareto_front
from kcnn.viz.patches import (
    TopPatches,
    receptive_field_geometry,
    top_activating_patches,
    top_patch_projections,
)
from kcnn.viz.plots import (
    confusion_matrix,
    draw_boxes,
    draw_masks,
    plot_boxes,
    plot_confusion_matrix,
    plot_detection_grid,
    plot_inpainting_grid,
    plot_segmentation_grid,
    plot_training_curves,
    save_figure,
    show_image,
)
from kcnn.viz.style import (
    content_loss,
    plot_style_transfer,
    random_texture_extractor,
    style_loss,
    style_transfer,
)
from kcnn.viz.synthesis import deep_dream, fgsm

__all__ = [
    "EMBEDDING_METHODS",
    "METHODS",
    "PIXEL_SPACE_METHODS",
    "TopPatches",
    "backward_rule",
    "confusion_matrix",
    "content_loss",
    "conv_layer_names",
    "deconvnet_projection",
    "deep_dream",
    "deformable_sampling_locations",
    "draw_boxes",
    "draw_masks",
    "embed",
    "explain",
    "fgsm",
    "find_layer",
    "grad_cam",
    "guided_backprop",
    "guided_grad_cam",
    "layer_output",
    "load_image_for_model",
    "nearest_neighbours",
    "occlusion_map",
    "plot_adversarial",
    "plot_boxes",
    "plot_confusion_matrix",
    "plot_deep_dream",
    "plot_deformable_sampling",
    "plot_detection_grid",
    "plot_embedding",
    "plot_feature_maps",
    "plot_filters",
    "plot_inpainting_grid",
    "plot_neighbours",
    "plot_saliency",
    "plot_segmentation_grid",
    "plot_style_transfer",
    "plot_top_patches",
    "pareto_front",
    "plot_pareto_front",
    "plot_training_curves",
    "random_texture_extractor",
    "receptive_field_geometry",
    "saliency_map",
    "save_figure",
    "show_image",
    "signed_display",
    "style_loss",
    "style_transfer",
    "top_activating_patches",
    "top_patch_projections",
]
