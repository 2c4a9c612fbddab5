"""Faster R-CNN with FPN: its detections against a NumPy float64 decoding with per-class NMS,
the decoder contract of the detection task, the train step's four losses against NumPy
float64 references, a few `fit` steps that overfit two scenes, the `.keras` round trip, the
builtins-only TFLite file against Keras, and the argument checks."""

import json
import math
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from kcnn.backbones import build_backbone
from kcnn.data import load_detection_data
from kcnn.detection import (
    FasterRCNN,
    FasterRCNNDecoder,
    FasterRCNNLoss,
    detection_decoder,
    detection_loss,
    detector_with_decoder,
    generate_proposals,
    sample_rois,
)
from kcnn.export import LiteRTRunner, export_tflite
from kcnn.tasks import get_task

from ..layers.citizenship import built_with_mixed_precision
from . import two_stage_reference as reference

SIZE = 64
# Tiny, and with every anchor in the region proposal network's sample (2048 > 1020 anchors:
# all positives and negatives are drawn), so its loss has a sampling-free reference; a low
# score threshold, so that a barely trained model has detections to compare.
TINY = {
    "fpn_channels": 16,
    "box_head_units": 32,
    "rpn_batch_size": 2048,
    "roi_batch_size": 64,
    "rpn_post_nms_top_k_test": 50,
    "score_threshold": 0.001,
    "max_detections": 20,
}
LOSS_WEIGHTS = {
    "rpn_objectness_weight": 1.0,
    "rpn_box_weight": 2.0,
    "roi_class_weight": 1.0,
    "roi_box_weight": 0.5,
}
ROI_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
# One SGD step on 2 logical CPUs against one step of the whole batch on one device, from the
# same weights, for Faster and Mask R-CNN (no batch norm: its statistics are per replica).
MIRRORED_STEP = """
import json
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from kcnn.backbones import build_backbone
from kcnn.data import load_detection_data
from kcnn.detection import FasterRCNN, MaskRCNN, detection_loss

scenes = load_detection_data("shapes", image_size=64, train_count=4, test_count=1, masks=True)
images, boxes = scenes.x_train / np.float32(255), scenes.y_train.astype("float32")
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def build(family):
    backbone = build_backbone(
        "plain_cnn", input_shape=(64, 64, 3), filters=(4, 4, 8, 8, 8, 8), convs_per_level=1,
        normalization=None,
    )
    arguments = dict(fpn_channels=16, box_head_units=32, roi_batch_size=64)
    if family is MaskRCNN:
        arguments.update(mask_head_filters=8, mask_head_convs=1, mask_pool_size=7)
    model = family(backbone, 4, **arguments)
    model.compile(keras.optimizers.SGD(0.05), loss=detection_loss(model, rpn_box_weight=2.0))
    return model


results = {}
for family in (FasterRCNN, MaskRCNN):
    targets = boxes if family is FasterRCNN else {"boxes": boxes, "masks": scenes.masks_train}
    keras.utils.set_random_seed(0)
    one = build(family)
    initial = one.get_weights()
    with strategy.scope():
        mirrored = build(family)
    mirrored.set_weights(initial)
    logs = {}
    for name, model in (("one_device", one), ("mirrored", mirrored)):
        history = model.fit(images, targets, batch_size=4, epochs=1, shuffle=False, verbose=0)
        logs[name] = {key: values[0] for key, values in history.history.items()}
    pairs = list(zip(one.get_weights(), mirrored.get_weights(), initial))
    results[family.__name__] = {
        **logs,
        "replicas": strategy.num_replicas_in_sync,
        "weight_error": max(float(np.max(np.abs(a - b))) for a, b, _ in pairs),
        "weight_change": max(float(np.max(np.abs(a - c))) for a, _, c in pairs),
    }
print("RESULT " + json.dumps(results))
"""
CLAMP = math.log(1000.0 / 16)


def _backbone(normalization="batch"):
    return build_backbone(
        "plain_cnn",
        input_shape=(SIZE, SIZE, 3),
        filters=(4, 4, 8, 8, 8, 8),
        convs_per_level=1,
        normalization=normalization,
    )


@pytest.fixture(scope="module")
def data():
    scenes = load_detection_data("shapes", image_size=SIZE, train_count=2, test_count=2)
    return scenes, scenes.x_train / np.float32(255), scenes.y_train.astype("float32")


