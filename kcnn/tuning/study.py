"""`kcnn tune`: an Optuna study whose trials are ordinary kcnn trainings.

    runs/<name>/
      tune.yaml            the experiment and its `tune` block (the study's identity)
      study.db             the Optuna study (SQLite; another `tune.storage` keeps it elsewhere)
      trials/<n>/          trial n: config.yaml, metrics.json, history.csv, curves.png
                           (its model and exports only with `tune.keep_models: true`)
      trials.csv           every trial: state, parameters, objectives, MACs, test metrics
      pareto.png           each trial a point, the Pareto front drawn, the baseline starred
      best/trial_<n>.yaml  the configs on the front, which `kcnn train` reproduces

A trial is `kcnn.training.train` of the config with the trial's values put in at the
searched keys (`tune.space`): the task contract, the data, the trainer and its checkpoints
are the same as `kcnn train`'s. Before it trains, the candidate is built and counted
(`kcnn.analysis.analyze`): one over `tune.constraints` is pruned at once, without training.
With a pruner, a Keras callback reports the objective's per-epoch value to Optuna and stops
an unpromising trial. The same command run again continues the study: `n_trials` counts the
finished (complete or pruned) trials over every run and worker, and a trial killed midway is
failed and retried (see `kcnn.tuning.storage`).
"""

import json
import os
import shutil
import time
from pathlib import Path

import keras
import optuna
import yaml
from optuna.trial import TrialState

from kcnn._files import atomic_path
from kcnn.analysis import analyze
from kcnn.training import build_model, load_data, read_history, train
from kcnn.training.checkpoint import TrainingDivergedError, TrainingInterruptedError
from kcnn.training.messages import log
from kcnn.training.run_folder import (
    BACKUP,
    EXPERIMENT_BLOCKS,
    FINISHED_MARKER,
    MODEL_FILE,
    STUDY_MARKER,
)
from kcnn.training.tune_config import EXPORT_OBJECTIVES, MODEL_OBJECTIVES, config_value
from kcnn.tuning.results import write_results
from kcnn.tuning.space import suggest, trial_config
from kcnn.tuning.storage import fail_dead_local_trials, open_storage, retry_once, trial_owner

TRIALS_FOLDER = "trials"
# Set by `launch_tune_workers` for each worker process it starts.
WORKER_VARIABLE = "KCNN_TUNE_WORKER"
# A trial keeps these unless `tune.keep_models`: the rest is the model, its exports and the
# checkpoint, megabytes per trial.
_BULKY = (MODEL_FILE, "saved_model", BACKUP)
# The entries of a run's metrics.json that are not test metrics.
_RUN_FACTS = ("epochs", "params", "train_seconds", "total_seconds")


def study_dir_for(config, run_dir=None):
    """The study folder: `run_dir` when given, else the first of `runs/<name>`,
    `runs/<name>-2`, ... that is free or holds this study (same experiment and `tune`
    block), so the same command finds its study again.

    Raises:
        ValueError: if `run_dir` holds something else than this study.
    """
    if run_dir is not None:
        run_dir = Path(run_dir)
        problem = _foreign(run_dir, config)
        if problem:
            raise ValueError(f"`--run-dir` {run_dir} {problem}: give another folder.")
        return run_dir
    base = Path(config.output_dir) / config.name
    candidate, index = base, 1
    while candidate.exists() and _foreign(candidate, config):
        index += 1
        candidate = base.with_name(f"{base.name}-{index}")
    return candidate


def _foreign(folder, config):
    """Why `folder` cannot hold `config`'s study ("" when it can)."""
    if not folder.exists():
        return ""
    if not folder.is_dir():
        return "is a file"
    marker = folder / STUDY_MARKER
    if not marker.is_file():
        return "is not empty and holds no study" if any(folder.iterdir()) else ""
    saved = yaml.safe_load(marker.read_text(encoding="utf-8")) or {}
    current = _identity(config)
    if {key: saved.get(key) for key in current} != current:
        return f"holds the study of another experiment or search space ({marker})"
    return ""


