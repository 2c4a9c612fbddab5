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

from pathlib import Path

import keras

from kcnn._files import atomic_path, read_history_csv, write_json
from kcnn.training.config import load_config, save_config

BACKUP = "backup"
FINISHED_MARKER = "metrics.json"
MODEL_FILE = "model.keras"

__all__ = [
    "BACKUP",
    "FINISHED_MARKER",
    "MODEL_FILE",
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
    trained but failed its evaluation or export; neither is touched again: the next free
    `NAME-2`, `NAME-3`, ... is used instead (`kcnn export RUN` re-runs an export).
    """
    base = Path(config.output_dir) / config.name
    candidate, index = base, 1
    while candidate.exists():
        trained = (candidate / FINISHED_MARKER).exists() or (candidate / MODEL_FILE).exists()
        if not trained:
            return candidate  # unfinished: resume it (or reuse an empty folder)
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
    """
    run_dir = Path(run_dir)
    model_path = run_dir / MODEL_FILE
    if not model_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a finished kcnn run: no model.keras in it.")
    config = load_config(run_dir / "config.yaml")
    return config, keras.saving.load_model(model_path)
