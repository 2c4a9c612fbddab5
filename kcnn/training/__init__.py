"""Configuration and the train / evaluate / export loop."""

from kcnn.training.config import ExperimentConfig, config_from_dict, load_config, save_config
from kcnn.training.trainer import evaluate, export, load_run, resolve_run_dir, train

__all__ = [
    "ExperimentConfig",
    "config_from_dict",
    "evaluate",
    "export",
    "load_config",
    "load_run",
    "resolve_run_dir",
    "save_config",
    "train",
]