def _identity(config):
    """What makes two `kcnn tune` commands the same study: the experiment and the search
    (not the budget: `n_trials` and `timeout` may grow between runs)."""
    values = config.to_dict()
    tune = {
        key: values["tune"][key]
        for key in ("space", "objectives", "constraints", "sampler", "pruner", "baseline")
    }
    return {
        **{key: values[key] for key in ("name", *EXPERIMENT_BLOCKS)},
        "tune": tune,
    }


class PruningCallback(keras.callbacks.Callback):
    """Reports `monitor` to an Optuna trial at each epoch end and raises
    `optuna.TrialPruned` when the pruner says the trial will not catch up.

    Args:
        trial: an `optuna.Trial`.
        monitor: str. A key of the epoch logs, e.g. `"val_accuracy"`.

    Raises:
        ValueError: at the first epoch end if the logs have no `monitor`.
    """

    def __init__(self, trial, monitor):
        super().__init__()
        self.trial = trial
        self.monitor = monitor

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise ValueError(
                f"`tune.objectives`: `{self.monitor}` is not in the training history; it "
                f"logs {sorted(logs)}"
            )
        value = float(logs[self.monitor])
        self.trial.report(value, step=epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch + 1}: {self.monitor}={value:.4g}")


class _Objective:
    """Runs one trial: build and count the candidate, check the constraints, train it,
    read its objectives."""

    def __init__(self, config, study_dir):
        self.config = config
        self.study_dir = Path(study_dir)
        self.parameters = config.tune.parameters()
        self.worker = int(os.environ.get(WORKER_VARIABLE, "0"))
        self._input_facts = {}

    def __call__(self, trial):
        keras.backend.clear_session()
        for key, value in {**trial_owner(), "worker": self.worker}.items():
            trial.set_user_attr(key, value)
        started = time.time()
        values = suggest(trial, self.parameters)
        config = trial_config(self.config, values, trial.number)
        macs, params = self._count(config)
        trial.set_user_attr("macs", macs)
        trial.set_user_attr("params", params)
        self._check_constraints(trial, macs, params)
        run_dir = self._run_dir(trial)
        names = [name for name, _ in self.config.tune.objective_directions()]
        callbacks = []
        if self.config.tune.pruner != "none":
            callbacks.append(PruningCallback(trial, names[0]))
        log(f"trial {trial.number}: {_describe(values)}")
        interrupted = False
        try:
            train(config, run_dir=run_dir, verbose=2, callbacks=callbacks)
        except optuna.TrialPruned as pruned:
            trial.set_user_attr("note", str(pruned))
            raise
        except TrainingInterruptedError:
            # Ctrl-C: the trial fails; its retry resumes from the checkpoint kept here.
            interrupted = True
            retry_once(trial.study, trial.study.get_trials(deepcopy=False)[trial.number])
            raise
        finally:
            trial.set_user_attr("seconds", round(time.time() - started, 1))
            if not (self.config.tune.keep_models or interrupted):
                _remove_bulky(run_dir)
        trial.set_user_attr("test_metrics", _test_metrics(run_dir))
        scores = _scores(run_dir, names, {"macs": macs, "params": params})
        log(
            f"trial {trial.number} done in {time.time() - started:.0f} s: "
            + ", ".join(f"{n}={v:.4g}" for n, v in zip(names, scores, strict=True))
        )
        return scores

    def _count(self, config):
        """`(MACs, parameters)` of the candidate for one input example."""
        facts_key = yaml.safe_dump(config.to_dict()["data"], sort_keys=True)
        if facts_key not in self._input_facts:
            dataset = load_data(config.data, seed=config.runtime.seed, task=config.task)
            self._input_facts[facts_key] = (dataset.x_train.shape[1:], len(dataset.class_names))
        input_shape, num_classes = self._input_facts[facts_key]
        model = build_model(config, input_shape, num_classes)
        analysis = analyze(model)
        keras.backend.clear_session()
        return int(analysis.total_macs), int(analysis.total_params)

    def _check_constraints(self, trial, macs, params):
        limits = self.config.tune.constraints
        broken = [
            f"{name} {value:,} > {limits[limit]:,.0f}"
            for name, value, limit in (("MACs", macs, "max_macs"), ("params", params, "max_params"))
            if limit in limits and value > limits[limit]
        ]
        if broken:
            note = "over the constraints, not trained: " + ", ".join(broken)
            trial.set_user_attr("note", note)
            log(f"trial {trial.number}: {note}")
            raise optuna.TrialPruned(note)

    def _run_dir(self, trial):
        """`trials/<n>`; a retry of a killed trial takes over its folder, so its training
        resumes from the killed run's last checkpoint."""
        run_dir = self.study_dir / TRIALS_FOLDER / str(trial.number)
        retry_of = trial.user_attrs.get("retry_of")
        if retry_of is not None:
            killed = self.study_dir / TRIALS_FOLDER / str(retry_of)
            if (killed / BACKUP).is_dir() and not run_dir.exists():
                os.replace(killed, run_dir)
                log(f"trial {trial.number} retries trial {retry_of}, from its checkpoint")
        return run_dir


