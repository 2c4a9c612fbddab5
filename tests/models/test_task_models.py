"""Task models are `keras.Model` subclasses that carry their own facts in their config."""

import keras
import numpy as np
import pytest

from kcnn.backbones import build_backbone
from kcnn.detection import DetectionLoss, Detector, RetinaNet, detection_decoder
from kcnn.models import (
    FCN,
    ConvUNetInpaint,
    DeepLabV3Plus,
    FillResidualUNet,
    PConvUNet,
    SegNet,
    UNet,
)
from kcnn.training.fitting import undistributed_copy

RNG = np.random.default_rng(0)
SIZE = 32


def _backbone(filters=(8, 8, 8)):
    return build_backbone("plain_cnn", input_shape=(SIZE, SIZE, 3), filters=filters)


CASES = {
    "unet": (lambda: UNet(_backbone(), 3, decoder_filters=(8, 4)), {"decoder_filters": [8, 4]}),
    "fcn": (lambda: FCN(_backbone(), 3, skip_levels=1), {"skip_levels": 1}),
    "deeplabv3plus": (
        lambda: DeepLabV3Plus(
            _backbone((8, 8, 8, 8)), 3, output_stride=8, atrous_rates=(1, 2), aspp_filters=8
        ),
        {"atrous_rates": [1, 2], "output_stride": 8},
    ),
    "segnet": (
        lambda: SegNet((SIZE, SIZE, 3), 4, filters=(8, 16), convs_per_stage=(1, 1)),
        {"input_shape": [SIZE, SIZE, 3], "filters": [8, 16]},
    ),
    "pconv_unet": (lambda: PConvUNet((SIZE, SIZE, 3), width=4, depth=3), {"width": 4}),
    "conv_unet_inpaint": (lambda: ConvUNetInpaint((SIZE, SIZE, 3), width=4, depth=3), {"depth": 3}),
    "fill_residual_unet": (
        lambda: FillResidualUNet((SIZE, SIZE, 3), width=4, depth=3, fill_iterations=9),
        {"fill_iterations": 9, "width": 4},
    ),
    "detector": (
        lambda: Detector(
            _backbone((8, 8, 8, 8, 8, 8)), 2, levels=("P4", "P3"), neck_filters=8, head_filters=8
        ),
        {"levels": ["P3", "P4"], "num_classes": 2},
    ),
    "retinanet": (
        lambda: RetinaNet(_backbone((8, 8, 8, 8, 8, 8)), 2, levels=("P3", "P4")),
        {"levels": ["P3", "P4"], "anchor_size": 4.0},
    ),
}


def _inputs(model):
    images = RNG.random((2, SIZE, SIZE, 3)).astype("float32")
    if len(model.inputs) == 2:
        mask = (RNG.random((2, SIZE, SIZE, 1)) > 0.3).astype("float32")
        return [images * mask, mask]
    return images


@pytest.mark.parametrize("name", sorted(CASES))
def test_keras_file_and_config_round_trip_keep_the_class_and_its_facts(name, tmp_path):
    build, facts = CASES[name]
    model = build()
    config = model.get_config()
    for key, value in facts.items():
        assert config[key] == value
    inputs = _inputs(model)
    expected = np.asarray(model(inputs, training=False))
    path = tmp_path / f"{name}.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)  # no custom_objects
    assert type(reloaded) is type(model)
    assert reloaded.get_config().keys() == config.keys()
    np.testing.assert_allclose(np.asarray(reloaded(inputs, training=False)), expected, atol=1e-6)
    copy = undistributed_copy(model)
    assert type(copy) is type(model)
    np.testing.assert_allclose(np.asarray(copy(inputs, training=False)), expected, atol=1e-6)


def test_a_detector_knows_its_strides_and_builds_its_loss_and_decoder():
    model = CASES["detector"][0]()
    assert model.levels == ("P3", "P4") and model.strides == (8, 16)
    assert model.image_size == (SIZE, SIZE)
    loss = model.make_loss(box_weight=3.0)
    assert isinstance(loss, DetectionLoss) and loss.box_weight == 3.0
    decoder = detection_decoder(model, max_detections=7)
    assert decoder.strides == (8, 16) and decoder.max_detections == 7
    # One point per cell of each level: the output length follows from the strides alone.
    points = sum((SIZE // stride) ** 2 for stride in model.strides)
    assert model.output_shape == (None, points, 4 + 2)


def test_a_retinanet_knows_its_anchors():
    model = CASES["retinanet"][0]()
    anchors = model.anchors
    assert model.output_shape == (None, len(anchors), 4 + 2)
    # 9 anchors (3 scales x 3 ratios) per cell of each level.
    assert len(anchors) == sum(9 * (SIZE // stride) ** 2 for stride in model.strides)


def test_a_model_that_is_not_a_detector_is_named_in_the_error():
    with pytest.raises(ValueError, match=r"must be a kcnn detector .*Received: UNet 'unet'"):
        detection_decoder(CASES["unet"][0]())
