"""`kcnn tune` in one process: trials are kcnn runs, the objectives are the runs' own
numbers, constraints reject before training, the front's configs reproduce their trials,
and the same command continues the study."""

import csv
import shutil
import time

import numpy as np
import optuna
import pytest
import yaml
from optuna.trial import TrialState

from kcnn.cli import main
from kcnn.training import config_from_dict, load_config, read_history, resolve_run_dir, train
from kcnn.training.run_folder import check_run_dir
from kcnn.tuning import PruningCallback, open_storage, open_study, study_dir_for, suggest, tune

from .test_tune_config import brute_force_front

# filters [f0, f1] and kernel k on 8x8 digits: conv 1->f0 at 8x8, pool, conv f0->f1 at
# 4x4, global pooling, dense f1->10 (batch norm and pooling count no multiply-adds).
MAX_MACS = 60_000


def expected_macs(kernel, f0, f1):
    return 64 * kernel * kernel * f0 + 16 * kernel * kernel * f0 * f1 + 10 * f1


def search_config(tmp_path, **tune):
    return config_from_dict(
        {
            "name": "tiny_search",
            "task": "classification",
            "output_dir": str(tmp_path / "runs"),
            "data": {"name": "digits", "batch_size": 32, "validation_fraction": 0.2},
            "model": {
                "backbone_args": {"filters": [8, 16], "convs_per_level": 1, "kernel_size": 3},
                "dropout": 0.1,
            },
            "train": {"epochs": 2, "learning_rate": 0.003},
            "runtime": {"seed": 1, "deterministic": True},
            "export": {"formats": []},
            "tune": {
                "space": {
                    "model.backbone_args.kernel_size": {"choices": [3, 5]},
                    "model.backbone_args.filters": {
                        "low": 4,
                        "high": 16,
                        "step": 4,
                        "stages": 2,
                    },
                },
                "objectives": [{"val_accuracy": "max"}, {"macs": "min"}],
                "constraints": {"max_macs": MAX_MACS},
                "sampler": "random",
                "n_trials": 5,
                **tune,
            },
        }
    )


