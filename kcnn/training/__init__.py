"""Configuration, the train / evaluate / export loop and transfer learning."""

from kcnn.training.config import ExperimentConfig, config_from_dict, load_config, save_config
from kcnn.training.trainer import evaluate, export, load_run, resolve_run_dir, train
from kcnn.training.transfer import (
    TransferReport,
    freeze,
    head_layers,
    load_pretrained,
    replace_head,
    unfreeze,
)

__all__ = [
    "ExperimentConfig",
    "TransferReport",
    "config_from_dict",
    "evaluate",
    "export",
    "freeze",
    "head_layers",
    "load_config",
    "load_pretrained",
    "load_run",
    "replace_head",
    "resolve_run_dir",
    "save_config",
    "train",
    "unfreeze",
]
