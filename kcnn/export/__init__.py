"""Export a trained Keras model to SavedModel and TFLite (LiteRT), with a parity check."""

from kcnn.export.exporters import (
    ExportError,
    ExportParityError,
    LiteRTRunner,
    export_saved_model,
    export_tflite,
    parity_report,
    tflite_latency_ms,
    tflite_predict,
)
from kcnn.export.serving import (
    RAW_SIGNATURE,
    SERVING_SIGNATURE,
    ServingSignature,
    serving_metadata,
)

__all__ = [
    "RAW_SIGNATURE",
    "SERVING_SIGNATURE",
    "ServingSignature",
    "ExportError",
    "ExportParityError",
    "LiteRTRunner",
    "export_saved_model",
    "export_tflite",
    "parity_report",
    "serving_metadata",
    "tflite_latency_ms",
    "tflite_predict",
]
