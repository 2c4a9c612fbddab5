"""Configuration, the train / evaluate / export loop, transfer learning and auxiliary losses."""

from kcnn.training.auxiliary import AuxiliaryLossModel, auxiliary_output_names, main_output_model
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
    "AuxiliaryLossModel",
    "ExperimentConfig",
    "TransferReport",
    "auxiliary_output_names",
    "config_from_dict",
    "evaluate",
    "export",
    "freeze",
    "head_layers",
    "load_config",
    "load_pretrained",
    "load_run",
    "main_output_model",
    "replace_head",
    "resolve_run_dir",
    "save_config",
    "train",
    "unfreeze",
]
