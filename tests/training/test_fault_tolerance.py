"""A run killed with SIGKILL resumes to the very weights of an uninterrupted run; NaN stops.

These tests run `kcnn train` in real processes: the kill is a real `kill -9`.
"""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import tensorflow as tf
import yaml

from kcnn.training import read_history
from kcnn.training.checkpoint import latest_checkpoint, restore

from .checkpoints import checkpointed_model

CONFIG = {
    "name": "resume_test",
    "task": "classification",
    "data": {"name": "digits", "batch_size": 16, "validation_fraction": 0.1, "augment": "flip"},
    "model": {
        "backbone_args": {"filters": [8, 16], "convs_per_level": 1},
        "dropout": 0.2,  # random state that must resume too
    },
    "train": {"epochs": 3, "learning_rate": 0.003},
    "runtime": {"seed": 3, "deterministic": True, "checkpoint_every_steps": 7},
    "export": {"formats": []},
}
# 1,293 training images / 16 = 81 steps per epoch: checkpoints at steps 7, 14, ... fall
# inside epochs, and the epoch ends (81, 162) save too.


def write_config(tmp_path, values):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return path


def kcnn(*arguments, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "kcnn.cli", *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        **kwargs,
    )


def final_weights(run_dir):
    model = keras.saving.load_model(run_dir / "model.keras")
    return [np.asarray(w) for w in model.get_weights()]