def read_rows(study_dir):
    with (study_dir / "trials.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("study")
    config = search_config(tmp_path)
    return config, tune(config)


def test_trials_are_kcnn_runs_scored_by_their_own_history_and_mac_count(finished_study):
    config, study_dir = finished_study
    assert study_dir == study_dir_for(config) == study_dir.parent / "tiny_search"
    rows = read_rows(study_dir)
    assert len(rows) == 5
    assert rows[0]["baseline"] == "True"
    baseline = rows[0]
    assert (
        baseline["model.backbone_args.kernel_size"],
        baseline["model.backbone_args.filters[0]"],
        baseline["model.backbone_args.filters[1]"],
    ) == ("3", "8", "16")
    complete = [row for row in rows if row["state"] == "complete"]
    rejected = [row for row in rows if row["state"] == "pruned"]
    assert complete, rows
    for row in rows:
        kernel = int(row["model.backbone_args.kernel_size"])
        f0, f1 = (int(row[f"model.backbone_args.filters[{i}]"]) for i in range(2))
        macs = expected_macs(kernel, f0, f1)
        folder = study_dir / "trials" / row["number"]
        if row in rejected:
            assert macs > MAX_MACS and "over the constraints" in row["note"]
            assert not folder.exists()  # rejected before training
            continue
        assert macs <= MAX_MACS
        assert float(row["macs"]) == macs
        history = read_history(folder)
        assert float(row["val_accuracy"]) == pytest.approx(history["val_accuracy"][-1])
        trial_config = load_config(folder / "config.yaml")
        assert trial_config.model.backbone_args["filters"] == [f0, f1]
        assert trial_config.model.backbone_args["kernel_size"] == kernel
        # Only the light files stay: no model, exports or checkpoint.
        assert (folder / "metrics.json").is_file()
        assert not (folder / "model.keras").exists() and not (folder / "backup").exists()


def test_the_front_is_written_as_configs_that_reproduce_their_trials(finished_study, tmp_path):
    config, study_dir = finished_study
    complete = [row for row in read_rows(study_dir) if row["state"] == "complete"]
    values = [[float(row["val_accuracy"]), float(row["macs"])] for row in complete]
    front = {complete[i]["number"] for i in brute_force_front(values, ["maximize", "minimize"])}
    written = {path.stem.removeprefix("trial_") for path in (study_dir / "best").glob("*.yaml")}
    assert written == front
    assert (study_dir / "pareto.png").stat().st_size > 10_000
    number = max(front, key=int)
    best = load_config(study_dir / "best" / f"trial_{number}.yaml")
    assert best.tune == type(best.tune)()  # a plain experiment, no tune block
    assert best.export.formats == config.export.formats
    row = next(row for row in complete if row["number"] == number)
    run_dir = train(best, run_dir=tmp_path / "again", verbose=0)
    assert read_history(run_dir)["val_accuracy"][-1] == pytest.approx(
        float(row["val_accuracy"]), abs=1e-6
    )


def test_the_same_command_continues_the_study_and_never_trains_into_it(finished_study):
    config, study_dir = finished_study
    assert tune(config) == study_dir  # all 5 trials finished: nothing more runs
    assert len(read_rows(study_dir)) == 5
    more = config_from_dict(
        {**config.to_dict(), "tune": {**config.to_dict()["tune"], "n_trials": 6}}
    )
    tune(more)
    rows = read_rows(study_dir)
    assert len(rows) == 6 and sum(row["baseline"] == "True" for row in rows) == 1
    # A run of the same name goes elsewhere; training into the study folder is refused.
    assert resolve_run_dir(config) != study_dir
    with pytest.raises(ValueError, match="architecture search"):
        check_run_dir(study_dir, config)
    # A study of another search space does not reuse the folder.
    other = config_from_dict(
        {**config.to_dict(), "tune": {**config.to_dict()["tune"], "sampler": "tpe"}}
    )
    assert study_dir_for(other) == study_dir.with_name("tiny_search-2")
    with pytest.raises(ValueError, match="another experiment or search space"):
        study_dir_for(other, run_dir=study_dir)


def test_tune_refuses_an_empty_space_and_a_storage_that_is_no_url(tmp_path):
    config = search_config(tmp_path)
    empty = config_from_dict({**config.to_dict(), "tune": {"n_trials": 2}})
    with pytest.raises(ValueError, match="`tune.space` is empty"):
        tune(empty)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    with pytest.raises(ValueError, match="tune.storage"):
        open_storage(type(config.tune)(storage="study.db"), tmp_path)


class FakeTrial:
    def __init__(self, prune_at):
        self.reported, self.prune_at = [], prune_at

    def report(self, value, step):
        self.reported.append((step, value))

    def should_prune(self):
        return len(self.reported) > self.prune_at


def test_the_pruning_callback_reports_each_epoch_and_stops_when_told():
    trial = FakeTrial(prune_at=1)
    callback = PruningCallback(trial, "val_accuracy")
    callback.on_epoch_end(0, {"val_accuracy": 0.5, "loss": 1.0})
    with pytest.raises(optuna.TrialPruned, match="after epoch 2: val_accuracy=0.25"):
        callback.on_epoch_end(1, {"val_accuracy": 0.25})
    assert trial.reported == [(0, 0.5), (1, 0.25)]
    with pytest.raises(ValueError, match="`val_iou` is not in the training history"):
        PruningCallback(FakeTrial(9), "val_iou").on_epoch_end(0, {"val_accuracy": 0.5})


def test_a_median_pruner_prunes_a_trial_that_falls_behind(tmp_path):
    config = search_config(
        tmp_path,
        objectives=[{"val_loss": "min"}],
        pruner="median",
        constraints={},
        n_trials=5,
        space={"train.learning_rate": {"low": 1e-6, "high": 0.003, "log": True}},
    )
    config.train.learning_rate = 0.003
    study_dir = tune(config)
    study = optuna.load_study(
        study_name="tiny_search", storage=open_storage(config.tune, study_dir)
    )
    states = [trial.state for trial in study.trials]
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == 5
    assert states.count(TrialState.PRUNED) >= 1, states
    for trial in study.trials:
        history = read_history(study_dir / "trials" / str(trial.number))
        # Optuna saw the very values of the run's history, one per epoch.
        np.testing.assert_allclose(
            [trial.intermediate_values[step] for step in sorted(trial.intermediate_values)],
            history["val_loss"],
        )
    shutil.rmtree(study_dir)


def test_tflite_objectives_are_the_trials_own_exported_file(tmp_path):
    config = search_config(
        tmp_path,
        objectives=[{"val_accuracy": "max"}, {"tflite_bytes": "min"}],
        constraints={},
        n_trials=1,
        keep_models=True,
    )
    study_dir = tune(config)
    (row,) = read_rows(study_dir)
    folder = study_dir / "trials" / "0"
    assert float(row["tflite_bytes"]) == (folder / "model.tflite").stat().st_size
    assert (folder / "model.keras").is_file()  # kept: keep_models
    # Trials export only the file an objective needs; the written config keeps the user's.
    assert load_config(folder / "config.yaml").export.formats == ["tflite"]
    assert load_config(study_dir / "best" / "trial_0.yaml").export.formats == []


def test_kcnn_tune_reports_a_bad_search_in_one_line(tmp_path, capsys):
    values = search_config(tmp_path).to_dict()
    values["tune"]["space"] = {"model.backbone_args.kernel_size": {"choices": [5, 7]}}
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    assert main(["tune", str(path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("kcnn tune: error:") and "tune.space.model.backbone_args" in error
    assert len(error.splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_an_objective_no_run_measures_and_bad_sampler_arguments_are_named(tmp_path):
    unknown = search_config(tmp_path, objectives=[{"val_acc": "max"}], constraints={})
    with pytest.raises(ValueError, match=r"`val_acc` is neither .*val_accuracy"):
        tune(unknown)
    bad = search_config(tmp_path / "other", sampler="tpe", sampler_args={"startup": 3})
    with pytest.raises(ValueError, match=r"`tune.sampler_args` \{'startup': 3\}"):
        tune(bad)
    assert not (tmp_path / "other").exists()  # refused before any folder was made


def test_a_trial_whose_heartbeat_stopped_elsewhere_is_failed_and_retried_once(tmp_path):
    config = search_config(tmp_path, heartbeat_seconds=1)
    study_dir = study_dir_for(config)
    study = open_study(config, study_dir)
    trial = study.ask()  # the baseline, now RUNNING
    suggest(trial, config.tune.parameters())
    # Its process runs on another machine: only the heartbeat can tell that it died.
    trial.set_user_attr("host", "another-machine")
    trial.set_user_attr("pid", 1)
    study._storage.record_heartbeat(trial._trial_id)
    time.sleep(3.5)  # past the grace period (2 s; SQLite keeps whole seconds)
    optuna.storages.fail_stale_trials(study)
    trials = study.get_trials()
    assert trials[trial.number].state == TrialState.FAIL
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == trial.number]
    assert retry.state == TrialState.WAITING and retry.user_attrs["baseline"] is True
    retried = study.ask()
    assert suggest(retried, config.tune.parameters()) == {
        "model.backbone_args.kernel_size": 3,
        "model.backbone_args.filters": [8, 16],
    }
    # A retry that dies is not retried again.
    retried.set_user_attr("host", "another-machine")
    study._storage.record_heartbeat(retried._trial_id)
    time.sleep(3.5)
    optuna.storages.fail_stale_trials(study)
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL, TrialState.FAIL]
