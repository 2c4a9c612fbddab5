"""`kcnn train` on the detection task end to end: a tiny run whose metrics are recomputed here
from its saved model, and whose SavedModel (in a process without kcnn) and TFLite file (in the
stock LiteRT interpreter) return the detections Keras decodes."""

import json
import math
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from kcnn.data import load_detection_data
from kcnn.detection import DetectionDecoder, coco_evaluate, to_coco_detections, to_coco_ground_truth
from kcnn.tasks import TASKS, DetectionTask, get_task
from kcnn.training import config_from_dict, export_run, exporting, train

SIZE = 64
DATA_ARGS = {"train_count": 48, "test_count": 12}
STRIDES = (8, 16, 32)  # levels P3-P5, the Detector's default


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    config = config_from_dict(
        {
            "name": "detect_test",
            "task": "detection",
            "output_dir": str(tmp_path_factory.mktemp("runs")),
            "data": {
                "name": "shapes",
                "args": DATA_ARGS,
                "image_size": SIZE,
                "batch_size": 16,
                "validation_fraction": 0.25,
                "augment": "flip",
            },
            "model": {
                "name": "detector",
                "backbone": "plain_cnn",
                "backbone_args": {"filters": [4, 8, 8, 16, 16, 16], "convs_per_level": 1},
                "args": {"neck_filters": 8, "head_filters": 8, "head_convs": 1},
            },
            # 50 steps at a high rate: enough for detections above the 0.05 score threshold.
            "train": {"epochs": 2, "steps_per_epoch": 25, "learning_rate": 0.01},
            "export": {"latency_runs": 2},
        }
    )
    run_dir = train(config, verbose=0)
    data = load_detection_data("shapes", image_size=SIZE, seed=0, **DATA_ARGS)
    model = keras.saving.load_model(run_dir / "model.keras")
    # The decoder built by hand from the known layout, not from the task's helpers.
    decoder = DetectionDecoder(len(data.class_names), SIZE, strides=STRIDES)
    unit = data.x_test.astype(np.float32) / 255
    keras_detections = {
        k: np.asarray(v) for k, v in decoder(model.predict(unit, verbose=0)).items()
    }
    return run_dir, data, model, decoder, keras_detections


def test_run_folder_holds_every_file(run):
    run_dir, data, *_ = run
    for name in (
        "config.yaml",
        "model.keras",
        "metrics.json",
        "history.csv",
        "curves.png",
        "predictions.png",
        "model.tflite",
        "metadata.json",
        "export_report.json",
        "saved_model/saved_model.pb",
    ):
        assert (run_dir / name).stat().st_size > 0, name
    header = (run_dir / "history.csv").read_text().splitlines()[0].split(",")
    assert {"loss", "val_loss", "val_map", "val_map50", "val_map75"} <= set(header)
    metadata = json.loads((run_dir / "metadata.json").read_text())
    assert metadata["task"] == "detection" and metadata["class_names"] == list(data.class_names)
    assert metadata["model_input_size"] == [SIZE, SIZE]


def test_metrics_equal_an_independent_coco_evaluation(run):
    run_dir, data, _, _, detections = run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert detections["count"].sum() > 0  # the comparison is not between two empty sets
    ground_truth = to_coco_ground_truth(data.y_test, data.class_names, SIZE)
    results = to_coco_detections(
        detections["boxes"], detections["scores"], detections["classes"], detections["count"]
    )
    expected = coco_evaluate(ground_truth, results)
    assert 0 < metrics["map50"] <= 1
    for name in ("map", "map50", "map75"):
        assert metrics[name] == pytest.approx(expected[name], abs=1e-9), name
    for name, value in expected["per_class"].items():
        recorded = metrics["per_class_ap"][name]
        assert (recorded is None) if math.isnan(value) else recorded == pytest.approx(value)
    assert metrics["test_images"] == len(data.x_test) == 12
    assert metrics["test_boxes"] == int(np.sum(data.y_test[..., 4] >= 0))


