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