@pytest.fixture(scope="module")
def trained(data):
    """A model fitted for 30 steps on two scenes, and its history. Without batch norm, so that
    inference runs what training fitted (with it, one scene had no detection at all in a
    trial: nothing for the comparisons below to check)."""
    scenes, images, targets = data
    keras.utils.set_random_seed(0)
    model = FasterRCNN(_backbone(normalization=None), len(scenes.class_names), **TINY)
    model.compile(keras.optimizers.Adam(3e-3), loss=detection_loss(model, **LOSS_WEIGHTS))
    model.optimizer.build(model.trainable_variables)  # else fit traces its step twice
    history = model.fit(images, targets, batch_size=2, epochs=30, verbose=0)
    return model, history.history


def _softmax(logits):
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def _second_stage(model, images, proposals, training=False):
    """The box head's logits `(B, R, K + 1)` and deltas `(B, R, K, 4)` on `proposals`."""
    features = model.feature_pyramid(images, training=training)
    boxes, box_indices = model.roi_boxes(proposals)
    logits, deltas = model.roi_head(model.roi_align([features, boxes, box_indices]))
    count = proposals.shape[1]
    return (
        np.asarray(logits, np.float64).reshape(-1, count, model.num_classes + 1),
        np.asarray(deltas, np.float64).reshape(-1, count, model.num_classes, 4),
    )


def _rpn_outputs(model, images, training=False):
    features = model.feature_pyramid(images, training=training)
    return model.rpn_head([features[level] for level in model.levels])


def _reference_detections(logits, deltas, proposals, valid, model):
    """One image, float64 loops: class k's box of proposal p from softmax index k + 1 and
    deltas slot k, clipped, thresholded, greedy NMS within each class, the best first."""
    probabilities = _softmax(logits)
    found = []
    for k in range(model.num_classes):
        boxes, scores = [], []
        for p in np.flatnonzero(valid):
            box = reference.decode(deltas[p, k], proposals[p], ROI_WEIGHTS, CLAMP)
            box = np.clip(box, 0.0, SIZE)
            score = probabilities[p, k + 1]
            if box[2] > box[0] and box[3] > box[1] and score > model.score_threshold:
                boxes.append(box)
                scores.append(score)
        found += [(scores[i], k, boxes[i]) for i in reference.greedy_nms(boxes, scores, 0.5)]
    found.sort(key=lambda detection: -detection[0])
    return found[: model.max_detections]


def _as_detections(rows, size):
    """Reference detections of every image as the decoder's padded dict."""
    result = {
        "boxes": np.zeros((len(rows), size, 4)),
        "scores": np.zeros((len(rows), size)),
        "classes": np.full((len(rows), size), -1),
        "count": np.array([len(image) for image in rows]),
    }
    for b, image in enumerate(rows):
        for row, (score, k, box) in enumerate(image):
            result["boxes"][b, row], result["scores"][b, row], result["classes"][b, row] = (
                box,
                score,
                k,
            )
    return result


def test_detections_follow_the_decoder_contract_and_a_numpy_reference(trained, data):
    model, _ = trained
    scenes, images, _ = data
    raw = model.predict(images, verbose=0)
    assert raw.shape == (2, TINY["max_detections"], 6) and raw.dtype == np.float32
    decoder = detection_decoder(model)
    assert isinstance(decoder, FasterRCNNDecoder)
    assert (decoder.score_threshold, decoder.iou_threshold) == (0.001, 0.5)
    detections = {name: np.asarray(value) for name, value in decoder(raw).items()}
    assert {name: (value.shape, value.dtype.name) for name, value in detections.items()} == {
        "boxes": ((2, 20, 4), "float32"),
        "scores": ((2, 20), "float32"),
        "classes": ((2, 20), "int32"),
        "count": ((2,), "int32"),
    }
    counts = detections["count"]
    assert counts.min() > 0
    np.testing.assert_array_equal(counts, np.sum(detections["classes"] >= 0, axis=1))
    for b, count in enumerate(counts):
        boxes, scores = detections["boxes"][b], detections["scores"][b]
        classes = detections["classes"][b]
        assert np.all((boxes[:count] >= 0) & (boxes[:count] <= SIZE))
        assert np.all(boxes[:count, 2:] > boxes[:count, :2])
        assert np.all((classes[:count] >= 0) & (classes[:count] < len(scenes.class_names)))
        assert np.all(np.diff(scores[:count]) <= 0) and np.all(scores[:count] > 0.001)
        assert np.all(boxes[count:] == 0) and np.all(classes[count:] == -1)

    # The model with its decoder appended returns the same dict (eager, not graph, floats).
    appended = detector_with_decoder(model)(images)
    for name, value in detections.items():
        np.testing.assert_allclose(np.asarray(appended[name]), value, rtol=1e-5, atol=1e-5)

    # A stricter decoder keeps the prefix of rows above its threshold.
    threshold = float(np.median(detections["scores"][0, : counts[0]]))
    stricter = model.make_decoder(score_threshold=threshold, max_detections=5)(raw)
    expected = np.minimum(np.sum(detections["scores"] > threshold, axis=1), 5)
    np.testing.assert_array_equal(np.asarray(stricter["count"]), expected)

    # Float64 NumPy decoding of the model's own proposals and head outputs.
    objectness, deltas = _rpn_outputs(model, images)
    proposals, valid = model.region_proposals(objectness, deltas)
    logits, box_deltas = _second_stage(model, images, proposals)
    proposals, valid = np.asarray(proposals, np.float64), np.asarray(valid)
    rows = [
        _reference_detections(logits[b], box_deltas[b], proposals[b], valid[b], model)
        for b in range(2)
    ]
    comparison = get_task("detection").compare_exports(
        _as_detections(rows, TINY["max_detections"]), detections
    )
    assert "mismatch" not in comparison, comparison
    assert comparison["max_relative_box_error"] < 1e-4
    assert comparison["max_score_error"] < 1e-5


