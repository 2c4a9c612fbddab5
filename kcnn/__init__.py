"""kcnn: a TensorFlow / Keras 3 computer-vision toolkit.

Subpackages: `kcnn.layers` (custom Keras layers), `kcnn.ops` (their kernels),
`kcnn.backbones` (keras-hub and plain backbones behind one `pyramid_outputs` contract),
`kcnn.models` (architectures), `kcnn.tasks` (task heads, losses, metrics), `kcnn.data`
(offline data sets and tf.data pipelines), `kcnn.training` (configs and the training loop),
`kcnn.export` (SavedModel / TFLite), `kcnn.analysis` (conv arithmetic, params, MACs,
receptive fields) and `kcnn.viz` (plots).

Importing `kcnn` registers its layers for Keras serialization, so `.keras` files reload with
no `custom_objects`.
"""

import os
import sys
import warnings

# kcnn's layers and exporters are written for the TensorFlow backend of Keras 3.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# TensorFlow's oneDNN CPU kernels, which it turns on by itself only on some x86 CPUs. Without
# them (e.g. on AMD EPYC) a dilated Conv2DTranspose and a depthwise convolution with unequal
# strides have no CPU kernel at all. TensorFlow reads the variable when it is imported, so this
# takes effect when kcnn is imported first; set TF_ENABLE_ONEDNN_OPTS=0 to keep them off.
_ONEDNN_CHOSEN = "TF_ENABLE_ONEDNN_OPTS" in os.environ
_TENSORFLOW_FIRST = "tensorflow" in sys.modules
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
# TensorFlow's BFC allocator for CPU tensors. TensorFlow's default there is malloc (BFC only
# when its oneDNN kernels are on, which it does by itself on some x86 CPUs only): every large
# tensor is then a fresh mmap whose pages fault in one by one and go back to the OS when freed.
# The BFC allocator keeps and reuses them. Measured on a 2-vCPU AMD EPYC VM: training steps of
# configs/detect_shapes.yaml 348 -> 250 ms with a quarter of the page faults and the same peak
# memory; deformable convolution forward+backward 2.0-2.4x faster (bench/RESULTS.md). It takes
# effect when kcnn is imported before TensorFlow allocates its first tensor; set
# TF_CPU_ALLOCATOR_USE_BFC=false to keep malloc.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

from kcnn import (  # noqa: E402
    detection,  # noqa: E402, F401  (registers DetectionDecoder and DetectionLoss)
    layers,  # noqa: E402, F401  (registers kcnn layers for deserialization)
    models,  # noqa: E402, F401  (registers the task models: UNet, PConvUNet, ...)
    tasks,  # noqa: E402, F401  (registers the tasks' losses and metrics a run's model.keras holds)
)

__version__ = "0.1.0"


def _warn_when_onednn_came_too_late():
    """TensorFlow imported before kcnn with its oneDNN kernels off cannot turn them on any
    more: say so once, with the two ways out."""
    if _ONEDNN_CHOSEN or not _TENSORFLOW_FIRST:
        return
    from tensorflow.python.util import _pywrap_util_port  # no public query exists

    if not _pywrap_util_port.IsMklEnabled():
        warnings.warn(
            "TensorFlow was imported before kcnn, with its oneDNN CPU kernels off; they can no "
            "longer be turned on in this process. Import kcnn before TensorFlow, or start "
            "Python with TF_ENABLE_ONEDNN_OPTS=1 (TF_ENABLE_ONEDNN_OPTS=0 silences this).",
            stacklevel=3,
        )


_warn_when_onednn_came_too_late()
