"""Every task's model exported in every TFLite mode, with the parity report checked against
values computed here independently (the stock LiteRT interpreter and NumPy), and the
SavedModel's uint8 serving signatures called in a process that never imports kcnn."""

import json
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from kcnn.backbones import build_backbone
from kcnn.data import load_classification_data, load_inpainting_data, load_segmentation_data
from kcnn.export import ExportError, ExportParityError, export_tflite
from kcnn.models import FillResidualUNet, UNet
from kcnn.tasks import TASKS, InpaintingLoss, build_classifier, get_task
from kcnn.training import config_from_dict, export_run

MODES = ["none", "fp16", "dynamic", "int8"]
SAMPLES = 24


def _config(task, image_size, **export):
    return config_from_dict(
        {
            "task": task,
            "data": {"image_size": image_size},
            "export": {"quantization": MODES, "parity_samples": SAMPLES, "latency_runs": 3}
            | export,
        }
    )


def _classification():
    data = load_classification_data("digits")
    backbone = build_backbone("plain_cnn", input_shape=(8, 8, 1), filters=(8, 16))
    model = build_classifier(backbone, num_classes=10)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)  # else fit traces its step twice
    model.fit(data.x_train / np.float32(255), data.y_train, epochs=8, batch_size=32, verbose=0)
    return model, data, None


