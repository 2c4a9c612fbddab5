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
from keras.src import backend, tree
from keras.src.models import functional

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


def call_with_float_layers(model, inputs, float_layers, training=None, mask=None, **kwargs):
    """`keras.Model.call` of a functional `model` with the layers named in `float_layers`
    called under `keep_float()` (for a model that keeps whole layers out of int8).

    A functional model runs its layers again at every trace (a SavedModel export included),
    so the scope has to be entered here, at call time, not when the graph was built.
    """
    inputs = model._standardize_inputs(inputs)
    if mask is not None:
        for x, x_mask in zip(inputs, tree.flatten(mask), strict=False):
            if x_mask is not None:
                backend.set_keras_mask(x, x_mask)

    def operation_fn(operation):
        call = functional.operation_fn(operation, training=training, **kwargs)
        if operation.name not in float_layers:
            return call

        def float_call(*args, **call_kwargs):
            with keep_float():
                return call(*args, **call_kwargs)

        return float_call

    outputs = model._run_through_graph(inputs, operation_fn=operation_fn)
    return functional.unpack_singleton(outputs)
