"""Configuration, the train / evaluate / export pipeline, transfer learning and auxiliary
losses."""

from kcnn.training.auxiliary import AuxiliaryLossModel, auxiliary_output_names, main_output_model
from kcnn.training.config import ExperimentConfig, config_from_dict, load_config, save_config
from kcnn.training.explain_run import explain_run
from kcnn.training.exporting import export_run
from kcnn.training.fitting import fuse_batch_norm, synchronize_batch_norm
from kcnn.training.run_folder import load_run, read_history, resolve_run_dir
from kcnn.training.trainer import build_model, evaluate, export, load_data, train
from kcnn.training.transfer import (
    TransferReport,
    apply_transfer,
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
    "apply_transfer",
    "auxiliary_output_names",
    "build_model",
    "config_from_dict",
    "evaluate",
    "explain_run",
    "export",
    "export_run",
    "freeze",
    "fuse_batch_norm",
    "head_layers",
    "load_config",
    "load_data",
    "load_pretrained",
    "load_run",
    "main_output_model",
    "read_history",
    "replace_head",
    "resolve_run_dir",
    "save_config",
    "synchronize_batch_norm",
    "train",
    "unfreeze",
]
