"""The `tune` block: every key checked, the baseline inside the space, and the Pareto front
against a brute-force reference."""

import itertools

import numpy as np
import pytest
import yaml

from kcnn.training import config_from_dict, load_config, save_config
from kcnn.training.tune_config import SearchParameter, TuneConfig
from kcnn.viz import pareto_front, plot_pareto_front

BASE = {
    "name": "search",
    "task": "classification",
    "data": {"name": "digits"},
    "model": {"backbone_args": {"filters": [8, 16], "kernel_size": 3}, "dropout": 0.1},
    "train": {"learning_rate": 0.003},
}


def with_tune(**tune):
    return {**BASE, "tune": tune}


@pytest.mark.parametrize(
    "tune, message",
    [
        ({"space": {"model.backbone_args.kernel_size": {"choices": [5, 7]}}}, "not in the search"),
        ({"space": {"model.backbone_args.width": {"choices": [1.0]}}}, "sets no"),
        ({"space": {"runtime.seed": {"choices": [0]}}}, "dotted config keys"),
        ({"space": {"train.learning_rate": {"low": 0.01, "high": 0.001}}}, "low < high"),
        ({"space": {"train.learning_rate": {"low": 0, "high": 1, "log": True}}}, "low > 0"),
        ({"space": {"train.learning_rate": {"lo": 0.001, "high": 0.01}}}, "Unknown config key"),
        (
            {"space": {"model.backbone_args.filters": {"low": 4, "high": 16, "stages": 3}}},
            "3 stages",
        ),
        ({"space": {"model.dropout": {"choices": []}}}, "non-empty"),
        ({"sampler": "grid"}, "tune.sampler"),
        ({"pruner": "median", "objectives": [{"val_accuracy": "max"}, {"macs": "min"}]}, "one"),
        ({"pruner": "median", "objectives": [{"macs": "min"}]}, "known only once"),
        ({"objectives": [{"val_accuracy": "up"}]}, "tune.objectives.val_accuracy"),
        ({"objectives": [{"macs": "min"}, {"macs": "min"}]}, "twice"),
        ({"constraints": {"max_flops": 10}}, "tune.constraints"),
        ({"constraints": {"max_macs": -1}}, "tune.constraints.max_macs"),
        ({"n_trials": 0}, "tune.n_trials"),
        ({"spaces": {}}, "Unknown config key `tune.spaces`"),
    ],
)
def test_a_bad_tune_block_names_its_key(tune, message):
    with pytest.raises(ValueError, match=message):
        config_from_dict(with_tune(**tune))


def test_the_baseline_lies_in_the_space_and_a_scalar_fills_every_stage():
    config = config_from_dict(
        with_tune(
            space={
                "model.backbone_args.kernel_size": {"choices": [3, 5], "stages": 2},
                "model.backbone_args.filters": {"low": 4, "high": 16, "step": 4, "stages": 2},
                "train.learning_rate": {"low": 0.001, "high": 0.01, "log": True},
            }
        )
    )
    parameters = config.tune.parameters()
    kernel = parameters["model.backbone_args.kernel_size"]
    assert kernel.baseline_values(3) == {
        "model.backbone_args.kernel_size[0]": 3,
        "model.backbone_args.kernel_size[1]": 3,
    }
    filters = parameters["model.backbone_args.filters"]
    assert filters.is_int and not parameters["train.learning_rate"].is_int
    assert filters.contains(8) and not filters.contains(10) and not filters.contains(20)
    assert not kernel.contains(True) and not kernel.contains(3.0)


def test_the_tune_block_round_trips_and_a_default_one_is_not_written(tmp_path):
    tune = {"space": {"model.dropout": {"low": 0.0, "high": 0.5}}, "n_trials": 7}
    config = config_from_dict(with_tune(**tune))
    save_config(config, tmp_path / "with.yaml")
    again = load_config(tmp_path / "with.yaml")
    assert again.tune == config.tune and again.tune.n_trials == 7
    save_config(config_from_dict(BASE), tmp_path / "without.yaml")
    assert "tune" not in yaml.safe_load((tmp_path / "without.yaml").read_text())
    assert TuneConfig().objective_directions() == [("val_accuracy", "maximize")]


def test_search_parameter_describes_the_space_in_its_errors():
    parameter = SearchParameter.from_spec("model.dropout", {"low": 0.0, "high": 0.5, "step": 0.1})
    assert parameter.contains(0.3) and not parameter.contains(0.35)
    with pytest.raises(ValueError, match=r"0.0..0.5, step 0.1"):
        parameter.check_baseline(0.25)


def brute_force_front(values, directions):
    """Non-dominated rows, by the definition, with every pair compared."""
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    costs = np.asarray(values, dtype=np.float64) * signs
    front = []
    for i, row in enumerate(costs):
        if not any(
            all(other <= row) and any(other < row) for j, other in enumerate(costs) if j != i
        ):
            front.append(i)
    return front


@pytest.mark.parametrize("directions", list(itertools.product(["maximize", "minimize"], repeat=2)))
def test_pareto_front_equals_the_pairwise_definition(directions):
    rng = np.random.default_rng(len(directions[0]) + 7 * len(directions[1]))
    values = rng.integers(0, 6, size=(40, 2)).astype(float)  # many ties
    assert pareto_front(values, directions) == brute_force_front(values, directions)
    three = rng.normal(size=(30, 3))
    three_directions = [*directions, "minimize"]
    assert pareto_front(three, three_directions) == brute_force_front(three, three_directions)
    assert pareto_front([[0.9, 5], [0.8, 2], [0.7, 3]], ["maximize", "minimize"]) == [0, 1]
    with pytest.raises(ValueError, match="directions"):
        pareto_front(values, ["up", "down"])


def test_the_pareto_plot_draws_the_front_and_the_baseline():
    x, y = [5.0, 2.0, 3.0, 1.0], [0.9, 0.8, 0.7, 0.5]
    figure = plot_pareto_front(x, y, labels=[0, 1, 2, 3], baseline=2)
    axes = figure.axes[0]
    (front_line,) = axes.get_lines()
    # Front by MACs: trial 3 (1, 0.5), trial 1 (2, 0.8), trial 0 (5, 0.9); trial 2 is dominated.
    np.testing.assert_array_equal(front_line.get_xdata(), [1.0, 2.0, 5.0])
    np.testing.assert_array_equal(front_line.get_ydata(), [0.5, 0.8, 0.9])
    assert sorted(text.get_text() for text in axes.texts) == ["0", "1", "3"]
    assert "baseline" in [text.get_text() for text in axes.get_legend().get_texts()]
