"""Closed option sets of the exporters (kept free of TensorFlow imports)."""

QUANTIZATIONS = ("none", "fp16", "dynamic", "int8")
EXPORT_FORMATS = ("saved_model", "tflite")
