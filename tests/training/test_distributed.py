"""Data-parallel training is right: R replicas take the step one device takes.

Each check trains in a fresh process, because splitting the CPU into logical devices (what
makes MirroredStrategy run with 2 replicas on a CPU-only machine) must happen before
TensorFlow starts.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import yaml

CLASSIFIER = {
    "task": "classification",
    "data": {"name": "digits", "batch_size": 32, "validation_fraction": 0.1},
    "model": {"backbone_args": {"filters": [8, 16], "convs_per_level": 1}},
}
# One batch holds the whole training split, so both runs step on the same global batch
# whatever order tf.data's distributed rewrite feeds the images in.
SHAPES = {
    "name": "shapes",
    "args": {"train_count": 16, "test_count": 4},
    "image_size": 32,
    "batch_size": 16,
    "validation_fraction": 0.0,
}
# Dice and Jaccard are ratios over the whole batch, so each replica's differs from the
# global one by design (like batch statistics); cross-entropy and focal loss are means over
# pixels, which the replicas' sum reproduces exactly.
SEGMENTATION_LOSS = {"loss": {"crossentropy": 1.0, "focal": 1.0}}
UNET = {
    "task": "segmentation",
    "data": SHAPES,
    "model": {
        "name": "unet",
        "backbone_args": {"filters": [4, 8, 16]},
        "args": {"decoder_filters": [8, 4]},
    },
}
SEGNET = {
    "task": "segmentation",
    "data": SHAPES,
    "model": {"name": "segnet", "args": {"filters": [4, 8], "convs_per_stage": [1, 1]}},
}
ONE_STEP = {
    "train": {
        "epochs": 1,
        "steps_per_epoch": 1,
        "optimizer": "sgd",
        "learning_rate": 0.1,
        "schedule": "constant",
    },
    "export": {"formats": []},
}

SCRIPT = """
import json, sys
import numpy as np
import keras
from kcnn.training import config_from_dict, train
from kcnn.training.distribute import configure_devices

configure_devices(["/cpu:0", "/cpu:1"])
results, one_device = {}, {}
for name, values in json.loads(sys.argv[1]).items():
    weights = {}
    sync_batch_norm = values.pop("sync_batch_norm")
    # A config whose one-device step is an earlier config's (to float32 rounding) reuses
    # that config's weights instead of training them again.
    reference = values.pop("one_device_of", None)
    strategies = [("one_device", ["/cpu:0"]), ("mirrored", ["/cpu:0", "/cpu:1"])]
    if reference is not None:
        weights["one_device"] = one_device[reference]
        strategies = strategies[1:]
    for strategy, devices in strategies:
        config = config_from_dict({**values, "name": f"{name}_{strategy}",
                                   "output_dir": sys.argv[2],
                                   "runtime": {"strategy": strategy, "devices": devices,
                                               "sync_batch_norm": sync_batch_norm, "seed": 1}})
        run_dir = train(config, verbose=0)
        weights[strategy] = keras.saving.load_model(run_dir / "model.keras").get_weights()
    one_device[name] = weights["one_device"]
    results[name] = max(float(np.max(np.abs(a - b)))
                        for a, b in zip(weights["one_device"], weights["mirrored"], strict=True))
print("RESULTS " + json.dumps(results))
"""


def merged(*parts):
    result = {}
    for part in parts:
        for key, value in part.items():
            result[key] = {**result.get(key, {}), **value} if isinstance(value, dict) else value
    return result


@pytest.fixture(scope="module")
def one_step_differences(tmp_path_factory):
    """Max |one device - 2 mirrored replicas| over the weights after one step, per config;
    every config trains in one fresh process (one TensorFlow start-up for all)."""
    configs = {
        "classifier": merged(CLASSIFIER, ONE_STEP, {"sync_batch_norm": True}),
        "unet": merged(UNET, ONE_STEP, {"train": SEGMENTATION_LOSS, "sync_batch_norm": True}),
        "segnet": merged(SEGNET, ONE_STEP, {"train": SEGMENTATION_LOSS, "sync_batch_norm": True}),
        # The control: per-replica batch statistics. Its one-device reference is the
        # classifier's run: one device has no replicas to synchronize, so the two differ by
        # float32 rounding (synchronized batch norm computes the variance as E[x^2] - E[x]^2),
        # far below the control's 1e-4.
        "classifier_unsynchronized": merged(
            CLASSIFIER, ONE_STEP, {"sync_batch_norm": False, "one_device_of": "classifier"}
        ),
    }
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(configs), str(tmp_path_factory.mktemp("runs"))],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert "RESULTS " in result.stdout, (result.stdout + result.stderr)[-4000:]
    assert "MirroredStrategy with 2 replica(s)" in result.stdout
    differences = json.loads(result.stdout.split("RESULTS ")[1])
    assert set(differences) == set(configs)
    return differences


@pytest.mark.parametrize("name", ["classifier", "unet", "segnet"])
def test_two_replicas_take_the_step_of_one_device(one_step_differences, name):
    # Keras's synchronized batch norm computes the variance as E[x^2] - E[x]^2 over the
    # replicas, one device as E[(x - mean)^2]: float32 rounding, no more.
    assert one_step_differences[name] < 2e-5


def test_mirrored_replicas_differ_without_sync_batch_norm(one_step_differences):
    # The control: per-replica batch statistics make two replicas differ from one device,
    # which is why `runtime.sync_batch_norm` exists (and shows the test above can fail).
    assert one_step_differences["classifier_unsynchronized"] > 1e-4


def test_multi_worker_run_on_two_local_processes_equals_one_process(tmp_path):
    values = merged(
        CLASSIFIER,
        {
            "name": "workers",
            "output_dir": str(tmp_path / "runs"),
            "train": {
                "epochs": 1,
                "steps_per_epoch": 3,
                "optimizer": "sgd",
                "learning_rate": 0.3,
                "schedule": "constant",
            },
            "runtime": {"sync_batch_norm": True, "seed": 2},
            "export": {"formats": []},
        },
    )
    config = tmp_path / "workers.yaml"
    config.write_text(yaml.safe_dump(values), encoding="utf-8")
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    workers = subprocess.run(
        [
            sys.executable,
            "-m",
            "kcnn.cli",
            "train",
            str(config),
            "--workers",
            "2",
            "--run-dir",
            str(tmp_path / "multi"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=environment,
    )
    output = workers.stdout + workers.stderr
    assert workers.returncode == 0, output[-4000:]
    fingerprints = {
        line.split("]")[0]: line.rsplit(" ", 1)[1]
        for line in output.splitlines()
        if "final weights sha256" in line
    }
    assert set(fingerprints) == {"[worker 0", "[worker 1"}, output[-4000:]
    assert len(set(fingerprints.values())) == 1  # both workers hold the same weights
    assert "MultiWorkerMirroredStrategy with 2 replica(s)" in output

    single = subprocess.run(
        [
            sys.executable,
            "-m",
            "kcnn.cli",
            "train",
            str(config),
            "--run-dir",
            str(tmp_path / "single"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=environment,
    )
    assert single.returncode == 0, (single.stdout + single.stderr)[-4000:]
    multi = keras.saving.load_model(tmp_path / "multi" / "model.keras").get_weights()
    one = keras.saving.load_model(tmp_path / "single" / "model.keras").get_weights()
    for a, b in zip(multi, one, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
