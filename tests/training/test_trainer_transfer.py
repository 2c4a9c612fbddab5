"""`kcnn train` with the transfer-learning keys of a config."""

import json

import keras
import numpy as np
import pytest

from kcnn.training import config_from_dict, train
from kcnn.training.config import DataConfig
from kcnn.training.trainer import load_data, read_history

BACKBONE = {"backbone_args": {"filters": [8, 16], "convs_per_level": 1}}


def digits_config(tmp_path, name, model=None, data=None, train_keys=None, export=None):
    return config_from_dict(
        {
            "name": name,
            "output_dir": str(tmp_path / "runs"),
            "data": {"name": "digits", "batch_size": 64, **(data or {})},
            "model": {**BACKBONE, **(model or {})},
            "train": {"epochs": 3, "learning_rate": 0.01, **(train_keys or {})},
            "export": export or {"formats": []},
        }
    )


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("pretrain")
    return train(digits_config(tmp_path, "pretrain"), verbose=0)


def test_pretrained_backbone_is_loaded_frozen_and_recorded(pretrained_run, tmp_path):
    source = keras.saving.load_model(pretrained_run / "model.keras")
    config = digits_config(
        tmp_path,
        "transfer",
        model={"pretrained": str(pretrained_run / "model.keras"), "freeze": "backbone"},
        data={"train_per_class": 5, "validation_fraction": 0.0},
    )
    run_dir = train(config, verbose=0)

    model = keras.saving.load_model(run_dir / "model.keras")
    # Frozen: every backbone weight, BatchNormalization statistics included, is the source's.
    for trained, pretrained in zip(
        model.get_layer("plain_cnn").weights, source.get_layer("plain_cnn").weights, strict=True
    ):
        np.testing.assert_array_equal(trained, pretrained, err_msg=trained.path)
    # The head started fresh and trained.
    assert not np.allclose(
        model.get_layer("predictions").kernel, source.get_layer("predictions").kernel
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["pretrained"] == {
        "path": str(pretrained_run / "model.keras"),
        "loaded_layers": ["level0_conv1", "level0_conv1_bn", "level1_conv1", "level1_conv1_bn"],
        "skipped_layers": {"predictions": "excluded"},
    }
    assert metrics["frozen_layers"] == ["plain_cnn", "pool"]
    assert metrics["trainable_params"] == 16 * 10 + 10
    # No validation split: the history holds the training columns only.
    assert sorted(read_history(run_dir)) == ["accuracy", "loss"]


@pytest.mark.filterwarnings("ignore:The model does not have any trainable weights")
def test_pretrained_head_is_loaded_when_asked(pretrained_run, tmp_path):
    source = keras.saving.load_model(pretrained_run / "model.keras")
    config = digits_config(
        tmp_path,
        "continue",
        model={
            "pretrained": str(pretrained_run / "model.keras"),
            "pretrained_head": True,
            "freeze": ["plain_cnn", "predictions"],
        },
        train_keys={"epochs": 1},
    )
    run_dir = train(config, verbose=0)
    model = keras.saving.load_model(run_dir / "model.keras")
    np.testing.assert_array_equal(
        model.get_layer("predictions").kernel, source.get_layer("predictions").kernel
    )
    source_metrics = json.loads((pretrained_run / "metrics.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["pretrained"]["skipped_layers"] == {}
    assert metrics["test_accuracy"] == source_metrics["test_accuracy"]


def test_a_missing_checkpoint_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "nothing.keras"
    config = digits_config(tmp_path, "missing", model={"pretrained": str(missing)})
    with pytest.raises(
        FileNotFoundError, match=f"^No pretrained model or weights file at: {missing}$"
    ):
        train(config, verbose=0)


def test_train_per_class_keeps_a_seeded_subset_of_the_training_split():
    full = load_data(DataConfig(name="digits"), seed=1)
    subset = load_data(DataConfig(name="digits", train_per_class=3), seed=1)
    assert np.bincount(subset.y_train).tolist() == [3] * 10
    np.testing.assert_array_equal(subset.x_test, full.x_test)
    again = load_data(DataConfig(name="digits", train_per_class=3), seed=1)
    np.testing.assert_array_equal(again.x_train, subset.x_train)
    other = load_data(DataConfig(name="digits", train_per_class=3), seed=2)
    assert not np.array_equal(other.x_train, subset.x_train)
    with pytest.raises(ValueError, match="applies to classification only"):
        load_data(DataConfig(name="shapes", train_per_class=3), task="segmentation")
