"""What a study leaves for a person: `trials.csv`, `pareto.png` and the front's configs."""

import csv
from pathlib import Path

from optuna.trial import TrialState

from kcnn._files import atomic_path
from kcnn.training import save_config
from kcnn.training.messages import log
from kcnn.tuning.space import trial_config, values_of_params
from kcnn.viz import pareto_front, plot_pareto_front, save_figure

BEST_FOLDER = "best"


def write_results(study, config, study_dir):
    """Writes `trials.csv`, `pareto.png` and `best/trial_<n>.yaml` for every trial on the
    Pareto front of the study's objectives (the best trial for one objective), and logs
    the front. Returns the front's trial numbers."""
    study_dir = Path(study_dir)
    trials = study.get_trials(deepcopy=False)
    parameters = config.tune.parameters()
    directions = config.tune.objective_directions()
    _write_trials_csv(trials, parameters, directions, study_dir / "trials.csv")
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        log("no trial has completed yet: trials.csv written, no front")
        return []
    front = [
        complete[i] for i in pareto_front([t.values for t in complete], [d for _, d in directions])
    ]
    if len(directions) == 1:
        best = min(front, key=lambda t: t.number)
        front = [best]
    with atomic_path(study_dir / BEST_FOLDER) as temporary:
        temporary.mkdir()
        for trial in front:
            values = values_of_params(trial.params, parameters)
            save_config(
                trial_config(config, values, trial.number, for_training=False),
                temporary / f"trial_{trial.number}.yaml",
            )
    figure = _pareto_figure(complete, directions, config.name)
    save_figure(figure, study_dir / "pareto.png")
    names = [name for name, _ in directions]
    lines = [
        f"  trial {t.number:>3}: "
        + ", ".join(f"{n}={v:.4g}" for n, v in zip(names, t.values, strict=True))
        + ("" if "macs" in names else f", MACs={t.user_attrs.get('macs', 0):,}")
        + (" (baseline)" if t.user_attrs.get("baseline") else "")
        for t in sorted(front, key=lambda t: t.number)
    ]
    finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    log(
        f"{finished} trials finished ({len(complete)} complete); the front "
        f"({study_dir / BEST_FOLDER}/trial_<n>.yaml):\n" + "\n".join(lines)
    )
    return [t.number for t in front]


def _pareto_figure(complete, directions, title):
    """The first objective against the second, or against MACs for one objective."""
    (y_name, y_direction), *others = directions
    y = [t.values[0] for t in complete]
    if others:
        x_name, x_direction = others[0]
        x = [t.values[1] for t in complete]
    else:
        x_name, x_direction = "MACs", "minimize"
        x = [t.user_attrs.get("macs", 0) for t in complete]
    baseline = next((i for i, t in enumerate(complete) if t.user_attrs.get("baseline")), None)
    return plot_pareto_front(
        x,
        y,
        x_direction=x_direction,
        y_direction=y_direction,
        x_label="MACs" if x_name == "macs" else x_name,
        y_label=y_name,
        labels=[t.number for t in complete],
        baseline=baseline,
        title=f"{title}: {len(complete)} trials",
    )


def _write_trials_csv(trials, parameters, directions, path):
    param_names = [name for parameter in parameters.values() for name in parameter.names()]
    objective_names = [name for name, _ in directions]
    test_keys = sorted({key for t in trials for key in t.user_attrs.get("test_metrics", {})})
    counts = [name for name in ("macs", "params") if name not in objective_names]
    header = [
        "number",
        "state",
        *objective_names,
        *counts,
        *test_keys,
        *param_names,
        "seconds",
        "baseline",
        "retry_of",
        "worker",
        "note",
    ]
    with atomic_path(path) as temporary, temporary.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for trial in trials:
            attrs = trial.user_attrs
            values = trial.values if trial.state == TrialState.COMPLETE else None
            writer.writerow(
                [
                    trial.number,
                    trial.state.name.lower(),
                    *(values or [""] * len(objective_names)),
                    *(attrs.get(name, "") for name in counts),
                    *(attrs.get("test_metrics", {}).get(key, "") for key in test_keys),
                    *(trial.params.get(name, "") for name in param_names),
                    attrs.get("seconds", ""),
                    bool(attrs.get("baseline", False)),
                    attrs.get("retry_of", ""),
                    attrs.get("worker", ""),
                    attrs.get("note", ""),
                ]
            )
