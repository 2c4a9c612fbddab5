"""Several local processes working on one study (`kcnn tune CONFIG --workers N`).

Each worker is `kcnn tune` on the same study folder and storage: Optuna hands every new
trial to exactly one of them, so no trial runs twice and the study's trials are the sum of
the workers'. On several machines, the same command with a shared `tune.storage` (a
PostgreSQL or MySQL URL, or a journal file on a shared file system) does the same.
"""

import os
import subprocess
import sys
import time

from kcnn.tuning.results import write_results
from kcnn.tuning.study import WORKER_VARIABLE, open_study, study_dir_for


def launch_tune_workers(argv, workers, study_dir):
    """Runs `kcnn` with `argv` (e.g. `["tune", "configs/tune_fashion.yaml"]`) as `workers`
    local processes on the study in `study_dir`, each told its index (`KCNN_TUNE_WORKER`)
    and its output prefixed `[worker i]`; waits for them all.

    Args:
        argv: list of str, the `kcnn` arguments.
        workers: int >= 2.
        study_dir: the study folder every worker uses (`--run-dir`).

    Returns:
        0 when every worker succeeded, else the first non-zero exit status.

    Raises:
        ValueError: if `workers` is not an int >= 2.
    """
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 2:
        raise ValueError(f"`--workers` must be an int >= 2. Received: {workers!r}")
    processes = []
    for index in range(workers):
        environment = {
            **os.environ,
            WORKER_VARIABLE: str(index),
            "KCNN_WORKER_PREFIX": f"[worker {index}] ",
        }
        command = [sys.executable, "-m", "kcnn.cli", *argv, "--run-dir", str(study_dir)]
        processes.append(subprocess.Popen(command, env=environment))
        # Workers that start in the same instant would open the new study together.
        time.sleep(1.0)
    codes = [process.wait() for process in processes]
    return next((code for code in codes if code), 0)


def tune_with_workers(config, argv, workers, run_dir=None):
    """`kcnn tune --workers N`: opens the study (so the workers find it, its baseline
    enqueued once), runs `launch_tune_workers`, then writes the results of the whole study.

    Returns:
        `(exit status, study folder)`.
    """
    study_dir = study_dir_for(config, run_dir)
    study = open_study(config, study_dir)
    code = launch_tune_workers(argv, workers, study_dir)
    write_results(study, config, study_dir)  # the study reads its trials from the storage
    return code, study_dir