def _test_metrics(run_dir):
    """The test metrics of a finished trial's `metrics.json`, each named `test_...`."""
    metrics = _read_json(Path(run_dir) / FINISHED_MARKER)
    return {
        key if key.startswith("test_") else f"test_{key}": value
        for key, value in metrics.items()
        if key not in _RUN_FACTS and isinstance(value, int | float)
    }


def _scores(run_dir, names, counts):
    """The value of each objective in `names` for a finished trial: its `counts` (MACs,
    parameters), its TFLite file's, or its history's last epoch.

    Raises:
        ValueError: for a name none of them has.
    """
    measured = {**counts, **_export_objectives(run_dir)}
    history = {key: values[-1] for key, values in read_history(run_dir).items()}
    scores = []
    for name in names:
        if name in measured:
            scores.append(float(measured[name]))
        elif name in history:
            scores.append(float(history[name]))
        else:
            raise ValueError(
                f"`tune.objectives`: `{name}` is neither {list(MODEL_OBJECTIVES)}, "
                f"{list(EXPORT_OBJECTIVES)} nor a metric of the training history "
                f"({sorted(history)})"
            )
    return scores


def _describe(values):
    return ", ".join(f"{key.split('.')[-1]}={value}" for key, value in values.items())


def _read_json(path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _export_objectives(run_dir):
    report_path = Path(run_dir) / "export_report.json"
    if not report_path.is_file():
        return {}
    entry = _read_json(report_path).get("tflite", {}).get("none", {})
    measured = {}
    if "latency_ms" in entry:
        measured["tflite_latency_ms"] = entry["latency_ms"]
    if "file_bytes" in entry:
        measured["tflite_bytes"] = entry["file_bytes"]
    return measured


def _remove_bulky(run_dir):
    """Removes a trial's model, exports and checkpoint (`tune.keep_models: false`)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    for path in [*(run_dir / name for name in _BULKY), *run_dir.glob("*.tflite")]:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()


def _sampler(tune, seed):
    """The Optuna sampler `tune.sampler` names, with `tune.sampler_args`."""
    arguments = {"seed": seed, **tune.sampler_args}
    if tune.sampler == "tpe":
        # The constant liar keeps parallel workers from suggesting the same candidate.
        arguments.setdefault("constant_liar", True)
    sampler_class = {
        "tpe": optuna.samplers.TPESampler,
        "nsga2": optuna.samplers.NSGAIISampler,
        "random": optuna.samplers.RandomSampler,
    }[tune.sampler]
    try:
        return sampler_class(**arguments)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"`tune.sampler_args` {tune.sampler_args} do not fit {sampler_class.__name__}: {error}"
        ) from None


def _pruner(tune, epochs):
    if tune.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if tune.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)
    if tune.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1)
    return optuna.pruners.NopPruner()


def open_study(config, study_dir):
    """Creates or loads the study of `config` in `study_dir`: writes `tune.yaml`, fails and
    retries the trials of this machine whose process died, and enqueues the baseline (the
    config as written) once. Returns the `optuna.Study`."""
    tune = config.tune
    if not tune.space:
        raise ValueError("`tune.space` is empty: name at least one config key to search.")
    if tune.n_trials is None and tune.timeout is None:
        raise ValueError("`tune.n_trials` and `tune.timeout` are both null: set one.")
    sampler = _sampler(tune, None)  # a bad `sampler_args` fails before any folder exists
    study_dir = Path(study_dir)
    study_dir.mkdir(parents=True, exist_ok=True)
    marker = study_dir / STUDY_MARKER
    if not marker.exists():
        with atomic_path(marker) as temporary:
            temporary.write_text(yaml.safe_dump(_identity(config), sort_keys=False))
    storage = open_storage(tune, study_dir)
    worker = int(os.environ.get(WORKER_VARIABLE, "0"))
    study = optuna.create_study(
        study_name=config.name,
        storage=storage,
        directions=[direction for _, direction in tune.objective_directions()],
        load_if_exists=True,
        sampler=sampler,
        pruner=_pruner(tune, config.train.epochs),
    )
    # A fresh seed per worker and restart: the same seed would suggest the same candidates.
    seed = config.runtime.seed + 1000 * worker + len(study.trials)
    study.sampler = _sampler(tune, seed)
    fail_dead_local_trials(study, log=log)
    if tune.baseline and not any(t.user_attrs.get("baseline") for t in study.trials):
        baseline = {}
        values = config.to_dict()
        for key, parameter in tune.parameters().items():
            baseline.update(parameter.baseline_values(config_value(values, key)))
        study.enqueue_trial(baseline, user_attrs={"baseline": True})
    return study


def finished_trials(study):
    """The trials `n_trials` counts: complete or pruned."""
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


def run_trials(study, config, study_dir):
    """Runs trials of `study` in this process until `n_trials` are finished (over every
    worker) or `timeout` seconds pass. Returns the number of trials this process ran."""
    tune = config.tune
    before = {t.number for t in study.trials}
    if tune.n_trials is not None and len(finished_trials(study)) >= tune.n_trials:
        log(f"the study has its {tune.n_trials} trials already")
        return 0
    callbacks = []
    if tune.n_trials is not None:
        callbacks.append(
            optuna.study.MaxTrialsCallback(
                tune.n_trials, states=(TrialState.COMPLETE, TrialState.PRUNED)
            )
        )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(
        _Objective(config, study_dir),
        timeout=tune.timeout,
        callbacks=callbacks,
        catch=(TrainingDivergedError,),
        gc_after_trial=True,
    )
    return len({t.number for t in study.trials} - before)


def tune(config, run_dir=None):
    """Runs the architecture search of `config`'s `tune` block in this process, then
    writes `trials.csv`, `pareto.png` and the front's configs (see the module docstring).

    Args:
        config: an `ExperimentConfig` whose `tune.space` is not empty.
        run_dir: the study folder. Defaults to `study_dir_for(config)` (`runs/<name>`).

    Returns:
        The study folder (`pathlib.Path`).

    Raises:
        ValueError: for an empty search space, a study folder that holds something else,
            or an objective no trial can measure.
    """
    study_dir = study_dir_for(config, run_dir)
    log(f"study folder: {study_dir}")
    study = open_study(config, study_dir)
    run_trials(study, config, study_dir)
    if WORKER_VARIABLE not in os.environ:  # the launching process writes the results
        write_results(study, config, study_dir)
    return study_dir
