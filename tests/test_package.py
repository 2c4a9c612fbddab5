import os
import subprocess
import sys

import pytest

PROBE = """
import kcnn
import tensorflow as tf
tf.ones([256, 256]) * 2.0
try:
    tf.config.experimental.get_memory_info("CPU:0")  # BFC allocators keep statistics
    print("bfc")
except ValueError:
    print("malloc")
"""


@pytest.mark.parametrize("setting, expected", [(None, "bfc"), ("false", "malloc")])
def test_importing_kcnn_selects_the_bfc_cpu_allocator_unless_the_user_chose(setting, expected):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPU_ALLOCATOR_USE_BFC"}
    # oneDNN, when turned on, selects the BFC allocator by itself.
    env["TF_ENABLE_ONEDNN_OPTS"] = "0"
    if setting is not None:
        env["TF_CPU_ALLOCATOR_USE_BFC"] = setting
    result = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.split()[-1] == expected


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


ONEDNN_PROBE = """
import os
{before}
import kcnn
from tensorflow.python.util import _pywrap_util_port
print(os.environ["TF_ENABLE_ONEDNN_OPTS"], _pywrap_util_port.IsMklEnabled())
"""


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
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if setting is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = setting
    result = subprocess.run(
        [sys.executable, "-W", "always", "-c", ONEDNN_PROBE.format(before=before)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.split("\n")[-2] == expected, result.stdout
    too_late = "imported before kcnn, with its oneDNN CPU kernels off" in result.stderr
    assert too_late == (expected == "1 False"), result.stderr[-2000:]
