import os
import subprocess
import sys

import pytest

PROBE = """
import os
{before}
import kcnn
import tensorflow as tf
from tensorflow.python.util import _pywrap_util_port
tf.ones([256, 256]) * 2.0
try:
    tf.config.experimental.get_memory_info("CPU:0")  # BFC allocators keep statistics
    allocator = "bfc"
except ValueError:
    allocator = "malloc"
print("allocator", allocator)
print("onednn", os.environ["TF_ENABLE_ONEDNN_OPTS"], _pywrap_util_port.IsMklEnabled())
"""
# The settings the probes vary; each probe's environment sets them itself.
_SETTINGS = ("TF_CPU_ALLOCATOR_USE_BFC", "TF_ENABLE_ONEDNN_OPTS")
_PROBES = {}


def probe(environment, before=""):
    """Output of `PROBE` in a fresh process with `environment` (TensorFlow's settings are
    read once per process); one process per distinct environment for the whole module."""
    key = (tuple(sorted(environment.items())), before)
    if key not in _PROBES:
        env = {k: v for k, v in os.environ.items() if k not in _SETTINGS}
        env.update(environment)
        _PROBES[key] = subprocess.run(
            [sys.executable, "-W", "always", "-c", PROBE.format(before=before)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    return _PROBES[key]


def printed(result, name):
    return next(
        line.split(" ", 1)[1] for line in result.stdout.splitlines() if line.startswith(name + " ")
    )


@pytest.mark.parametrize("setting, expected", [(None, "bfc"), ("false", "malloc")])
def test_importing_kcnn_selects_the_bfc_cpu_allocator_unless_the_user_chose(setting, expected):
    # oneDNN, when turned on, selects the BFC allocator by itself.
    environment = {"TF_ENABLE_ONEDNN_OPTS": "0"}
    if setting is not None:
        environment["TF_CPU_ALLOCATOR_USE_BFC"] = setting
    assert printed(probe(environment), "allocator") == expected


def test_importing_kcnn_alone_registers_every_object_a_run_saves(tmp_path):
    """A run's `model.keras` holds its compiled loss and metrics too (a segmentation run's
    `SumLoss` of cross-entropy and Dice, inpainting's loss and PSNR / SSIM / hole-L1): a
    process that imports only `kcnn` must deserialize them."""
    import json

    import keras

    from kcnn.tasks import (
        CrossEntropyLoss,
        DiceLoss,
        HoleL1,
        InpaintingLoss,
        LabelSmoothingCrossEntropy,
        PeakSignalToNoiseRatio,
        StructuralSimilarity,
        SumLoss,
    )

    objects = [
        SumLoss([CrossEntropyLoss(), DiceLoss()], [1.0, 1.0]),
        InpaintingLoss(),
        LabelSmoothingCrossEntropy(0.1),
        PeakSignalToNoiseRatio(),
        StructuralSimilarity(),
        HoleL1(),
    ]
    path = tmp_path / "objects.json"
    path.write_text(json.dumps([keras.saving.serialize_keras_object(o) for o in objects]))
    probe = (
        "import json, sys, keras, kcnn\n"
        f"configs = json.load(open({str(path)!r}))\n"
        "print(' '.join(type(keras.saving.deserialize_keras_object(c)).__name__ "
        "for c in configs))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == [type(o).__name__ for o in objects]


@pytest.mark.parametrize(
    "setting, before, expected",
    [
        # Unset: importing kcnn turns TensorFlow's oneDNN kernels on.
        (None, "", "1 True"),
        # The user's choice is kept.
        ("0", "", "0 False"),
        # TensorFlow imported first with oneDNN off (as on CPUs where that is its default):
        # too late to turn it on, and kcnn says so.
        (
            None,
            "os.environ['TF_ENABLE_ONEDNN_OPTS'] = '0'\nimport tensorflow\n"
            "del os.environ['TF_ENABLE_ONEDNN_OPTS']",
            "1 False",
        ),
    ],
)
def test_importing_kcnn_turns_tensorflow_onednn_kernels_on(setting, before, expected):
    environment = {} if setting is None else {"TF_ENABLE_ONEDNN_OPTS": setting}
    result = probe(environment, before)
    assert printed(result, "onednn") == expected, result.stdout
    too_late = "imported before kcnn, with its oneDNN CPU kernels off" in result.stderr
    assert too_late == (expected == "1 False"), result.stderr[-2000:]
