"""Export a trained Keras model to SavedModel and TFLite (LiteRT), with a parity check."""

from kcnn.export.exporters import (
    ExportParityError,
    export_saved_model,
    export_tflite,
    parity_report,
    tflite_predict,
)

__all__ = [
    "ExportParityError",
    "export_saved_model",
    "export_tflite",
    "parity_report",
    "tflite_predict",
]
