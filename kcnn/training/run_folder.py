"""The run folder: where a run writes, how an unfinished one is found again, and how a
finished one is read back.

    runs/<name>/
      config.yaml          the resolved experiment config
      model.keras          the trained model (reloads with no custom_objects)
      metrics.json         test-split metrics, data set, timing (written last: "finished")
      history.csv          per-epoch metrics (appended across a resumed run)
      curves.png           training curves, and the task's own plots
      logs/                TensorBoard logs
      saved_model/, model*.tflite, metadata.json, export_report.json   the exports
      backup/              the last checkpoint of an unfinished run

A finished run is never trained into again: the next run of the same experiment goes to
`runs/<name>-2`, `-3`, ...
"""

import fcntl
import os
import socket
import zipfile
from pathlib import Path

import keras

from kcnn._files import atomic_path, read_history_csv, write_json
from kcnn.training.config import load_config, save_config

BACKUP = "backup"
FINISHED_MARKER = "metrics.json"
MODEL_FILE = "model.keras"
# The file that makes a folder an architecture search's (`kcnn tune`), never a run's.
STUDY_MARKER = "tune.yaml"

__all__ = [
    "BACKUP",
    "FINISHED_MARKER",
    "MODEL_FILE",
    "STUDY_MARKER",
    "RunLock",
    "check_run_dir",
    "config_differences",
    "is_trained",
    "load_run",
    "read_history",
    "resolve_run_dir",
    "save_config",
    "save_model",
    "write_json",
]


def resolve_run_dir(config):
    """Returns the run folder: an unfinished run of this experiment, or a fresh folder.

    A folder is reused while its training is unfinished (it resumes from `backup/`). A folder
    with `metrics.json` is finished, and one with `model.keras` but no `metrics.json` has
    trained but failed its evaluation or export; neither is touched again, nor an unfinished
    run of another experiment (its `config.yaml` differs in task, data, model or train): the
    next free `NAME-2`, `NAME-3`, ... is used instead (`kcnn export RUN` re-runs an export).
    """
    base = Path(config.output_dir) / config.name
    candidate, index = base, 1
    while candidate.exists():
        if (
            not is_trained(candidate)
            and not (candidate / STUDY_MARKER).exists()
            and not config_differences(candidate, config)
        ):
            return candidate  # unfinished run of this experiment: resume it (or reuse it)
        index += 1
        candidate = base.with_name(f"{base.name}-{index}")
    return candidate


def read_history(run_dir):
    """Reads `history.csv` of a run into {metric: [value per epoch]} (columns that are all
    "NA", the `val_` ones of a run without validation data, are left out)."""
    return read_history_csv(Path(run_dir) / "history.csv")


def save_model(model, run_dir):
    """Writes `model.keras` into the run folder, atomically."""
    with atomic_path(Path(run_dir) / MODEL_FILE) as temporary:
        model.save(temporary)


def load_run(run_dir):
    """Loads the config and the trained model of a finished run folder.

    Raises:
        FileNotFoundError: if the folder holds no `model.keras`.
        ValueError: if `model.keras` cannot be read (named).
    """
    run_dir = Path(run_dir)
    model_path = run_dir / MODEL_FILE
    if not model_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a finished kcnn run: no model.keras in it.")
    config = load_config(run_dir / "config.yaml")
    try:
        model = keras.saving.load_model(model_path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"{model_path} is not a readable Keras model file (truncated or damaged?): {reason}"
        ) from None
    return config, model


# The config blocks that define an experiment: an unfinished run resumes only with the same.
EXPERIMENT_BLOCKS = ("task", "data", "model", "train")


def _differences(saved, current, prefix=""):
    """The dotted keys whose values differ between two config dicts."""
    keys = []
    for key in sorted(set(saved) | set(current)):
        path = f"{prefix}{key}"
        old, new = saved.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            keys += _differences(old, new, path + ".")
        elif old != new:
            keys.append(path)
    return keys


def config_differences(run_dir, config):
    """The experiment keys (task, data, model, train) in which `config` differs from the
    `config.yaml` an unfinished run folder holds; [] when it holds none."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return []
    saved = load_config(path).to_dict()
    current = config.to_dict()
    return _differences(
        {key: saved[key] for key in EXPERIMENT_BLOCKS},
        {key: current[key] for key in EXPERIMENT_BLOCKS},
    )


def is_trained(run_dir):
    """Whether a run folder holds a trained model: finished (`metrics.json`), or trained
    with a failed evaluation or export (`model.keras`)."""
    return (Path(run_dir) / FINISHED_MARKER).exists() or (Path(run_dir) / MODEL_FILE).exists()


def check_run_dir(run_dir, config):
    """Refuses a run folder that `config` must not train into (the `--run-dir` a user gave).

    Raises:
        ValueError: for a folder that holds a trained run (never trained into again), or an
            unfinished run of another experiment (its config.yaml is kept as it is).
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"`--run-dir` {run_dir} is a file, not a folder.")
    if (run_dir / STUDY_MARKER).exists():
        raise ValueError(
            f"{run_dir} holds an architecture search (`kcnn tune`), not a run: give "
            "`--run-dir` another folder, or leave it out."
        )
    if is_trained(run_dir):
        raise ValueError(
            f"{run_dir} holds a trained run (model.keras), which is never trained into again: "
            f"`kcnn evaluate {run_dir}` and `kcnn export {run_dir}` work on it. To train "
            "anew, give `--run-dir` a new folder, or leave it out (runs/<name>-2, -3, ...)."
        )
    differences = config_differences(run_dir, config)
    if differences:
        raise ValueError(
            f"{run_dir} holds an unfinished run of another experiment (it differs in "
            f"{', '.join(differences[:5])}): resume it with its own config "
            f"({run_dir / 'config.yaml'}), or give `--run-dir` another folder."
        )
    return run_dir


class RunLock:
    """An exclusive lock on a run folder for the life of a run (`fcntl.flock` on
    `<run>/.lock`).

    A second process training into the same folder fails at once with a message naming the
    first one's process id. The lock belongs to the open file, so the kernel releases it when
    its process dies, even by `kill -9`: a stale lock file is simply taken over.
    """

    FILE = ".lock"

    def __init__(self, run_dir):
        self.path = Path(run_dir) / self.FILE
        self._handle = None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115  (held until __exit__)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise ValueError(
                f"{self.path.parent} is in use by another kcnn run ({holder}): wait for it to "
                "finish, or train into another folder (`--run-dir`)."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc_info):
        self.path.unlink(missing_ok=True)
        self._handle.close()
        self._handle = None