def _segmentation():
    data = load_segmentation_data("shapes", train_count=64, test_count=SAMPLES, image_size=32)
    backbone = build_backbone("plain_cnn", input_shape=(32, 32, 3), filters=(4, 8, 16))
    model = UNet(backbone, data.num_classes, decoder_filters=(8, 4))
    model.compile("adam", "sparse_categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)  # else fit traces its step twice
    model.fit(data.x_train / np.float32(255), data.y_train, epochs=6, batch_size=8, verbose=0)
    return model, data, 32


def _inpainting():
    data = load_inpainting_data(
        "photos",
        image_size=32,
        train_crops_per_photo=8,
        test_crops_per_photo=4,
        collection="skimage",
    )
    # The fill U-Net: its fill's sweeps stay float in the int8 file (`keep_float`), so its
    # int8 file keeps the PSNR; a partial convolution's is checked in test_exporters. Fewer
    # sweeps than the default 40 + 20 per level: a smaller graph to convert four times.
    model = FillResidualUNet(
        (32, 32, 3), width=4, depth=3, fill_iterations=6, fill_coarse_iterations=3
    )
    model.compile("adam", InpaintingLoss())
    mask = data.y_train.astype(np.float32)
    truth = data.x_train / np.float32(255)
    target = np.concatenate([truth, mask], axis=-1)
    model.optimizer.build(model.trainable_variables)  # else fit traces its step twice
    model.fit([truth * mask, mask], target, epochs=3, batch_size=8, verbose=0)
    return model, data, 32


BUILDERS = {
    "classification": _classification,
    "segmentation": _segmentation,
    "inpainting": _inpainting,
}


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def exported(request, tmp_path_factory):
    task = request.param
    keras.utils.set_random_seed(0)
    model, data, image_size = BUILDERS[task]()
    run_dir = tmp_path_factory.mktemp(task)
    config = _config(task, image_size)
    report = export_run(
        model, run_dir, get_task(config.task), config.export, data, config.data.image_size
    )
    return task, model, data, run_dir, report


def _stock_litert(path, model, inputs):
    """The `.tflite` file run by the plain LiteRT interpreter, one sample at a time."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    runner = interpreter.get_signature_runner()
    assert set(runner.get_input_details()) == {tensor.name for tensor in model.inputs}
    outputs = []
    for index in range(len(inputs[0])):
        feed = {
            tensor.name: array[index : index + 1]
            for tensor, array in zip(model.inputs, inputs, strict=True)
        }
        (output,) = runner(**feed).values()
        outputs.append(output)
    return np.concatenate(outputs).astype(np.float64)


def _independent_metric(task, outputs, data):
    labels = data.y_test[:SAMPLES]
    if task == "classification":
        return np.mean(outputs.argmax(-1) == labels)
    if task == "segmentation":
        predictions = outputs.argmax(-1)
        ious = []
        for k in range(data.num_classes):
            union = np.sum((predictions == k) | (labels == k))
            if union:
                ious.append(np.sum((predictions == k) & (labels == k)) / union)
        return np.mean(ious)
    truth = data.x_test[:SAMPLES] / 255.0
    mask = labels.astype(np.float64)
    result = mask * truth + (1 - mask) * np.clip(outputs, 0, 1)
    mse = np.mean((result - truth) ** 2, axis=(1, 2, 3))
    return np.mean(-10 * np.log10(np.maximum(mse, 1e-10)))


def test_report_numbers_match_an_independent_computation(exported):
    task, model, data, run_dir, report = exported
    on_disk = json.loads((run_dir / "export_report.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    assert sorted(report["tflite"]) == sorted(MODES)
    inputs = TASKS[task].model_inputs(data.x_test[:SAMPLES], data.y_test[:SAMPLES])
    inputs = [
        np.asarray(a, dtype=np.float32) for a in (inputs if task == "inpainting" else [inputs])
    ]
    keras_inputs = inputs if len(inputs) > 1 else inputs[0]
    keras_outputs = np.asarray(model.predict(keras_inputs, verbose=0), dtype=np.float64)
    metric = report["tflite"]["none"]["metric"]
    assert metric == {"classification": "accuracy", "segmentation": "mean_iou"}.get(task, "psnr")
    for mode, entry in report["tflite"].items():
        path = run_dir / ("model.tflite" if mode == "none" else f"model_{mode}.tflite")
        assert entry["file_bytes"] == path.stat().st_size
        assert entry["samples"] == len(inputs[0]) and entry["latency_ms"] > 0
        litert = _stock_litert(path, model, inputs)
        # The report calls the model directly in batches of 256, the reference predicts in
        # batches of 32: float32 rounding differs by a few 1e-6 between the two.
        assert entry["max_abs_error"] == pytest.approx(
            np.max(np.abs(litert - keras_outputs)), rel=1e-3, abs=1e-5
        )
        assert entry[f"keras_{metric}"] == pytest.approx(
            _independent_metric(task, keras_outputs, data), rel=1e-4
        )
        assert entry[f"litert_{metric}"] == pytest.approx(
            _independent_metric(task, litert, data), rel=1e-4
        )
        if task != "inpainting":
            agreement = np.mean(litert.argmax(-1) == keras_outputs.argmax(-1))
            assert entry["top1_agreement"] == pytest.approx(agreement)


def test_every_mode_meets_its_threshold(exported):
    task, _, _, run_dir, report = exported
    files = report["tflite"]
    assert files["none"]["max_abs_error"] <= 1e-4 and files["none"]["passed"]
    # fp16 weights: errors of float16 rounding, far below the int8 ones.
    assert files["fp16"]["max_abs_error"] <= 1e-2
    tolerance = TASKS[task].int8_tolerance
    int8 = files["int8"]
    assert int8["metric_tolerance"] == tolerance
    assert int8["passed"] == (int8["metric_drop"] <= tolerance)
    assert int8["passed"], int8
    assert report["passed"]
    for mode in ("fp16", "dynamic", "int8"):
        assert files[mode]["file_bytes"] < files["none"]["file_bytes"], mode
    metadata = json.loads((run_dir / "metadata.json").read_text())
    assert metadata["task"] == task and metadata["tflite_files"]["int8"] == "model_int8.tflite"
    assert (
        json.loads((run_dir / "saved_model" / "assets" / "metadata.json").read_text())[
            "class_names"
        ]
        == metadata["class_names"]
    )


def test_an_int8_drop_beyond_the_tolerance_fails_the_export(exported, tmp_path):
    task, model, data, _, _ = exported
    if task != "classification":
        pytest.skip("one task is enough for the failure path")
    # A tolerance below any possible drop: the int8 file must fail, and say which key to set.
    config = _config(task, None, quantization=["int8"], int8_tolerance=-1.0)
    with pytest.raises(ExportParityError, match="model_int8.tflite drops accuracy by .*int8_"):
        export_run(
            model, tmp_path, get_task(config.task), config.export, data, config.data.image_size
        )
    report = json.loads((tmp_path / "export_report.json").read_text())
    assert not report["passed"] and not report["tflite"]["int8"]["passed"]


SERVING_SCRIPT = """
import json, sys
import numpy as np
import tensorflow as tf

cases = json.loads(sys.argv[1])
results = {}
for task, folder in cases.items():
    served = tf.saved_model.load(folder)
    signature = served.signatures["serving_default"]
    data = np.load(folder + "/../request.npz")
    feed = {name: tf.constant(data[name]) for name in data.files}
    results[task] = {k: v.numpy() for k, v in signature(**feed).items()}
    # Strings come back as bytes objects; store them as text.
    results[task] = {
        k: v.astype(str) if v.dtype == object else v for k, v in results[task].items()
    }
    np.savez(folder + "/../response.npz", **results[task])
assert not any(name.startswith("kcnn") for name in sys.modules), "kcnn was imported"
print("served", sorted(cases))
"""


def test_uint8_serving_signatures_in_a_process_without_kcnn(exported):
    task, model, data, run_dir, _ = exported
    rng = np.random.default_rng(1)
    # A size the model was not trained at: the signature resizes inside the graph.
    size = {"classification": (11, 13), "segmentation": (40, 24), "inpainting": (48, 40)}[task]
    channels = data.x_test.shape[-1]
    images = rng.integers(0, 256, (2, *size, channels), dtype=np.uint8)
    request = {"images": images}
    if task == "inpainting":
        request["masks"] = (rng.random((2, *size, 1)) > 0.3).astype(np.uint8) * 255
    np.savez(run_dir / "request.npz", **request)
    completed = subprocess.run(
        [sys.executable, "-c", SERVING_SCRIPT, json.dumps({task: str(run_dir / "saved_model")})],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    response = dict(np.load(run_dir / "response.npz"))
    model_size = model.inputs[0].shape[1:3]
    unit = tf.image.resize(images / np.float32(255), model_size)
    if task == "classification":
        probabilities = model.predict(unit, verbose=0)
        np.testing.assert_allclose(response["probabilities"], probabilities, atol=1e-5)
        top = np.argsort(-probabilities, axis=-1)[:, :5]
        np.testing.assert_array_equal(response["top_k_indices"], top)
        names = np.array(data.class_names)[top]
        assert response["top_k_labels"].tolist() == names.tolist()
    elif task == "segmentation":
        probabilities = tf.image.resize(model.predict(unit, verbose=0), size).numpy()
        np.testing.assert_allclose(response["probabilities"], probabilities, atol=1e-5)
        assert response["class_map"].shape == (2, *size)
        np.testing.assert_array_equal(response["class_map"], probabilities.argmax(-1))
    else:
        known = (request["masks"] > 0).astype(np.float32)
        small_known = tf.image.resize(known, model_size, method="nearest")
        prediction = model.predict([unit * small_known, small_known], verbose=0)
        prediction = np.clip(tf.image.resize(prediction, size).numpy(), 0, 1)
        np.testing.assert_allclose(response["prediction"], prediction, atol=1e-5)
        inpainted = response["inpainted"]
        assert inpainted.dtype == np.uint8 and inpainted.shape == images.shape
        keep = np.broadcast_to(known > 0, images.shape)
        np.testing.assert_array_equal(inpainted[keep], images[keep])  # known pixels untouched
        expected = np.round(prediction * 255)[~keep]
        assert np.max(np.abs(inpainted[~keep].astype(np.float64) - expected)) <= 1


def test_saved_model_cli_runs_the_serving_signature(exported):
    task, model, data, run_dir, _ = exported
    if task != "classification":
        pytest.skip("one task is enough for the command-line client")
    cli = [str(Path(sys.executable).parent / "saved_model_cli")]
    request = run_dir / "cli_request.npy"
    np.save(request, np.full((1, 8, 8, 1), 200, dtype=np.uint8))
    completed = subprocess.run(
        [
            *cli,
            "run",
            "--dir",
            str(run_dir / "saved_model"),
            "--tag_set",
            "serve",
            "--signature_def",
            "serving_default",
            "--inputs",
            f"images={request}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    expected = model.predict(np.full((1, 8, 8, 1), 200 / 255, np.float32), verbose=0)
    labels = completed.stdout.split("output key top_k_labels:")[1]
    assert re.search(r"b'([^']*)'", labels).group(1) == data.class_names[int(expected.argmax())]


def test_flex_ops_fail_with_their_names_unless_allowed(tmp_path):
    class BitwiseMask(keras.layers.Layer):
        def call(self, x):
            return tf.cast(tf.bitwise.bitwise_and(tf.cast(x * 255, tf.int32), 15), tf.float32)

    inputs = keras.Input((4, 4, 1))
    model = keras.Model(inputs, BitwiseMask()(inputs), name="needs_flex")
    target = tmp_path / "model.tflite"
    with pytest.raises(ExportError, match="needs_flex needs .*: BitwiseAnd.*allow-flex"):
        export_tflite(model, target)
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    export_tflite(model, target, allow_flex=True)
    assert target.stat().st_size > 0
