"""Convolution arithmetic, receptive fields, and parameter and MAC counts of Keras models."""

from kcnn.analysis.analyze import (
    LayerGeometry,
    LayerRecord,
    ModelAnalysis,
    analyze,
    print_analysis,
    register_layer_analyzer,
)
from kcnn.analysis.conv_arithmetic import conv_output_size, conv_transpose_output_size

__all__ = [
    "LayerGeometry",
    "LayerRecord",
    "ModelAnalysis",
    "analyze",
    "conv_output_size",
    "conv_transpose_output_size",
    "print_analysis",
    "register_layer_analyzer",
]
