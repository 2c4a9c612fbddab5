import re
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml

from kcnn.training.config import (
    ExperimentConfig,
    config_from_dict,
    load_config,
    save_config,
)
from kcnn.training.fitting import build_optimizer

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))


def test_there_are_configs_to_check():
    assert {path.name for path in CONFIGS} >= {"default.yaml", "fashion_mnist.yaml", "digits.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.name)
def test_every_shipped_config_loads_and_round_trips(path, tmp_path):
    config = load_config(path)
    raw = yaml.safe_load(path.read_text())
    assert config.name == raw["name"]
    assert config.train.epochs == raw["train"]["epochs"]
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config


def test_overrides_are_parsed_as_yaml_values(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\ntrain: {epochs: 5}\n")
    config = load_config(
        path,
        ["train.epochs=2", "model.backbone_args={filters: [8, 16]}", "data.path=null"],
    )
    assert config.train.epochs == 2
    assert config.model.backbone_args == {"filters": [8, 16]}
    assert config.data.path is None
    assert config.train.learning_rate == ExperimentConfig().train.learning_rate


def test_integers_are_accepted_for_float_fields():
    config = config_from_dict({"train": {"learning_rate": 1}})
    assert config.train.learning_rate == 1.0 and isinstance(config.train.learning_rate, float)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"train": {"epochz": 3}}, r"Unknown config key `train.epochz`"),
        ({"colour": "red"}, r"Unknown config key `colour`"),
        ({"train": {"epochs": "ten"}}, r"`train.epochs` must be of type int. Received: 'ten'"),
        ({"train": {"epochs": True}}, r"`train.epochs` must be of type int"),
        ({"train": {"epochs": 0}}, r"`train.epochs` must be positive. Received: 0"),
        ({"train": {"optimizer": "rmsprop"}}, r"`train.optimizer` must be one of"),
        ({"export": {"quantization": "int4"}}, r"`export.quantization` must be one of"),
        ({"export": {"formats": ["onnx"]}}, r"`export.formats` must be one of"),
        ({"data": {"validation_fraction": 1.5}}, r"`data.validation_fraction` must be in"),
        ({"data": 3}, r"`data` must be a mapping"),
        ({"model": {"freezee": "P3"}}, r"Unknown config key `model.freezee`"),
        (
            {"model": {"pretrained": "runs/a/model.h5"}},
            re.escape(
                "`model.pretrained` must be a local '.keras' model file or '.weights.h5' "
                "weights file. Received: 'runs/a/model.h5'"
            ),
        ),
        (
            {"model": {"freeze": "head"}},
            re.escape(
                '`model.freeze` must be "backbone", a pyramid level such as "P3", or a '
                "non-empty list of layer-name prefixes. Received: model.freeze='head'"
            ),
        ),
        ({"model": {"freeze": [1]}}, r"Received: model.freeze=\[1\]"),
        ({"model": {"freeze": 3}}, r"`model.freeze` must be of type str or list or null"),
        ({"data": {"train_per_class": 0}}, r"`data.train_per_class` must be positive"),
        ({"train": {"aux_loss_weight": -0.3}}, r"`train.aux_loss_weight` must be >= 0"),
        (
            {"train": {"optimizer": "adam", "weight_decay": 0.01}},
            r"`train.weight_decay` needs `train.optimizer` adamw or sgd",
        ),
    ],
)
def test_bad_values_name_the_key(values, message):
    with pytest.raises(ValueError, match=message):
        config_from_dict(values)


def test_load_config_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="Config file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    path = tmp_path / "bad.yaml"
    path.write_text("train: {epochz: 1}\n")
    with pytest.raises(ValueError, match=r"bad.yaml: Unknown config key `train.epochz`"):
        load_config(path)
    with pytest.raises(ValueError, match="An override must look like key.subkey=value"):
        load_config(path, ["train.epochs"])
    path.write_text("name: a\ntrain: {epochs: 2}\n")
    with pytest.raises(ValueError, match=r"Override `train.epochs.x`: `epochs` is not a mapping"):
        load_config(path, ["train.epochs.x=1"])
    with pytest.raises(ValueError, match=r"Override `train.epochs`: the value '\[1' is not valid"):
        load_config(path, ["train.epochs=[1"])
    assert load_config(path, [" train.epochs =3", "train.optimizer=sgd"]).train.epochs == 3
    path.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="must hold a mapping at the top level"):
        load_config(path)


def test_transfer_keys_load():
    for freeze in ("backbone", "P3", ["block1", "block2"]):
        config = config_from_dict({"model": {"pretrained": "runs/a/model.keras", "freeze": freeze}})
        assert config.model.freeze == freeze
    config = config_from_dict({"model": {"pretrained": "b.weights.h5", "pretrained_head": True}})
    assert config.model.pretrained_head and config.model.freeze is None
    assert ExperimentConfig().train.aux_loss_weight == 0.3


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_weight_decay_is_decoupled_for_adamw_and_sgd(optimizer):
    # One step from w0 with gradient g, against float64: decoupled decay multiplies w0 by
    # 1 - lr * wd first; Nesterov SGD's first step then moves by -lr * (1 + momentum) * g.
    # Adam's first step is lr * g / (|g| + eps'), so a zero gradient isolates the decay.
    train = config_from_dict(
        {
            "train": {
                "optimizer": optimizer,
                "learning_rate": 0.1,
                "weight_decay": 0.05,
                "schedule": "constant",
            }
        }
    ).train
    weights = np.array([1.0, -2.0, 0.5])
    gradient = np.array([0.3, 0.0, -1.0]) if optimizer == "sgd" else np.zeros(3)
    variable = keras.Variable(weights.astype("float32"))
    build_optimizer(train, steps_per_epoch=10).apply([gradient.astype("float32")], [variable])
    expected = weights * (1 - 0.1 * 0.05) - 0.1 * 1.9 * gradient
    np.testing.assert_allclose(np.asarray(variable), expected, rtol=1e-6)
