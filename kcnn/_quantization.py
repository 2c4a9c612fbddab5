"""Marks the ops of a layer that an int8 TFLite file keeps in float32.

Some arithmetic does not survive int8: a partial convolution divides by the number of valid
pixels in a window, which goes from 1 to `k_h * k_w * C` (one int8 scale cannot hold both
ends), and an iterative fill adds up a hundred small corrections. A layer computes such
values under `keep_float()`; `kcnn.export.export_tflite(..., quantization="int8")` then
quantizes everything else and leaves the ops of that name scope in float32, with QUANTIZE
and DEQUANTIZE ops at the borders (the selective quantization of TFLite's quantization
debugger, `tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=...)`). Outside an
int8 export the scope only names ops.
"""

import re

import keras

# Name scope of the ops an int8 export keeps in float32.
FLOAT_SCOPE = "keep_float"


def keep_float():
    """A name scope whose ops an int8 TFLite export keeps in float32 (see the module)."""
    return keras.name_scope(FLOAT_SCOPE)


# TensorFlow makes a scope name unique within a graph by appending `_1`, `_2`, ...
_FLOAT_SCOPE_PATTERN = re.compile(rf"(^|/){FLOAT_SCOPE}(_\d+)?/")


def in_float_scope(name):
    """Whether an op or tensor name lies under `FLOAT_SCOPE` (fused ops join names with
    `;`; any of them counts)."""
    return any(_FLOAT_SCOPE_PATTERN.search(part) for part in name.split(";"))