def test_train_step_losses_equal_numpy_float64_references(data):
    scenes, images, targets = data
    keras.utils.set_random_seed(1)
    model = FasterRCNN(_backbone(), len(scenes.class_names), **TINY)
    model.compile(keras.optimizers.Adam(1e-3), loss=detection_loss(model, **LOSS_WEIGHTS))

    # The region proposal network, before the step's update (step 0, training mode).
    objectness, deltas = _rpn_outputs(model, images, training=True)
    anchors = reference.anchors((SIZE, SIZE), (2, 3, 4, 5), (8, 16, 32, 64), (0.5, 1.0, 2.0))
    np.testing.assert_allclose(model.anchors, np.concatenate(anchors), atol=1e-5)
    anchors = np.concatenate(anchors)
    logits = np.concatenate([np.asarray(x, np.float64) for x in objectness], axis=1)
    predicted = np.concatenate([np.asarray(x, np.float64) for x in deltas], axis=1)
    labels, box_targets = [], []
    for b in range(2):
        gt = targets[b].astype(np.float64)
        image_labels, matched = reference.match(anchors, gt[:, :4], gt[:, 4] >= 0, 0.7, 0.3, True)
        labels.append(image_labels)
        box_targets.append(
            [
                reference.encode(gt[m, :4], anchor, (1, 1, 1, 1)) if label == 1 else [0.0] * 4
                for anchor, m, label in zip(anchors, matched, image_labels, strict=True)
            ]
        )
    labels = np.array(labels)
    assert labels.max() == 1 and np.sum(labels == 1) >= np.sum(targets[..., 4] >= 0)
    rpn_objectness, rpn_box = reference.rpn_loss(
        logits, predicted, labels, np.array(box_targets), labels >= 0, 1.0 / 9.0
    )

    # The second stage on the training proposals and the RoIs sampled with step 0's seed.
    proposals, _, proposal_valid = generate_proposals(
        list(objectness), list(deltas), model.region_proposals.anchors, SIZE, 1000, 500
    )
    _, roi_seed = model.sampling_seeds(0)
    rois = sample_rois(proposals, proposal_valid, targets, 64, 0.25, seed=roi_seed)
    roi_logits, roi_deltas = _second_stage(model, images, rois["rois"], training=True)
    roi_class, roi_box = reference.fast_rcnn_loss(
        roi_logits,
        roi_deltas,
        np.asarray(rois["classes"]),
        np.asarray(rois["box_targets"], np.float64),
        np.asarray(rois["valid"]),
        1.0,
    )

    logs = model.train_on_batch(images, targets, return_dict=True)
    expected = {
        "rpn_objectness_loss": rpn_objectness,
        "rpn_box_loss": rpn_box,
        "roi_class_loss": roi_class,
        "roi_box_loss": roi_box,
    }
    for name, value in expected.items():
        assert logs[name] == pytest.approx(value, rel=1e-4), name
    assert rpn_box > 0 and roi_box > 0
    weights = tuple(LOSS_WEIGHTS.values())
    assert logs["loss"] == pytest.approx(
        sum(w * v for w, v in zip(weights, expected.values(), strict=True)), rel=1e-4
    )
    assert int(model.optimizer.iterations.numpy()) == 1


