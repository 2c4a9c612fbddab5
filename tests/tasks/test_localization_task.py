"""The localization task: its loss and scores against NumPy, and one tiny `kcnn train` whose
metrics are recomputed here from the saved model and whose SavedModel serves boxes in the
pixels of the input image."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from kcnn.data import load_localization_data
from kcnn.tasks import LocalizationLoss, get_task, localization_scores
from kcnn.training import config_from_dict, train

RNG = np.random.default_rng(0)
SIZE = 32
DATA_ARGS = {"train_count": 48, "test_count": 16, "image_size": SIZE}


def numpy_iou_and_giou(a, b):
    """IoU and GIoU of xyxy boxes, written from Rezatofighi et al. 2019, algorithm 1."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    inter_w = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    inter_h = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = inter_w * inter_h
    union = area_a + area_b - inter
    hull = (np.maximum(a[:, 2], b[:, 2]) - np.minimum(a[:, 0], b[:, 0])) * (
        np.maximum(a[:, 3], b[:, 3]) - np.minimum(a[:, 1], b[:, 1])
    )
    return inter / union, inter / union - (hull - union) / hull


def random_pairs(count, num_classes=4):
    corners = np.sort(RNG.random((count, 2, 2)), axis=1)  # (min, max) for x and y
    truth_boxes = corners.transpose(0, 2, 1).reshape(count, 4)[:, [0, 2, 1, 3]]
    predicted_boxes = np.clip(truth_boxes + RNG.normal(0, 0.15, (count, 4)), 0, 1)
    predicted_boxes[:, 2:] = np.maximum(predicted_boxes[:, 2:], predicted_boxes[:, :2] + 0.01)
    classes = RNG.integers(0, num_classes, count)
    logits = RNG.normal(size=(count, num_classes))
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y_true = np.concatenate([truth_boxes, classes[:, None]], 1).astype(np.float32)
    y_pred = np.concatenate([predicted_boxes, probabilities], 1).astype(np.float32)
    return y_true, y_pred


@pytest.mark.parametrize("box_loss", ["smooth_l1", "giou"])
def test_loss_is_cross_entropy_plus_the_weighted_box_loss(box_loss):
    y_true, y_pred = random_pairs(64)
    truth, predicted = y_true.astype(np.float64), y_pred.astype(np.float64)
    cross_entropy = -np.log(predicted[np.arange(64), 4 + truth[:, 4].astype(int)])
    if box_loss == "giou":
        box = 1 - numpy_iou_and_giou(predicted[:, :4], truth[:, :4])[1]
    else:
        d = np.abs(predicted[:, :4] - truth[:, :4])
        box = np.where(d < 0.05, 0.5 * d**2 / 0.05, d - 0.025).sum(1)
        assert (d < 0.05).any() and (d >= 0.05).any()  # both branches of smooth L1
    loss = LocalizationLoss(box_loss=box_loss, box_weight=3.0)
    expected = np.mean(cross_entropy + 3.0 * box)
    assert float(loss(y_true, y_pred)) == pytest.approx(expected, rel=1e-5)
    reloaded = LocalizationLoss.from_config(loss.get_config())
    assert float(reloaded(y_true, y_pred)) == pytest.approx(expected, rel=1e-5)


def test_scores_are_class_iou_and_both():
    y_true, y_pred = random_pairs(200)
    y_pred[:50, 4:] = np.eye(4)[y_true[:50, 4].astype(int)]  # some right classes for sure
    right, iou, correct = (np.asarray(score) for score in localization_scores(y_true, y_pred))
    expected_right = y_pred[:, 4:].argmax(1) == y_true[:, 4]
    expected_iou = numpy_iou_and_giou(y_pred[:, :4], y_true[:, :4])[0]
    np.testing.assert_array_equal(right, expected_right)
    np.testing.assert_allclose(iou, expected_iou, atol=1e-5)
    np.testing.assert_array_equal(correct, expected_right & (expected_iou >= 0.5))
    assert 0 < correct.sum() < right.sum()


def test_loss_options_are_checked():
    task = get_task("localization")
    config = config_from_dict({"task": "localization", "train": {"loss": {"box_wieght": 1}}})
    with pytest.raises(ValueError, match=r"Unknown localization loss key\(s\) \['box_wieght'\]"):
        task.loss(config.train)
    with pytest.raises(ValueError, match=r"`box_loss` must be one of"):
        LocalizationLoss(box_loss="l2")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    config = config_from_dict(
        {
            "name": "localize_test",
            "task": "localization",
            "output_dir": str(tmp_path_factory.mktemp("runs")),
            "data": {
                "name": "shapes",
                "args": DATA_ARGS,
                "batch_size": 16,
                "validation_fraction": 0.25,
                "augment": "flip",
            },
            "model": {
                "name": "localizer",
                "backbone": "plain_cnn",
                "backbone_args": {"filters": [4, 8, 8], "convs_per_level": 1},
                "args": {"box_filters": 4, "box_units": 8},
            },
            "train": {"epochs": 1, "loss": {"box_loss": "giou"}},
            "export": {"latency_runs": 2},
        }
    )
    run_dir = train(config, verbose=0)
    data = load_localization_data("shapes", seed=0, **DATA_ARGS)
    model = keras.saving.load_model(run_dir / "model.keras")
    return run_dir, data, model


def test_metrics_are_recomputed_from_the_saved_model(run):
    run_dir, data, model = run
    for name in ("predictions.png", "model.tflite", "curves.png", "saved_model/saved_model.pb"):
        assert (run_dir / name).stat().st_size > 0, name
    header = (run_dir / "history.csv").read_text().splitlines()[0].split(",")
    assert {"accuracy", "mean_iou", "correct", "val_correct"} <= set(header)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    outputs = model.predict(data.x_test / np.float32(255), verbose=0).astype(np.float64)
    truth = data.y_test.astype(np.float64)
    right = outputs[:, 4:].argmax(1) == truth[:, 4]
    iou = numpy_iou_and_giou(outputs[:, :4] * SIZE, truth[:, :4])[0]
    assert metrics["test_accuracy"] == pytest.approx(right.mean())
    assert metrics["test_mean_iou"] == pytest.approx(iou.mean(), abs=1e-5)
    assert metrics["test_correct"] == pytest.approx(np.mean(right & (iou >= 0.5)))
    assert metrics["test_samples"] == 16
    report = json.loads((run_dir / "export_report.json").read_text())
    entry = report["tflite"]["none"]
    assert report["passed"] and entry["keras_correct"] == pytest.approx(metrics["test_correct"])


def test_saved_model_serves_label_score_and_box_in_input_pixels(run):
    run_dir, data, model = run
    height, width = 48, 40  # not the model's size: boxes come back in these pixels
    images = tf.image.resize(data.x_test[:5], (height, width)).numpy().round().astype(np.uint8)
    serve = tf.saved_model.load(str(run_dir / "saved_model")).signatures["serving_default"]
    response = {name: value.numpy() for name, value in serve(images=tf.constant(images)).items()}
    outputs = model.predict(tf.image.resize(images / np.float32(255), (SIZE, SIZE)), verbose=0)
    np.testing.assert_allclose(
        response["box"], outputs[:, :4] * [width, height, width, height], rtol=1e-4, atol=1e-3
    )
    classes = outputs[:, 4:].argmax(1)
    np.testing.assert_array_equal(response["class_index"], classes)
    assert [label.decode() for label in response["label"]] == [data.class_names[c] for c in classes]
    np.testing.assert_allclose(response["score"], outputs[:, 4:].max(1), atol=1e-6)
