"""keras-hub's RetinaNet behind kcnn's detection contract: the class prior keras-hub 0.32
puts on the wrong head, the anchor-delta decoding, the focal loss and the RetinaNet loss
against NumPy float64, `.keras` round trip, and the builtins-only TFLite file with its
decoder against Keras."""

import math

import keras
import keras_hub
import numpy as np
import pytest

from kcnn.backbones import build_backbone
from kcnn.detection import (
    RetinaNet,
    RetinaNetDecoder,
    RetinaNetLoss,
    decode_anchor_deltas,
    focal_loss,
)
from kcnn.detection.detectors import detection_decoder, detector_with_decoder
from kcnn.detection.retinanet import PyramidEncoder, retinanet_anchors, retinanet_detector
from kcnn.export import LiteRTRunner, export_tflite

SIZE = 64
CLASSES = 3
PRIOR = math.log(0.01 / 0.99)


def _backbone():
    return build_backbone(
        "plain_cnn", input_shape=(SIZE, SIZE, 3), filters=(4, 4, 8, 8, 8, 8), convs_per_level=1
    )


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return RetinaNet(_backbone(), CLASSES, head_convs=1, anchor_size=2.0)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def test_keras_hub_puts_the_prior_on_the_box_head_and_kcnn_moves_it(model):
    images = np.random.default_rng(0).uniform(size=(2, SIZE, SIZE, 3)).astype("float32")
    # keras-hub as it is: class logits start at 0 (probability 0.5 on every anchor).
    keras.utils.set_random_seed(0)
    stock = keras_hub.models.RetinaNetObjectDetector(
        keras_hub.models.RetinaNetBackbone(
            image_encoder=PyramidEncoder(_backbone()),
            min_level=3,
            max_level=5,
            use_p5=False,
            image_shape=(SIZE, SIZE, 3),
        ),
        num_classes=CLASSES,
        bounding_box_format="xyxy",
        pre_logits_num_conv_layers=1,
    )
    stock_logits = np.asarray(stock(images)["cls_logits"])
    assert abs(_sigmoid(stock_logits).mean() - 0.5) < 0.05
    # kcnn's: the paper's prior on the class logits, none on the box deltas.
    detector = retinanet_detector(model)
    np.testing.assert_allclose(detector.classification_head.weights[-1].numpy(), PRIOR, rtol=1e-6)
    np.testing.assert_array_equal(detector.box_head.weights[-1].numpy(), 0.0)
    outputs = model.predict(images, verbose=0)
    assert abs(_sigmoid(outputs[..., 4:]).mean() - 0.01) < 0.005
    assert outputs.shape == (2, len(retinanet_anchors(model)[1]), 4 + CLASSES)


def test_anchors_are_keras_hubs_in_output_order(model):
    config, anchors = retinanet_anchors(model)
    assert config["anchor_size"] == 2.0 and (config["min_level"], config["max_level"]) == (3, 5)
    # 9 anchors per cell, levels P3 (8 x 8 cells), P4, P5, finest first.
    assert len(anchors) == 9 * (8 * 8 + 4 * 4 + 2 * 2)
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    # Centred on multiples of the stride, row-major (torchvision's convention too).
    np.testing.assert_array_equal(centres[:9], 0.0)
    np.testing.assert_array_equal(centres[9:18], [[8.0, 0.0]] * 9)
    np.testing.assert_array_equal(centres[8 * 9 : 8 * 9 + 9], [[0.0, 8.0]] * 9)
    np.testing.assert_array_equal(centres[576:585], 0.0)  # P4's first cell
    # Per cell: for each aspect ratio r = h / w, sizes s = int(anchor_size * stride *
    # 2**(i / 3)), w = s / sqrt(r), h = s * sqrt(r); half-sides rounded to whole pixels.
    for first, stride in ((0, 8), (576, 16)):
        expected = [
            [round(s / math.sqrt(r) / 2), round(s * math.sqrt(r) / 2)]
            for r in (0.5, 1.0, 2.0)
            for s in (int(2.0 * stride * 2 ** (i / 3)) for i in range(3))
        ]
        np.testing.assert_array_equal(anchors[first : first + 9, 2:], expected)