def test_test_step_reports_the_terms_of_the_current_step(trained, data):
    model, _ = trained
    _, images, targets = data
    step = int(model.optimizer.iterations.numpy())
    assert step == 30
    logs = model.test_on_batch(images, targets, return_dict=True)
    terms = {k: float(v) for k, v in model.compute_loss_terms(images, targets, step).items()}
    for name, value in terms.items():
        assert logs[name] == pytest.approx(value, rel=1e-4), name
    weighted = sum(w * v for w, v in zip(LOSS_WEIGHTS.values(), terms.values(), strict=True))
    assert logs["loss"] == pytest.approx(weighted, rel=1e-4)


def test_sampling_is_stateless_and_rois_train_no_proposal_gradient(trained, data):
    model, _ = trained
    _, images, targets = data
    first = model.compute_loss_terms(images, targets, step=3)
    again = model.compute_loss_terms(images, targets, step=3)
    other = model.compute_loss_terms(images, targets, step=4)
    assert {k: float(v) for k, v in first.items()} == {k: float(v) for k, v in again.items()}
    assert float(other["roi_class_loss"]) != float(first["roi_class_loss"])
    with tf.GradientTape(persistent=True) as tape:
        terms = model.compute_loss_terms(images, targets, training=True)
        rpn_total = terms["rpn_objectness_loss"] + terms["rpn_box_loss"]
        roi_total = terms["roi_class_loss"] + terms["roi_box_loss"]
    rpn_weights = model.rpn_head.trainable_weights
    assert all(g is None for g in tape.gradient(roi_total, rpn_weights))
    assert all(g is not None for g in tape.gradient(rpn_total, rpn_weights))


def test_mirrored_step_equals_one_device_for_faster_and_mask_rcnn():
    # Each replica's terms are its share of the global loss and every image samples with its
    # own seed: two replicas log the terms and make the update of one device.
    process = subprocess.run(
        [sys.executable, "-c", MIRRORED_STEP], capture_output=True, text=True, timeout=600
    )
    lines = [line for line in process.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, process.stderr[-3000:]
    results = json.loads(lines[-1][len("RESULT ") :])
    assert set(results) == {"FasterRCNN", "MaskRCNN"}
    for family, result in results.items():
        one, mirrored = result["one_device"], result["mirrored"]
        assert result["replicas"] == 2
        assert set(one) == set(mirrored) and len(one) == (6 if family == "MaskRCNN" else 5)
        for name, value in one.items():
            assert mirrored[name] == pytest.approx(value, rel=1e-5), (family, name)
        assert result["weight_change"] > 1e-3, family
        assert result["weight_error"] < 1e-6, family


def test_mixed_precision_losses_and_outputs_are_float32(data):
    _, images, targets = data
    model = built_with_mixed_precision(lambda: FasterRCNN(_backbone(), 4, **TINY))
    assert model.roi_head.compute_dtype == model.rpn_head.compute_dtype == "float16"
    terms = model.compute_loss_terms(images, targets, training=True)
    assert all(v.dtype == "float32" and np.isfinite(float(v)) for v in terms.values())
    outputs = model(images)
    assert outputs.dtype == "float32" and outputs.shape == (2, TINY["max_detections"], 6)


def test_fit_overfits_two_scenes(trained):
    _, history = trained
    assert set(history) == {
        "loss",
        "rpn_objectness_loss",
        "rpn_box_loss",
        "roi_class_loss",
        "roi_box_loss",
    }
    assert all(np.isfinite(values).all() for values in history.values())
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert history["roi_class_loss"][-1] < 0.5 * history["roi_class_loss"][0]
    assert history["rpn_objectness_loss"][-1] < 0.5 * history["rpn_objectness_loss"][0]


def test_keras_file_round_trip(trained, data, tmp_path):
    model, _ = trained
    _, images, _ = data
    path = tmp_path / "faster_rcnn.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert type(reloaded) is FasterRCNN
    # Equal once JSON-encoded (a reloaded build config holds lists where tuples were).
    assert json.dumps(reloaded.get_config()) == json.dumps(model.get_config())
    assert reloaded.loss.weights == tuple(LOSS_WEIGHTS.values())
    np.testing.assert_array_equal(np.asarray(reloaded(images)), np.asarray(model(images)))


def test_litert_detects_as_keras(trained, data, tmp_path):
    model, _ = trained
    _, images, _ = data
    full = detector_with_decoder(model)
    # export_tflite converts with TFLITE_BUILTINS only and raises if a Flex op is needed.
    path = export_tflite(full, tmp_path / "faster_rcnn.tflite")
    assert b"Flex" not in path.read_bytes()
    litert = LiteRTRunner(path).all_outputs(images)
    expected = {name: np.asarray(value) for name, value in full(images).items()}
    assert expected["count"].min() > 0
    comparison = get_task("detection").compare_exports(expected, litert)
    assert "mismatch" not in comparison, comparison
    np.testing.assert_array_equal(litert["count"], expected["count"])


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"num_classes": 0}, "`num_classes` must be a positive int. Received: num_classes=0"),
        ({"levels": ("P2", "P4")}, "`levels` must be consecutive pyramid levels"),
        ({"levels": ("P3", "P6")}, "`levels` must be consecutive"),
        ({"levels": ("P5", "P6")}, "`levels` must be pyramid levels of 'plain_cnn'"),
        ({"anchor_sizes": (8, 16)}, "`anchor_sizes` must be a sequence of 4 positive numbers"),
        ({"aspect_ratios": (1.0, 0.0)}, "Received: aspect_ratios=(1.0, 0.0)"),
        ({"rpn_batch_size": 0}, "`rpn_batch_size` must be a positive int"),
        ({"rpn_post_nms_top_k_test": 2.5}, "Received: rpn_post_nms_top_k_test=2.5"),
        ({"roi_positive_fraction": 1.5}, "`roi_positive_fraction` must be a number in [0, 1]"),
        ({"box_head": "mlp"}, "`box_head` must be one of ('fc', 'conv'). Received: box_head='mlp'"),
        ({"pool_size": -7}, "`pool_size` must be a positive int"),
        ({"roi_canonical_size": 0}, "`roi_canonical_size` must be a positive number"),
        ({"score_threshold": 2.0}, "`score_threshold` must be a number in [0, 1]"),
        ({"nms_iou": -0.1}, "`nms_iou` must be a number in [0, 1]"),
        ({"max_detections": 0}, "`max_detections` must be a positive int"),
        ({"sampling_seed": "zero"}, "`sampling_seed` must be an int"),
    ],
)
def test_bad_arguments_are_named(arguments, message):
    arguments = {"num_classes": 2, **arguments}
    with pytest.raises(ValueError) as error:
        FasterRCNN(_backbone(), **arguments)
    assert message in str(error.value)


