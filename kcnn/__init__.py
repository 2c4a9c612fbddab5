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

from kcnn import (
    detection,  # noqa: E402, F401  (registers DetectionDecoder and DetectionLoss)
    layers,  # noqa: E402, F401  (registers kcnn layers for deserialization)
)

__version__ = "0.1.0"