def test_anchor_delta_decoding_matches_keras_and_a_worked_example():
    # Anchor (0, 0, 10, 20): centre (5, 10), size (10, 20). Deltas (0.1, -0.2, ln 2, 0):
    # centre (5 + 1, 10 - 4) = (6, 6), size (20, 20) -> (-4, -4, 16, 16).
    anchors = np.array([[0.0, 0.0, 10.0, 20.0]], np.float32)
    deltas = np.array([[[0.1, -0.2, math.log(2.0), 0.0]]], np.float32)
    np.testing.assert_allclose(
        np.asarray(decode_anchor_deltas(anchors, deltas)), [[[-4, -4, 16, 16]]], atol=1e-5
    )
    rng = np.random.default_rng(1)
    corners = rng.uniform(0, 50, size=(20, 2)).astype(np.float32)
    anchors = np.concatenate([corners, corners + rng.uniform(4, 30, (20, 2))], -1)
    deltas = rng.normal(scale=0.3, size=(2, 20, 4)).astype(np.float32)
    reference = keras.utils.bounding_boxes.decode_deltas_to_boxes(
        anchors=anchors,
        boxes_delta=deltas,
        anchor_format="xyxy",
        box_format="xyxy",
        encoded_format="center_xywh",
        variance=[1.0, 1.0, 1.0, 1.0],
    )
    np.testing.assert_allclose(
        np.asarray(decode_anchor_deltas(anchors, deltas)), np.asarray(reference), rtol=1e-5
    )


def test_focal_loss_is_the_papers_equation_5():
    rng = np.random.default_rng(2)
    logits = rng.normal(scale=3, size=(50,))
    targets = rng.integers(0, 2, size=(50,)).astype(np.float64)
    p = _sigmoid(logits)
    p_t = np.where(targets == 1, p, 1 - p)
    alpha_t = np.where(targets == 1, 0.25, 0.75)
    expected = -alpha_t * (1 - p_t) ** 2 * np.log(p_t)
    np.testing.assert_allclose(
        np.asarray(focal_loss(logits.astype("float32"), targets)), expected, rtol=1e-4
    )


def _iou(boxes, box):
    low = np.maximum(boxes[:, :2], box[:2])
    high = np.minimum(boxes[:, 2:], box[2:])
    inter = np.prod(np.clip(high - low, 0, None), axis=1)
    area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    return inter / (area + np.prod(box[2:] - box[:2]) - inter)


def test_loss_equals_a_numpy_float64_retinanet_loss(model):
    config, anchors = retinanet_anchors(model)
    anchors = anchors.astype(np.float64)
    # Image 0: one box equal to anchor 300 (class 2) and a padding row; image 1: no boxes.
    box = anchors[300]
    y_true = np.zeros((2, 2, 5), np.float32)
    y_true[0, 0] = [*box, 2]
    y_true[0, 1, 4] = -1
    y_true[1, :, 4] = -1
    rng = np.random.default_rng(3)
    y_pred = rng.normal(scale=0.5, size=(2, len(anchors), 4 + CLASSES)).astype(np.float32)
    loss = RetinaNetLoss(CLASSES, SIZE, config)
    terms = {k: float(v) for k, v in loss.loss_terms(y_true, y_pred).items()}

    iou = _iou(anchors, box)
    foreground = iou >= 0.5
    counted = np.concatenate([(iou >= 0.5) | (iou < 0.4), np.ones(len(anchors), bool)])
    assert foreground[300] and foreground.sum() >= 1
    targets = np.zeros((2 * len(anchors), CLASSES))
    targets[: len(anchors)][foreground, 2] = 1
    logits = y_pred[..., 4:].reshape(-1, CLASSES).astype(np.float64)
    p = _sigmoid(logits)
    p_t = np.where(targets == 1, p, 1 - p)
    alpha_t = np.where(targets == 1, 0.25, 0.75)
    focal = -alpha_t * (1 - p_t) ** 2 * np.log(p_t)
    classification = (focal.sum(axis=1) * counted).sum() / foreground.sum()
    size = anchors[:, 2:] - anchors[:, :2]
    centre = anchors[:, :2] + size / 2
    box_size = box[2:] - box[:2]
    deltas = np.concatenate(
        [(box[:2] + box_size / 2 - centre) / size, np.log(box_size / size)], axis=1
    )
    error = np.abs(y_pred[0, :, :4].astype(np.float64) - deltas)[foreground]
    huber = np.where(error < 1, 0.5 * error**2, error - 0.5).sum() / foreground.sum()
    assert terms["classification"] == pytest.approx(classification, rel=1e-4)
    assert terms["box"] == pytest.approx(huber, rel=1e-4)
    assert float(loss(y_true, y_pred)) == pytest.approx(classification + huber, rel=1e-4)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="consecutive pyramid levels"):
        RetinaNet(_backbone(), CLASSES, levels=("P3", "P5"))
    with pytest.raises(ValueError, match="num_classes"):
        RetinaNet(_backbone(), 0)
    with pytest.raises(ValueError, match="levels"):
        RetinaNet(_backbone(), CLASSES, levels=("P6", "P7"))
    with pytest.raises(ValueError, match=r"y_pred` must have shape \(batch, 756, 7\)"):
        config, _ = retinanet_anchors(RetinaNet(_backbone(), CLASSES, anchor_size=2.0))
        RetinaNetLoss(CLASSES, SIZE, config)(np.zeros((1, 1, 5)), np.zeros((1, 10, 7)))