def _litert_detections(path, images):
    """The detections of a `.tflite` file run by the stock LiteRT interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner()
    (input_name,) = runner.get_input_details()
    return runner(**{input_name: images})


def test_tflite_file_returns_the_detections_keras_decodes(run):
    run_dir, data, _, _, detections = run
    outputs = _litert_detections(run_dir / "model.tflite", data.x_test.astype(np.float32) / 255)
    np.testing.assert_array_equal(outputs["count"], detections["count"])
    np.testing.assert_array_equal(outputs["classes"], detections["classes"])
    np.testing.assert_allclose(outputs["boxes"], detections["boxes"], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(outputs["scores"], detections["scores"], rtol=1e-3, atol=1e-5)
    report = json.loads((run_dir / "export_report.json").read_text())
    entry = report["tflite"]["none"]
    assert report["passed"] and entry["passed"] and "mismatch" not in entry
    assert entry["count_agreement"] == 1.0 and entry["samples"] == len(data.x_test)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert entry["keras_map50"] == pytest.approx(metrics["map50"], abs=1e-9)
    assert entry["litert_map50"] == pytest.approx(metrics["map50"], abs=1e-3)


def test_every_quantization_mode_exports_the_decoder_with_a_report(run, tmp_path, monkeypatch):
    run_dir, data, model, _, detections = run
    modes = ["none", "fp16", "dynamic", "int8"]
    # The detector with its decoder is not the SavedModel's `serve`: it is written once, to
    # one folder every mode converts from.
    sources = []
    convert = exporting.export_tflite
    monkeypatch.setattr(
        exporting,
        "export_tflite",
        lambda *args, **kwargs: (
            sources.append(kwargs["saved_model_dir"]) or convert(*args, **kwargs)
        ),
    )
    config = config_from_dict(
        {
            "task": "detection",
            "data": {"image_size": SIZE},
            "export": {
                "formats": ["tflite"],
                "quantization": modes,
                "latency_runs": 2,
                # A 50-step model: int8 is held to what the report says, not to 0.02 mAP.
                "int8_tolerance": 0.5,
            },
        }
    )
    report = export_run(
        model, tmp_path, get_task(config.task), config.export, data, config.data.image_size
    )
    files = report["tflite"]
    assert list(files) == modes and report["passed"]
    assert len(sources) == len(modes) and sources[0] is not None and len(set(sources)) == 1
    assert not sources[0].exists()  # a temporary folder, removed after the conversions
    unit = data.x_test.astype(np.float32) / 255
    ground_truth = to_coco_ground_truth(data.y_test, data.class_names, SIZE)
    keras_map50 = coco_evaluate(
        ground_truth,
        to_coco_detections(
            detections["boxes"], detections["scores"], detections["classes"], detections["count"]
        ),
    )["map50"]
    for mode in modes:
        entry = files[mode]
        path = tmp_path / ("model.tflite" if mode == "none" else f"model_{mode}.tflite")
        assert entry["path"] == str(path) and entry["file_bytes"] == path.stat().st_size
        outputs = _litert_detections(path, unit)
        assert outputs["count"].sum() > 0, mode  # quantized files still detect
        rows = np.arange(outputs["boxes"].shape[1]) < outputs["count"][:, np.newaxis]
        kept = outputs["boxes"][rows]
        # Real boxes, not the zeros of an int8 file whose NMS loop was quantized blind.
        assert np.all(kept[:, 2:] > kept[:, :2]), mode
        litert_map50 = coco_evaluate(
            ground_truth,
            to_coco_detections(
                outputs["boxes"], outputs["scores"], outputs["classes"], outputs["count"]
            ),
        )["map50"]
        assert entry["keras_map50"] == pytest.approx(keras_map50, abs=1e-9), mode
        assert entry["litert_map50"] == pytest.approx(litert_map50, abs=1e-9), mode
        assert entry["metric_drop"] == pytest.approx(keras_map50 - litert_map50, abs=1e-9)
        assert entry["latency_ms"] > 0 and entry["samples"] == len(data.x_test)
    assert files["none"]["count_agreement"] == 1.0 and "mismatch" not in files["none"]
    assert files["int8"]["metric_tolerance"] == 0.5
    assert files["int8"]["passed"] == (files["int8"]["metric_drop"] <= 0.5)
    # fp16 halves the weights; dynamic and int8 store them in 8 bits.
    sizes = {mode: files[mode]["file_bytes"] for mode in modes}
    assert sizes["fp16"] < sizes["none"] and sizes["dynamic"] < sizes["fp16"]
    assert sizes["int8"] < sizes["fp16"]
    metadata = json.loads((tmp_path / "metadata.json").read_text())
    assert metadata["tflite_files"] == {
        mode: entry["path"].rsplit("/", 1)[-1] for mode, entry in files.items()
    }


SERVING_SCRIPT = """
import sys
import numpy as np
import tensorflow as tf

