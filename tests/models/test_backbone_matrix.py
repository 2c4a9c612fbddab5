"""Every backbone under every model that takes one.

For each name in `kcnn.backbones.BACKBONES` (shrunk by constructor overrides, the families'
own architecture code kept) and each backbone model (classifier, U-Net, FCN, Detector,
RetinaNet): the model builds at 96x96 (3 x 32: levels of odd size, 3x3 at P5) and at
`(None, None)`, where the one graph predicts at 64x64 (even levels) and at 96x96 the shape its
contract says (a model that needs a fixed size is built at 64x64 and at 96x96 instead); at
96x96, where the deepest level is 3x3 (odd), it also takes one training step with a finite
loss that moves the weights (the step's code is the same at 64x64). One backbone per family
also converts to TFLite with builtin ops only and LiteRT matches Keras.

Names whose tiny build is another name's architecture layer for layer (ResNet-34 shrunk to
one block per stage is ResNet-18 shrunk the same way) run the model matrix once, under the
name they share it with; a test checks that they still coincide, and every name is still
built and analysed under a classifier.
"""

import functools
import json

import keras
import numpy as np
import pytest

from kcnn.analysis import analyze
from kcnn.backbones import BACKBONES, build_backbone
from kcnn.detection import Detector, RetinaNet
from kcnn.export import LiteRTRunner, export_tflite
from kcnn.models import FCN, UNet
from kcnn.tasks import build_classifier

from ..backbones.tiny import ONE_PER_FAMILY, SAME_TINY_ARCHITECTURE, TINY

pytestmark = pytest.mark.matrix

CLASSES = 3
# One name per tiny architecture.
MATRIX_BACKBONES = [name for name in BACKBONES if name not in SAME_TINY_ARCHITECTURE]


def _classifier(backbone):
    return build_classifier(backbone, CLASSES)


def _unet(backbone):
    return UNet(backbone, CLASSES, decoder_filters=(8, 4))


def _fcn(backbone):
    return FCN(backbone, CLASSES, skip_levels=2)


def _detector(backbone):
    return Detector(backbone, CLASSES, neck_filters=8, head_filters=8, head_convs=1)


def _retinanet(backbone):
    return RetinaNet(backbone, CLASSES, head_convs=0)


# name -> (builder, takes (None, None) inputs, output shape for a batch at a size)
MODELS = {
    "classifier": (_classifier, True, lambda batch, size: (batch, CLASSES)),
    "unet": (_unet, True, lambda batch, size: (batch, size, size, CLASSES)),
    "fcn": (_fcn, True, lambda batch, size: (batch, size, size, CLASSES)),
    # Points at strides 8, 16, 32 (one per cell), 9 anchors per cell for RetinaNet.
    "detector": (_detector, True, lambda batch, size: (batch, _cells(size), 4 + CLASSES)),
    "retinanet": (_retinanet, False, lambda batch, size: (batch, 9 * _cells(size), 4 + CLASSES)),
}


