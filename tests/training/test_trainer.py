import csv
import dataclasses
import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from kcnn.data import load_digits
from kcnn.training import config_from_dict, resolve_run_dir, train
from kcnn.training.config import DataConfig
from kcnn.training.trainer import load_data, split_validation

EPOCHS = 15


def digits_config(tmp_path, **train_overrides):
    return config_from_dict(
        {
            "name": "digits_test",
            "output_dir": str(tmp_path / "runs"),
            "data": {"name": "digits", "batch_size": 64, "validation_fraction": 0.1},
            "model": {"backbone_args": {"filters": [16, 32], "convs_per_level": 1}},
            "train": {"epochs": EPOCHS, "learning_rate": 0.003, **train_overrides},
            "export": {"parity_samples": 16},
        }
    )


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("trained")
    config = digits_config(tmp_path)
    return config, train(config, verbose=0)


def test_run_folder_holds_every_artefact(finished_run):
    _, run_dir = finished_run
    for name in (
        "config.yaml",
        "model.keras",
        "metrics.json",
        "history.csv",
        "curves.png",
        "confusion_matrix.png",
        "model.tflite",
        "export_report.json",
        "saved_model/saved_model.pb",
    ):
        assert (run_dir / name).is_file(), name
        assert (run_dir / name).stat().st_size > 0, name
    assert any((run_dir / "logs").rglob("events.out.tfevents.*"))
    assert not (run_dir / "backup").exists()  # removed once training finished
    with (run_dir / "history.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["epoch"]) for row in rows] == list(range(EPOCHS))


def test_reported_accuracy_is_real_and_reproducible(finished_run):
    _, run_dir = finished_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    _, (x_test, y_test) = load_digits()
    model = keras.saving.load_model(run_dir / "model.keras")
    predictions = model.predict(x_test.astype("float32") / 255.0, verbose=0).argmax(-1)
    accuracy = float(np.mean(predictions == y_test))
    assert metrics["test_samples"] == len(y_test)
    assert metrics["test_accuracy"] == pytest.approx(accuracy, abs=1e-9)
    assert accuracy >= 0.9  # a 2-level CNN learns the 8x8 digits well in 15 epochs
    recall = np.array(list(metrics["per_class_recall"].values()))
    counts = np.bincount(y_test, minlength=10)
    assert np.sum(recall * counts) / counts.sum() == pytest.approx(accuracy, abs=1e-9)


def test_tflite_export_matches_keras_in_the_stock_interpreter(finished_run):
    from ai_edge_litert.interpreter import Interpreter

    _, run_dir = finished_run
    _, (x_test, _) = load_digits()
    images = x_test[:8].astype("float32") / 255.0
    model = keras.saving.load_model(run_dir / "model.keras")
    interpreter = Interpreter(model_path=str(run_dir / "model.tflite"))
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    interpreter.resize_tensor_input(input_index, list(images.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(input_index, images)
    interpreter.invoke()
    np.testing.assert_allclose(
        interpreter.get_tensor(output_index), model.predict(images, verbose=0), atol=1e-5
    )
    report = json.loads((run_dir / "export_report.json").read_text())
    assert report["tflite"]["none"]["passed"] and report["tflite"]["none"]["max_abs_error"] <= 1e-4
    assert report["tflite"]["none"]["top1_agreement"] == 1.0


def test_saved_model_serves_in_a_process_without_kcnn(finished_run):
    _, run_dir = finished_run
    _, (x_test, _) = load_digits()
    images = x_test[:4].astype("float32") / 255.0
    np.save(run_dir / "probe.npy", images)
    script = textwrap.dedent(
        f"""
        import sys, numpy as np, tensorflow as tf
        served = tf.saved_model.load({str(run_dir / "saved_model")!r})
        output = served.serve(np.load({str(run_dir / "probe.npy")!r}))
        np.save({str(run_dir / "served.npy")!r}, np.asarray(output))
        assert "kcnn" not in sys.modules
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
    model = keras.saving.load_model(run_dir / "model.keras")
    np.testing.assert_allclose(
        np.load(run_dir / "served.npy"), model.predict(images, verbose=0), atol=1e-5
    )


def test_a_finished_run_is_never_overwritten(finished_run):
    config, run_dir = finished_run
    before = (run_dir / "model.keras").read_bytes()
    next_dir = resolve_run_dir(config)
    assert next_dir.name == f"{run_dir.name}-2"
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=1))
    assert train(config, verbose=0) == next_dir
    assert (run_dir / "model.keras").read_bytes() == before
    assert (next_dir / "metrics.json").is_file()


class _Crash(Exception):
    pass


class _CrashAfterEpoch(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise _Crash(f"simulated crash after epoch {epoch}")


def test_an_interrupted_run_resumes_from_its_last_epoch(tmp_path, capsys, monkeypatch):
    # Python runs a model's `train_step` only while TensorFlow traces it: each attempt, the
    # fresh one and the resumed one, must trace its step once (a step that creates the
    # optimizer's variables is traced twice).
    traces = []
    keras_train_step = keras.Model.train_step

    def counted_train_step(model, data):
        traces.append(model.name)
        return keras_train_step(model, data)

    monkeypatch.setattr(keras.Model, "train_step", counted_train_step)
    config = digits_config(tmp_path, epochs=4)
    run_dir = tmp_path / "run"
    with pytest.raises(_Crash):
        train(config, run_dir=run_dir, verbose=0, callbacks=[_CrashAfterEpoch(1)])
    assert len(traces) == 1, traces
    assert (run_dir / "backup").is_dir()
    assert not (run_dir / "metrics.json").exists()
    assert resolve_run_dir(config) != run_dir  # other folder; this one is passed explicitly
    capsys.readouterr()
    train(config, run_dir=run_dir, verbose=0)
    assert len(traces) == 2, traces
    assert "(resuming)" in capsys.readouterr().out
    with (run_dir / "history.csv").open() as handle:
        epochs = [int(row["epoch"]) for row in csv.DictReader(handle)]
    assert epochs == [0, 1, 2, 3]  # epochs 0-1 from the first attempt, 2-3 resumed
    assert (run_dir / "metrics.json").is_file()


def test_unfinished_run_folder_is_reused_by_default(tmp_path):
    config = digits_config(tmp_path)
    unfinished = resolve_run_dir(config)
    (unfinished / "backup").mkdir(parents=True)
    assert resolve_run_dir(config) == unfinished


def test_a_run_whose_export_fails_is_kept_and_the_next_goes_elsewhere(tmp_path, monkeypatch):
    from kcnn.export import ExportParityError
    from kcnn.training import trainer

    def failing_export(*args, **kwargs):
        raise ExportParityError("model.tflite differs from Keras")

    config = digits_config(tmp_path, epochs=2)
    monkeypatch.setattr(trainer, "export_run", failing_export)
    with pytest.raises(ExportParityError, match=r"model.tflite differs.*kcnn export .*runs the"):
        train(config, verbose=0)
    run_dir = tmp_path / "runs" / "digits_test"
    trained = (run_dir / "model.keras").read_bytes()
    assert not (run_dir / "metrics.json").exists()

    # Training again neither resumes nor retrains over the trained model: a new folder.
    assert resolve_run_dir(config) == run_dir.with_name("digits_test-2")
    monkeypatch.undo()
    assert train(config, verbose=0) == run_dir.with_name("digits_test-2")
    assert (run_dir / "model.keras").read_bytes() == trained


def test_a_restart_without_checkpoint_starts_the_history_afresh(tmp_path):
    config = digits_config(tmp_path, epochs=2)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    # An earlier attempt that crashed after its checkpoints were removed left a history.
    (run_dir / "history.csv").write_text("epoch,loss\n0,9.0\n1,8.0\n2,7.0\n")
    train(config, run_dir=run_dir, verbose=0)
    with (run_dir / "history.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["epoch"]) for row in rows] == [0, 1]
    assert all(float(row["loss"]) < 7.0 for row in rows)


def test_missing_data_is_explained_or_falls_back(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        load_data(DataConfig(name="fashion_mnist", path=str(tmp_path)))
    data = load_data(DataConfig(name="fashion_mnist", path=str(tmp_path), fallback="digits"))
    assert data.name == "digits"
    assert "using 'digits'" in capsys.readouterr().out


def test_validation_split_is_stratified_and_disjoint():
    labels = np.repeat(np.arange(4), [10, 20, 30, 40])
    images = np.arange(labels.size)
    (train_images, train_labels), (held_images, held_labels) = split_validation(
        images, labels, 0.1, seed=0
    )
    assert np.bincount(held_labels).tolist() == [1, 2, 3, 4]
    assert np.intersect1d(train_images, held_images).size == 0
    assert np.sort(np.concatenate([train_images, held_images])).tolist() == images.tolist()
    assert split_validation(images, labels, 0.0, seed=0)[1] is None


def test_mixed_precision_trains_in_float16_and_restores_the_policy(tmp_path):
    config = digits_config(tmp_path, epochs=5)
    config.runtime.mixed_precision = True
    config.export.formats = []
    before = keras.config.dtype_policy().name
    run_dir = train(config, verbose=0)
    assert keras.config.dtype_policy().name == before
    model = keras.saving.load_model(run_dir / "model.keras")
    convolutions = [layer for layer in model._flatten_layers() if "conv" in layer.name]
    assert convolutions and all(
        layer.dtype_policy.name == "mixed_float16" for layer in convolutions
    )
    assert json.loads((run_dir / "metrics.json").read_text())["test_accuracy"] > 0.5