served = tf.saved_model.load(sys.argv[1])
images = np.load(sys.argv[2])
outputs = served.signatures["serving_default"](images=tf.constant(images))
outputs = {k: v.numpy() for k, v in outputs.items()}
outputs["class_names"] = outputs["class_names"].astype(str)
np.savez(sys.argv[3], **outputs)
assert not any(name.startswith("kcnn") for name in sys.modules), "kcnn was imported"
"""


def test_saved_model_serves_detections_in_input_pixels_without_kcnn(run, tmp_path):
    run_dir, data, model, decoder, _ = run
    # Another size than the model's: the signature resizes, and boxes come back in the
    # input's pixels.
    height, width = 96, 80
    images = tf.image.resize(data.x_test[:4], (height, width)).numpy().round().astype(np.uint8)
    np.save(tmp_path / "request.npy", images)
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            SERVING_SCRIPT,
            str(run_dir / "saved_model"),
            str(tmp_path / "request.npy"),
            str(tmp_path / "response.npz"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    response = dict(np.load(tmp_path / "response.npz"))
    unit = tf.image.resize(images / np.float32(255), (SIZE, SIZE))
    expected = {k: np.asarray(v) for k, v in decoder(model.predict(unit, verbose=0)).items()}
    assert expected["count"].sum() > 0
    np.testing.assert_array_equal(response["count"], expected["count"])
    np.testing.assert_array_equal(response["classes"], expected["classes"])
    scale = np.array([width / SIZE, height / SIZE] * 2, np.float32)
    np.testing.assert_allclose(response["boxes"], expected["boxes"] * scale, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(response["scores"], expected["scores"], atol=1e-5)
    names = np.array([*data.class_names, ""])[expected["classes"]]  # -1 (padding) -> ""
    assert response["class_names"].tolist() == names.tolist()


def _detections(boxes, classes, count):
    return {
        "boxes": np.asarray(boxes, np.float32),
        "scores": np.full(np.shape(classes), 0.5, np.float32),
        "classes": np.asarray(classes, np.int32),
        "count": np.asarray(count, np.int32),
    }


def test_export_comparison_names_each_kind_of_mismatch():
    task = DetectionTask()
    keras_side = _detections([[[10, 10, 20, 20], [0, 0, 0, 0]]], [[1, -1]], [1])
    same = task.compare_exports(
        keras_side, _detections([[[10, 10, 20.01, 20], [0] * 4]], [[1, -1]], [1])
    )
    assert "mismatch" not in same and same["max_abs_error"] == pytest.approx(0.01, rel=1e-3)
    moved = task.compare_exports(
        keras_side, _detections([[[10, 10, 20.1, 20], [0] * 4]], [[1, -1]], [1])
    )
    assert "boxes differ by up to 0.005" in moved["mismatch"]
    other = task.compare_exports(
        keras_side, _detections([[[10, 10, 20, 20], [0] * 4]], [[2, -1]], [1])
    )
    assert "1 detections have another class" in other["mismatch"]
    # Two detections of (nearly) equal score may leave NMS in either order: still equal.
    keras_two = _detections([[[10, 10, 20, 20], [30, 30, 40, 40]]], [[1, 2]], [2])
    swapped = task.compare_exports(
        keras_two, _detections([[[30, 30, 40, 40], [10, 10, 20, 20]]], [[2, 1]], [2])
    )
    assert "mismatch" not in swapped and swapped["max_abs_error"] == 0.0
    assert swapped["class_agreement"] == 1.0
    extra = task.compare_exports(
        keras_side, _detections([[[10, 10, 20, 20], [1, 1, 5, 5]]], [[1, 0]], [2])
    )
    assert "1 of 1 images have another detection count" in extra["mismatch"]


def test_loss_options_are_checked_and_reach_the_loss():
    from kcnn.backbones import build_backbone
    from kcnn.detection import Detector

    backbone = build_backbone("plain_cnn", input_shape=(32, 32, 3), filters=(4, 4, 4, 4, 4))
    model = Detector(backbone, 3, levels=("P3", "P4"), neck_filters=4, head_filters=4)
    train_config = config_from_dict({"task": "detection", "train": {"loss": {"box_loss": "giou"}}})
    loss = TASKS["detection"].loss(train_config.train, model=model)
    assert (loss.num_classes, loss.image_size, loss.strides) == (3, (32, 32), (8, 16))
    assert loss.box_loss == "giou"
    train_config.train.loss = {"box_wieght": 1.0}
    with pytest.raises(ValueError, match=r"Unknown detection loss key\(s\) \['box_wieght'\]"):
        TASKS["detection"].loss(train_config.train, model=model)
