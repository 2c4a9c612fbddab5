"""Convolution arithmetic, receptive fields, and parameter and MAC counts of Keras models."""

from kcnn.analysis.analyze import analyze, print_analysis
from kcnn.analysis.analyzers import register_layer_analyzer, sliding_geometry
from kcnn.analysis.conv_arithmetic import conv_output_size, conv_transpose_output_size
from kcnn.analysis.geometry import LayerGeometry
from kcnn.analysis.records import LayerRecord, ModelAnalysis

__all__ = [
    "LayerGeometry",
    "LayerRecord",
    "ModelAnalysis",
    "analyze",
    "conv_output_size",
    "conv_transpose_output_size",
    "print_analysis",
    "register_layer_analyzer",
    "sliding_geometry",
]