def test_trained_model_round_trips_and_exports_with_its_decoder(model, tmp_path):
    from kcnn.data import load_detection_data

    data = load_detection_data("shapes", image_size=SIZE, train_count=32, test_count=8)
    images = data.x_train / np.float32(255)
    config, _ = retinanet_anchors(model)
    model.compile(keras.optimizers.Adam(1e-3), loss=RetinaNetLoss(CLASSES + 1, SIZE, config))
    with pytest.raises(ValueError, match="y_pred"):  # a loss for another class count
        model.fit(images, data.y_train, batch_size=8, epochs=1, verbose=0)
    model.compile(keras.optimizers.Adam(1e-3), loss=RetinaNetLoss(CLASSES, SIZE, config))
    model.optimizer.build(model.trainable_variables)  # else fit traces its step twice
    history = model.fit(images, data.y_train, batch_size=8, epochs=3, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]

    path = tmp_path / "retinanet.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    test = data.x_test / np.float32(255)
    np.testing.assert_allclose(
        reloaded.predict(test, verbose=0), model.predict(test, verbose=0), atol=1e-5
    )
    decoder = detection_decoder(reloaded)
    assert isinstance(decoder, RetinaNetDecoder)
    restored = RetinaNetDecoder.from_config(decoder.get_config())
    assert restored.anchors == decoder.anchors

    # The detector with its decoder converts with builtin ops only (or export_tflite raises)
    # and runs; the network itself matches Keras.
    full = export_tflite(detector_with_decoder(model), tmp_path / "retinanet.tflite")
    outputs = LiteRTRunner(full).all_outputs(test)
    assert set(outputs) == {"boxes", "scores", "classes", "count"}
    raw = export_tflite(model, tmp_path / "raw.tflite")
    keras_raw = model.predict(test, verbose=0)
    np.testing.assert_allclose(LiteRTRunner(raw)(test), keras_raw, rtol=1e-3, atol=1e-3)


def test_decoder_in_litert_returns_keras_detections(model, tmp_path):
    # Barely trained, boxes sit on their anchors, where one cell's anchors overlap with IoU
    # exactly 0.5 (a square inside a 1:2 one) and float noise decides NMS; so the decoder is
    # checked on its own, on outputs with distinct scores and boxes away from such ties.
    config, anchors = retinanet_anchors(model)
    decoder = RetinaNetDecoder(CLASSES, SIZE, config)
    rng = np.random.default_rng(4)
    raw = np.full((3, len(anchors), 4 + CLASSES), -9.0, np.float32)
    raw[..., :4] = rng.normal(scale=0.2, size=(3, len(anchors), 4))
    chosen = rng.choice(len(anchors), size=(3, 12), replace=False)
    for image in range(3):
        raw[image, chosen[image], 4 + rng.integers(0, CLASSES, 12)] = rng.uniform(-2, 4, 12)
    inputs = keras.Input((len(anchors), 4 + CLASSES))
    path = export_tflite(keras.Model(inputs, decoder(inputs)), tmp_path / "decoder.tflite")
    expected = {k: np.asarray(v) for k, v in decoder(raw).items()}
    assert expected["count"].min() > 0
    outputs = LiteRTRunner(path).all_outputs(raw)
    np.testing.assert_array_equal(outputs["count"], expected["count"])
    np.testing.assert_array_equal(outputs["classes"], expected["classes"])
    np.testing.assert_allclose(outputs["boxes"], expected["boxes"], rtol=1e-5, atol=1e-4)
    # Each detection is its anchor moved by the deltas (NumPy), clipped to the image.
    size = anchors[:, 2:] - anchors[:, :2]
    centre = anchors[:, :2] + size / 2
    for image in range(3):
        scores = _sigmoid(raw[image, :, 4:].max(-1))
        for row in range(expected["count"][image]):
            anchor = int(np.argmin(np.abs(scores - expected["scores"][image, row])))
            deltas = raw[image, anchor, :4].astype(np.float64)
            middle = centre[anchor] + deltas[:2] * size[anchor]
            half = size[anchor] * np.exp(deltas[2:]) / 2
            box = np.clip(np.concatenate([middle - half, middle + half]), 0, SIZE)
            np.testing.assert_allclose(expected["boxes"][image, row], box, rtol=1e-5, atol=1e-4)