def test_sigkill_mid_epoch_resumes_to_the_uninterrupted_weights(tmp_path):
    config = write_config(tmp_path, CONFIG)
    reference = kcnn("train", str(config), "--run-dir", str(tmp_path / "reference"))
    victim_dir = tmp_path / "victim"
    victim = kcnn("train", str(config), "--run-dir", str(victim_dir))
    # Kill once a checkpoint inside the second epoch exists.
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        record = latest_checkpoint(victim_dir / "backup") if victim_dir.exists() else None
        # Between a first step folder and its pointer, the record is the folder's alone,
        # without epoch and batch (see `latest_checkpoint`).
        if record and record.get("epoch") == 1 and record.get("batch", 0) > 0:
            break
        assert victim.poll() is None, victim.stdout.read()
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (victim_dir / "model.keras").exists()
    killed_at = latest_checkpoint(victim_dir / "backup")

    resumed = kcnn("train", str(config), "--run-dir", str(victim_dir))
    output = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, output[-3000:]
    assert f"resuming from step {killed_at['step']}" in output or "resuming from step" in output
    reference_output = reference.communicate(timeout=600)[0]
    assert reference.returncode == 0, reference_output[-3000:]

    for got, want in zip(
        final_weights(victim_dir), final_weights(tmp_path / "reference"), strict=True
    ):
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    leftovers = [p for p in victim_dir.rglob("*") if p.name.startswith(".") or "tmp" in p.name]
    assert not leftovers
    assert not (victim_dir / "backup").exists()
    history = (victim_dir / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["0", "1", "2"]
    # The epoch the kill fell in logs the mean over all of its batches, as if never killed.
    resumed, uninterrupted = read_history(victim_dir), read_history(tmp_path / "reference")
    assert resumed.keys() == uninterrupted.keys()
    for key, values in uninterrupted.items():
        np.testing.assert_allclose(resumed[key], values, rtol=1e-5, err_msg=key)


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    values = json.loads(json.dumps(CONFIG))
    # Only the non-finite check (no divergence factor), which this learning rate reaches
    # within a few steps in a network without batch norm (whose scale invariance keeps the
    # loss finite while the weights blow up).
    values["train"].update(
        {
            "optimizer": "sgd",
            "learning_rate": 1.0e30,
            "schedule": "constant",
            "divergence_factor": None,
        }
    )
    values["runtime"]["checkpoint_every_steps"] = 1
    values["model"]["dropout"] = 0.0
    values["model"]["backbone_args"]["normalization"] = None
    config = write_config(tmp_path, values)
    run_dir = tmp_path / "run"
    process = kcnn("train", str(config), "--run-dir", str(run_dir))
    output = process.communicate(timeout=300)[0]
    assert process.returncode != 0
    assert "The training loss became" in output and "at step" in output, output[-3000:]
    step = int(output.split("at step ")[1].split(" ")[0])
    record = latest_checkpoint(run_dir / "backup")
    # The bad loss of `step` came from the weights of step - 1: the checkpoint kept is the
    # one before them, whose weights gave a finite loss.
    assert record["step"] == step - 2 if step > 2 else record is None
    assert not (run_dir / "model.keras").exists()


def test_checkpoint_pointer_only_names_complete_checkpoints(tmp_path):
    model, _, saved = checkpointed_model(tmp_path / "backup")
    # What a kill in the middle of the next save leaves: a temporary folder, no new pointer.
    (tmp_path / "backup" / ".step-00000002.abc").mkdir()
    (tmp_path / "backup" / ".step-00000002.abc" / "state.weights.h5").write_bytes(b"\0" * 10)
    model.set_weights([w + 1.0 for w in saved])
    record = restore(model, tmp_path / "backup")
    metric_state = record.pop("metric_state")  # the loss tracker's total and count
    assert record == {"step": 1, "epoch": 0, "batch": 1, "folder": "step-00000001"}
    assert [np.asarray(v) for v in metric_state] == [
        np.asarray(v) for v in model.metrics[0].variables
    ]
    for got, want in zip(model.get_weights(), saved, strict=True):
        np.testing.assert_array_equal(got, want)
    assert sorted(p.name for p in (tmp_path / "backup").iterdir()) == [
        "latest.json",
        "step-00000001",
    ]


def test_ctrl_c_inside_a_step_is_raised_at_the_end_of_that_batch():
    """SIGINT delivered while a batch runs (here from inside the model's call, as a user's
    Ctrl-C lands inside TensorFlow's step) becomes a KeyboardInterrupt after that batch;
    the handler is put back afterwards."""
    from kcnn.training.checkpoint import InterruptBetweenSteps

    steps_run = []

    class SignalInStep(keras.layers.Layer):
        def call(self, inputs):
            def send(x):
                steps_run.append(len(steps_run))
                if len(steps_run) == 4:
                    os.kill(os.getpid(), signal.SIGINT)
                return x

            sent = tf.ensure_shape(tf.py_function(send, [inputs[0, 0]], tf.float32), ())
            return inputs + 0.0 * sent

        def compute_output_shape(self, input_shape):
            return input_shape

    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(SignalInStep()(inputs)))
    model.compile("sgd", "mse")
    ends = []
    record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: ends.append(b))
    # Python's own handler, as in a terminal (a pytest-xdist worker ignores SIGINT).
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    raised = False
    try:
        with InterruptBetweenSteps() as interrupt:
            try:
                model.fit(
                    np.ones((16, 2)),
                    np.ones((16, 1)),
                    batch_size=2,
                    epochs=1,
                    verbose=0,
                    callbacks=[record, interrupt],
                )
            except KeyboardInterrupt:
                raised = True
        handler_after = signal.getsignal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, outer)
    assert raised and interrupt.interrupted
    # The batch that received the signal finished; no other batch started.
    assert len(steps_run) == 4 and ends == [0, 1, 2, 3]
    assert handler_after is signal.default_int_handler


def test_a_resume_keeps_only_the_history_rows_of_epochs_it_does_not_run_again(tmp_path):
    """Rows written after the checkpoint a run resumes from (a crash between an epoch's row
    and its checkpoint) are dropped, so the replayed epoch's row is not there twice."""
    from kcnn.training.fitting import _keep_history_before

    path = tmp_path / "history.csv"
    path.write_text("epoch,loss\n0,1.5\n1,1.2\n2,1.1\n")
    _keep_history_before(path, 2)
    assert path.read_text() == "epoch,loss\n0,1.5\n1,1.2\n"
    _keep_history_before(path, 2)  # nothing past epoch 1: unchanged
    assert path.read_text() == "epoch,loss\n0,1.5\n1,1.2\n"
    _keep_history_before(path, 0)
    assert path.read_text() == "epoch,loss\n"
