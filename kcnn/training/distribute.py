"""Which `tf.distribute` strategy a run uses, and the launcher of multi-worker runs.

The config's `runtime` block (as in TF Model Garden) picks the strategy:

- `auto`: `MirroredStrategy` over all GPUs when there is more than one, else the default
  (one device);
- `one_device`: `OneDeviceStrategy` on `devices[0]` (default: the first GPU, else the CPU);
- `mirrored`: `MirroredStrategy` over `devices` (default: all GPUs, else the CPU). On a
  machine without GPUs, `devices: ["/cpu:0", "/cpu:1"]` splits the CPU into that many
  logical devices, so a data-parallel run can be tried (and tested) anywhere;
- `multi_worker`: `MultiWorkerMirroredStrategy`, one process per worker, the cluster read
  from `TF_CONFIG`. `kcnn train CONFIG --workers N` starts N workers on this machine.

The batch size in the config is the global batch: each of R replicas computes the gradient
of B / R examples and the all-reduce sums them, so one step of R replicas on a batch equals
one step of one device on the same batch (tests check it to 1e-5).
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import tensorflow as tf

from kcnn.training.config import STRATEGIES

_CPU = re.compile(r"^/(?:job:[^/]+/replica:\d+/task:\d+/)?(?:device:)?cpu:(\d+)$", re.IGNORECASE)


def configure_devices(devices):
    """Splits the CPU into logical devices when `devices` names more CPUs than exist.

    Must run before TensorFlow initialises its devices (before the first op).

    Raises:
        RuntimeError: if TensorFlow is already initialised with fewer CPU devices.
    """
    indices = [int(m.group(1)) for m in (_CPU.match(d) for d in devices or ()) if m]
    if not indices:
        return
    wanted = max(indices) + 1
    physical = tf.config.list_physical_devices("CPU")
    current = tf.config.get_logical_device_configuration(physical[0]) or [None]
    if len(current) >= wanted:
        return
    try:
        tf.config.set_logical_device_configuration(
            physical[0], [tf.config.LogicalDeviceConfiguration() for _ in range(wanted)]
        )
    except RuntimeError as error:
        raise RuntimeError(
            f"`runtime.devices` names {wanted} CPU devices, but TensorFlow was already "
            "initialised with fewer. Start a fresh process (e.g. `kcnn train`) or call "
            "`kcnn.training.configure_devices` before any TensorFlow op."
        ) from error


def resolve_strategy(runtime):
    """Returns the `tf.distribute.Strategy` a `RuntimeConfig` asks for (see module doc)."""
    if runtime.strategy not in STRATEGIES:
        raise ValueError(
            f"`runtime.strategy` must be one of {list(STRATEGIES)}. Received: {runtime.strategy!r}"
        )
    devices = list(runtime.devices or [])
    if runtime.strategy == "multi_worker":
        # Before anything that starts TensorFlow's runtime: collectives are configured then.
        if "TF_CONFIG" not in os.environ:
            raise ValueError(
                "`runtime.strategy: multi_worker` needs the cluster in the TF_CONFIG "
                "environment variable; `kcnn train CONFIG --workers N` sets it for N workers "
                "on this machine."
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    configure_devices(devices)
    gpus = tf.config.list_logical_devices("GPU")
    if runtime.strategy == "one_device":
        device = devices[0] if devices else ("/gpu:0" if gpus else "/cpu:0")
        return tf.distribute.OneDeviceStrategy(device)
    if runtime.strategy == "mirrored":
        cross_device_ops = None
        if devices and all(_CPU.match(device) for device in devices):
            # Logical CPUs: reduce through one device. The collective all-reduce TensorFlow
            # picks here can order the synchronized batch-norm reductions of a multi-branch
            # model (U-Net) differently on each replica and abort.
            cross_device_ops = tf.distribute.ReductionToOneDevice()
        return tf.distribute.MirroredStrategy(devices or None, cross_device_ops=cross_device_ops)
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief():
    """True unless this process is a non-chief worker of a multi-worker cluster."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    task = config.get("task", {})
    if not config.get("cluster") or not task:
        return True
    if "chief" in config["cluster"]:
        return task.get("type") == "chief"
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for handle in sockets:
            handle.bind(("localhost", 0))
        return [handle.getsockname()[1] for handle in sockets]
    finally:
        for handle in sockets:
            handle.close()


def launch_workers(argv, workers, timeout=None):
    """Runs `kcnn` with `argv` as `workers` local worker processes with `TF_CONFIG` set.

    Worker 0 is the chief and writes the run folder; the others train in step with it.
    Their output is prefixed `[worker i]`. If one worker fails, the others are stopped.

    Args:
        argv: list of str. The `kcnn` arguments, e.g. `["train", "configs/x.yaml"]`.
        workers: int >= 2.
        timeout: seconds or None.

    Returns:
        0 when every worker succeeded, else the first non-zero exit code.
    """
    if not isinstance(workers, int) or workers < 2:
        raise ValueError(f"`workers` must be an int >= 2. Received: workers={workers!r}")
    addresses = [f"localhost:{port}" for port in _free_ports(workers)]
    processes = []
    for index in range(workers):
        environment = dict(os.environ)
        environment["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
        )
        environment["KCNN_WORKER_PREFIX"] = f"[worker {index}] "
        command = [
            sys.executable,
            "-m",
            "kcnn.cli",
            *argv,
            "--override",
            "runtime.strategy=multi_worker",
        ]
        processes.append(subprocess.Popen(command, env=environment))
    deadline = None if timeout is None else time.monotonic() + timeout
    codes = [None] * workers
    while any(code is None for code in codes):
        for index, process in enumerate(processes):
            if codes[index] is None:
                codes[index] = process.poll()
        failed = [code for code in codes if code not in (None, 0)]
        expired = deadline is not None and time.monotonic() > deadline
        if failed or expired:
            for process in processes:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in processes:
                process.wait()
            return failed[0] if failed else 124
        time.sleep(0.2)
    return 0
