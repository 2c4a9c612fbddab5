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

# kcnn's layers and exporters are written for the TensorFlow backend of Keras 3.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# TensorFlow's BFC allocator for CPU tensors. TensorFlow's default there is malloc (BFC only
# when its oneDNN kernels are on, which it does by itself on some x86 CPUs only): every large
# tensor is then a fresh mmap whose pages fault in one by one and go back to the OS when freed.
# The BFC allocator keeps and reuses them. Measured on a 2-vCPU AMD EPYC VM: training steps of
# configs/detect_shapes.yaml 348 -> 250 ms with a quarter of the page faults and the same peak
# memory; deformable convolution forward+backward 2.0-2.4x faster (bench/RESULTS.md). It takes
# effect when kcnn is imported before TensorFlow allocates its first tensor; set
# TF_CPU_ALLOCATOR_USE_BFC=false to keep malloc.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

from kcnn import (
    detection,  # noqa: E402, F401  (registers DetectionDecoder and DetectionLoss)
    layers,  # noqa: E402, F401  (registers kcnn layers for deserialization)
    models,  # noqa: E402, F401  (registers the task models: UNet, PConvUNet, ...)
    tasks,  # noqa: E402, F401  (registers the tasks' losses and metrics a run's model.keras holds)
)

__version__ = "0.1.0"
