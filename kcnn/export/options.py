"""Closed option sets of the exporters (kept free of TensorFlow imports)."""

QUANTIZATIONS = ("none", "fp16", "dynamic", "int8", "int16x8")
# The modes that calibrate on representative inputs and are held to the task's metric drop
# (`export.int8_tolerance`): int8 weights with int8 or int16 activations.
INTEGER_QUANTIZATIONS = ("int8", "int16x8")
EXPORT_FORMATS = ("saved_model", "tflite")