def test_input_size_must_be_fixed_and_divisible():
    backbone = build_backbone("plain_cnn", input_shape=(48, 64, 3), filters=(4,) * 6)
    with pytest.raises(ValueError, match="height divisible by the coarsest stride 32"):
        FasterRCNN(backbone, 2)


def test_loss_and_decoder_settings_are_checked(trained):
    model, _ = trained
    with pytest.raises(ValueError, match=r"Unknown detection loss key\(s\) \['alpha'\]"):
        detection_loss(model, alpha=1.0)
    with pytest.raises(ValueError, match="`roi_box_weight` must be a non-negative number"):
        detection_loss(model, roi_box_weight=-1.0)
    loss = detection_loss(model, rpn_box_beta=0.0)
    assert isinstance(loss, FasterRCNNLoss) and loss.rpn_box_beta == 0.0
    with pytest.raises(ValueError, match="cannot be computed from"):
        loss(np.zeros((1, 1, 5)), np.zeros((1, 20, 6)))
    with pytest.raises(ValueError, match="`iou_threshold` is the model's NMS IoU"):
        model.make_decoder(iou_threshold=0.3)
    with pytest.raises(ValueError, match="`score_threshold` cannot be below the model's"):
        model.make_decoder(score_threshold=0.0001)
    with pytest.raises(ValueError, match="`max_detections` cannot exceed the model's"):
        model.make_decoder(max_detections=21)
    other = FasterRCNN(_backbone(), 2, **TINY)
    other.compile("sgd", loss="mse")
    with pytest.raises(ValueError, match=r"compiled with its own loss settings.*loss='mse'"):
        other.compute_loss_terms(np.zeros((1, SIZE, SIZE, 3)), np.zeros((1, 1, 5)))
    with pytest.raises(ValueError, match=r"\(batch, D, 6\) with D >= max_detections=20"):
        FasterRCNNDecoder(2, SIZE, max_detections=20)(np.zeros((1, 10, 6), "float32"))
