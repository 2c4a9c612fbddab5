"""Architecture search over kcnn's own building blocks (`kcnn tune`), on Optuna.

A study searches the config keys of a YAML experiment's `tune` block (block type, depth and
kernel size per stage of `block_cnn`, width, dropout, learning rate, ...) for one or several
objectives (`val_accuracy: max`, `macs: min`, `tflite_latency_ms: min`), under hard
constraints, with Optuna's samplers and pruners; every trial is a `kcnn train` run. See
`kcnn.tuning.study` for the study folder and `kcnn.tuning.storage` for storages, resuming
and workers.
"""

from kcnn.tuning.results import write_results
from kcnn.tuning.space import suggest, trial_config, values_of_params
from kcnn.tuning.storage import open_storage, storage_url
from kcnn.tuning.study import (
    PruningCallback,
    finished_trials,
    open_study,
    run_trials,
    study_dir_for,
    tune,
)
from kcnn.tuning.workers import launch_tune_workers, tune_with_workers

__all__ = [
    "PruningCallback",
    "finished_trials",
    "launch_tune_workers",
    "open_storage",
    "open_study",
    "run_trials",
    "storage_url",
    "study_dir_for",
    "suggest",
    "trial_config",
    "tune",
    "tune_with_workers",
    "values_of_params",
    "write_results",
]
