import json

import pytest

from kcnn.cli import main

TINY = [
    "--override",
    "data.name=digits",
    "--override",
    "train.epochs=2",
    "--override",
    "model.backbone_args={filters: [8, 16], convs_per_level: 1}",
    "--override",
    "export.formats=[tflite]",
]


def test_train_then_evaluate_reports_the_same_accuracy(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", "configs/digits.yaml", "--run-dir", str(run_dir), *TINY]) == 0
    assert f"run folder: {run_dir}" in capsys.readouterr().out
    trained = json.loads((run_dir / "metrics.json").read_text())
    assert not (run_dir / "saved_model").exists()  # export.formats override honoured
    assert main(["evaluate", str(run_dir)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["test_accuracy"] == pytest.approx(trained["test_accuracy"], abs=1e-9)
    assert json.loads((run_dir / "evaluation.json").read_text()) == evaluated


def test_analyze_prints_totals_equal_to_keras_count(capsys):
    from kcnn.training import load_config
    from kcnn.training.trainer import build_model

    assert main(["analyze", "configs/digits.yaml"]) == 0
    table = capsys.readouterr().out
    expected = build_model(load_config("configs/digits.yaml"), (8, 8, 1), 10).count_params()
    assert f"{expected:,}" in table or str(expected) in table


@pytest.mark.parametrize("backbone", ["mobilenetv3_small", "hgnetv2_b0"])
def test_analyze_walks_keras_hub_blocks_without_a_graph(backbone, tmp_path, capsys):
    # keras-hub's MobileNet and HGNetV2 blocks are subclassed layers: their convs are rows
    # of the table ("backbone/block/conv"), so MACs are counted; the total equals Keras's.
    from kcnn.training import load_config
    from kcnn.training.trainer import build_model

    config = tmp_path / "config.yaml"
    config.write_text(
        f"name: digits\ntask: classification\ndata: {{name: digits}}\n"
        f"model: {{backbone: {backbone}}}\n"
    )
    assert main(["analyze", str(config)]) == 0
    table = capsys.readouterr().out
    expected = build_model(load_config(config), (8, 8, 1), 10).count_params()
    assert f"{expected:,}" in table
    rows = [row.split() for row in table.splitlines() if row.strip()]
    # backbone/block/conv rows with their MACs.
    assert any(row[0].count("/") == 2 and row[1] == "Conv2D" and row[-3] != "0" for row in rows)


def test_errors_are_one_line_and_exit_2(tmp_path, capsys):
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "kcnn train: error: Config file not found" in capsys.readouterr().err
    assert main(["train", "configs/digits.yaml", "-o", "train.epochz=1"]) == 2
    assert "Unknown config key `train.epochz`" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "is not a finished kcnn run" in capsys.readouterr().err


def test_explain_methods_are_the_librarys():
    from kcnn import cli, viz

    assert cli.EXPLAIN_METHODS == viz.METHODS


def test_quantizations_are_the_exporters():
    from kcnn import cli
    from kcnn.export import options

    assert cli.QUANTIZATIONS == options.QUANTIZATIONS
