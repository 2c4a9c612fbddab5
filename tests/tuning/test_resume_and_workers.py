"""`kcnn tune` in real processes: a `kill -9` in the middle of a trial, then the same
command, continues the study (the killed trial failed, retried once from its checkpoint);
two workers share one study on Optuna's journal file without running a trial twice."""

import csv
import re
import signal
import time

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from kcnn.training.checkpoint import latest_checkpoint

from ..training.test_fault_tolerance import kcnn

pytestmark = pytest.mark.slow

CONFIG = {
    "name": "killed_search",
    "task": "classification",
    "data": {"name": "digits", "batch_size": 16, "validation_fraction": 0.1},
    "model": {"backbone_args": {"filters": [8, 16], "convs_per_level": 1}},
    "train": {"epochs": 3, "learning_rate": 0.003},
    "runtime": {"seed": 2, "checkpoint_every_steps": 10},
    "export": {"formats": []},
    "tune": {
        "space": {"model.backbone_args.filters": {"choices": [8, 16], "stages": 2}},
        "objectives": [{"val_accuracy": "max"}, {"macs": "min"}],
        "sampler": "random",
        "n_trials": 3,
        "heartbeat_seconds": 1,
    },
}


def write_config(tmp_path, values):
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return path


def test_sigkill_mid_trial_then_the_same_command_finishes_the_study(tmp_path):
    config = write_config(tmp_path, CONFIG)
    study_dir = tmp_path / "study"
    victim = kcnn("tune", str(config), "--run-dir", str(study_dir))
    backup = study_dir / "trials" / "1" / "backup"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        record = latest_checkpoint(backup) if backup.exists() else None
        if record and record.get("epoch", 0) >= 1:
            break
        assert victim.poll() is None, victim.stdout.read()
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_step = latest_checkpoint(backup)["step"]

    resumed = kcnn("tune", str(config), "--run-dir", str(study_dir))
    output = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, output[-3000:]
    storage = optuna.storages.RDBStorage(f"sqlite:///{study_dir / 'study.db'}")
    study = optuna.load_study(study_name="killed_search", storage=storage)
    killed = study.trials[1]
    assert killed.state == TrialState.FAIL  # not left RUNNING for ever
    retries = [t for t in study.trials if t.user_attrs.get("retry_of") == 1]
    assert len(retries) == 1 and retries[0].params == killed.params
    retry = retries[0]
    assert retry.state == TrialState.COMPLETE
    # The retry took the killed run's folder over and resumed from its checkpoint.
    assert f"trial {retry.number} retries trial 1" in output
    assert f"resuming from step {killed_step}" in output
    assert not (study_dir / "trials" / "1").exists()
    history = (study_dir / "trials" / str(retry.number) / "history.csv").read_text()
    assert [line.split(",")[0] for line in history.splitlines()[1:]] == ["0", "1", "2"]
    finished = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(finished) == 3
    with (study_dir / "trials.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["state"] for row in rows].count("fail") == 1
    assert [row["retry_of"] for row in rows].count("1") == 1


def test_two_workers_share_one_journal_study(tmp_path):
    journal = tmp_path / "journal.log"
    values = {
        **CONFIG,
        "name": "shared_search",
        "train": {"epochs": 1, "learning_rate": 0.003, "steps_per_epoch": 5},
        "tune": {
            **CONFIG["tune"],
            "space": {
                "model.backbone_args.filters": {"choices": [4, 8, 12, 16], "stages": 2},
                "train.learning_rate": {"low": 0.001, "high": 0.01, "log": True},
            },
            "storage": f"journal:{journal}",
            "n_trials": 6,
        },
    }
    config = write_config(tmp_path, values)
    study_dir = tmp_path / "study"
    process = kcnn("tune", str(config), "--run-dir", str(study_dir), "--workers", "2")
    output = process.communicate(timeout=900)[0]
    assert process.returncode == 0, output[-3000:]
    study = optuna.load_study(
        study_name="shared_search",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(journal))
        ),
    )
    trials = study.trials
    assert all(t.state == TrialState.COMPLETE for t in trials)
    # Each worker may finish the trial it holds when the count is reached.
    assert 6 <= len(trials) <= 7
    workers = [t.user_attrs["worker"] for t in trials]
    assert set(workers) == {0, 1}
    # Every trial ran once, in one worker: the study's count is the sum of the workers'.
    done = [
        re.findall(rf"\[worker {index}\] \[kcnn\] trial (\d+) done", output) for index in (0, 1)
    ]
    assert sorted(int(n) for n in done[0] + done[1]) == [t.number for t in trials]
    assert [len(numbers) for numbers in done] == [workers.count(0), workers.count(1)]
    folders = sorted(int(p.name) for p in (study_dir / "trials").iterdir())
    assert folders == [t.number for t in trials]
    runs = [output.count(f"run folder: {study_dir / 'trials' / str(n)}\n") for n in folders]
    assert runs == [1] * len(folders)
    with (study_dir / "trials.csv").open(newline="") as handle:
        assert len(list(csv.DictReader(handle))) == len(trials)
    assert (study_dir / "pareto.png").is_file()