def _cells(size):
    return sum((size // stride) ** 2 for stride in (8, 16, 32))


def _images(batch, size, seed=0):
    return np.random.default_rng(seed).random((batch, size, size, 3)).astype("float32")


def _targets(model_name, batch, size):
    rng = np.random.default_rng(1)
    if model_name == "classifier":
        return rng.integers(0, CLASSES, batch)
    if model_name in ("unet", "fcn"):
        return rng.integers(0, CLASSES, (batch, size, size))
    boxes = np.full((batch, 2, 5), -1.0, "float32")  # (x1, y1, x2, y2, class), -1 = padding
    boxes[:, 0] = [size / 4, size / 4, size * 3 / 4, size * 3 / 4, 1]
    return boxes


def _loss(model_name, model):
    if model_name in ("detector", "retinanet"):
        return model.make_loss()
    return keras.losses.SparseCategoricalCrossentropy()


def _one_training_step(model_name, model, size):
    # Eager: tracing the step would take most of the test time, and the step is the same.
    model.compile(
        optimizer=keras.optimizers.SGD(0.01), loss=_loss(model_name, model), run_eagerly=True
    )
    before = [np.array(weight) for weight in model.trainable_weights]
    loss = model.train_on_batch(_images(2, size), _targets(model_name, 2, size))
    assert np.isfinite(loss), loss
    moved = [
        not np.array_equal(old, np.asarray(new))
        for old, new in zip(before, model.trainable_weights, strict=True)
    ]
    assert sum(moved) > len(moved) // 2, "most weights should change after one step"


def _architecture(backbone):
    """Every layer's class, configuration without its name, and weight shapes, in order."""
    layers = backbone._flatten_layers(include_self=False, recursive=True)
    return [
        (
            type(layer).__name__,
            json.dumps(
                {key: value for key, value in layer.get_config().items() if key != "name"},
                sort_keys=True,
                default=str,
            ),
            [tuple(weight.shape) for weight in layer.weights],
        )
        for layer in layers
    ]


@pytest.mark.parametrize("name, shared", sorted(SAME_TINY_ARCHITECTURE.items()))
def test_names_left_out_of_the_matrix_build_the_architecture_they_share(name, shared):
    # If the tiny overrides stop covering what tells the two apart, this fails: then the
    # name needs its own row in the matrix.
    built = [build_backbone(n, (64, 64, 3), **TINY[n]) for n in (name, shared)]
    assert _architecture(built[0]) == _architecture(built[1])
    assert built[0].count_params() == built[1].count_params()


@functools.cache
def _backbone(name, size):
    """One backbone per name and input size, shared by the five models built on it (a Keras
    model called on new inputs, as a functional model calls a nested one): building the
    keras-hub families is most of a model's build time."""
    keras.utils.set_random_seed(0)
    return build_backbone(name, (size, size, 3), **TINY[name])


@pytest.mark.parametrize("backbone_name", MATRIX_BACKBONES)
@pytest.mark.parametrize("model_name", list(MODELS))
def test_every_backbone_under_every_model(model_name, backbone_name):
    build, free_size, expected_shape = MODELS[model_name]
    # A model of free size is probed at 64 (even levels) and 96 (odd) by the one graph; a
    # fixed-size one is built at each size.
    sizes = [96, None] if free_size else [64, 96]
    for size in sizes:
        model = build(_backbone(backbone_name, size))
        for probe in [size] if size else [64, 96]:
            assert tuple(model(_images(1, probe)).shape) == expected_shape(1, probe)
        if size == 96:
            _one_training_step(model_name, model, size)


@pytest.mark.parametrize("backbone_name", ("plain_cnn", *ONE_PER_FAMILY))
def test_one_backbone_per_family_exports_to_tflite(backbone_name, tmp_path):
    # A U-Net uses every level of the backbone; a 64x64 input keeps the file small.
    keras.utils.set_random_seed(0)
    backbone = build_backbone(backbone_name, (64, 64, 3), **TINY[backbone_name])
    model = _unet(backbone)
    images = _images(2, 64, seed=3)
    path = export_tflite(model, tmp_path / "model.tflite")
    np.testing.assert_allclose(LiteRTRunner(path)(images), model(images), atol=1e-4)


@pytest.mark.parametrize("backbone_name", BACKBONES)
def test_analyze_walks_every_backbone(backbone_name):
    # Nested keras-hub models layer by layer, subclassed blocks by their calls: the total
    # is Keras's count and every convolution has its MACs.
    backbone = build_backbone(backbone_name, (64, 64, 3), **TINY[backbone_name])
    model = build_classifier(backbone, CLASSES)
    analysis = analyze(model)
    assert analysis.total_params == model.count_params()
    # Every Conv2D of the model (each called once) is a row with its MACs.
    layers = [layer for layer in model._flatten_layers() if type(layer) is keras.layers.Conv2D]
    rows = [record for record in analysis.layers if record.class_name == "Conv2D"]
    assert len(rows) == len(layers) > 0
    assert all(record.macs > 0 for record in rows)
