"""The `tune` block of an experiment: what `kcnn tune` searches, for what, and where it keeps
the study (see `kcnn.tuning`).

    tune:
      space:                                   # dotted config keys, as `--override` takes
        model.backbone_args.blocks: {choices: [plain, separable, residual], stages: 3}
        model.backbone_args.depths: {low: 1, high: 3, stages: 3}
        model.backbone_args.width_multiplier: {choices: [0.5, 0.75, 1.0, 1.5]}
        train.learning_rate: {low: 0.001, high: 0.01, log: true}
      objectives: [val_accuracy: max, macs: min]
      constraints: {max_macs: 7500000}
      sampler: tpe
      n_trials: 20

A search parameter is `{choices: [...]}` (categorical), or `{low, high}` with optional
`log: true` or `step` (integers when `low`, `high` and `step` are ints, else floats); with
`stages: N` it is a list of N values chosen independently, one per backbone stage. Every
searched key must have a value in the config itself: that config is the baseline, trial 0.
"""

import dataclasses
import numbers

TUNE_SAMPLERS = ("tpe", "nsga2", "random")
TUNE_PRUNERS = ("none", "median", "hyperband", "successive_halving")
TUNE_CONSTRAINTS = ("max_macs", "max_params")
# Objectives measured outside the training history (which gives `val_accuracy`, `loss` ...).
MODEL_OBJECTIVES = ("macs", "params")
EXPORT_OBJECTIVES = ("tflite_latency_ms", "tflite_bytes")
DIRECTIONS = {"max": "maximize", "maximize": "maximize", "min": "minimize", "minimize": "minimize"}
# The config blocks a search may change (`runtime`, `export`, `name` belong to the study).
SEARCHABLE_BLOCKS = ("data", "model", "train")
_PARAMETER_KEYS = {"choices", "low", "high", "log", "step", "stages"}


@dataclasses.dataclass
class TuneConfig:
    """The `tune` block: the search space, the objectives and the study's engine.

    `space` maps dotted config keys to search parameters (see the module docstring).
    `objectives` is a list of one-key mappings `{name: max | min}`: a metric of the
    training history's last epoch (`val_accuracy`, `val_loss`, ...), `macs` or `params`
    (`kcnn.analysis`), `tflite_latency_ms` or `tflite_bytes` (the fp32 TFLite file of
    `kcnn export`). `constraints` (`max_macs`, `max_params`) reject a candidate before it
    trains. `sampler`: "tpe" (Optuna's TPE, multi-objective too), "nsga2" or "random";
    `pruner` (one objective only, a per-epoch metric): "none", "median", "hyperband" or
    "successive_halving" (ASHA). The study stops after `n_trials` finished trials (complete
    or pruned, over every worker and restart) or `timeout` seconds of this process.
    `storage`: None (a SQLite file `study.db` in the study folder), an SQLAlchemy URL
    (`sqlite:///...`, `postgresql://...`, `mysql://...`), or `journal:PATH` (Optuna's
    journal file). A trial's heartbeat is written every `heartbeat_seconds` (database
    storages): a trial whose process died is failed after twice that and run again.
    `keep_models` keeps each trial's model and exports (default: config, metrics and
    history only). `baseline` enqueues the config as it is written as the first trial.
    """

    space: dict = dataclasses.field(default_factory=dict)
    objectives: list = dataclasses.field(default_factory=lambda: [{"val_accuracy": "max"}])
    constraints: dict = dataclasses.field(default_factory=dict)
    sampler: str = "tpe"
    sampler_args: dict = dataclasses.field(default_factory=dict)
    pruner: str = "none"
    n_trials: int | None = 20
    timeout: float | None = None
    storage: str | None = None
    heartbeat_seconds: int = 60
    keep_models: bool = False
    baseline: bool = True

    def objective_directions(self):
        """`[(name, "maximize" | "minimize")]`, in the order of `objectives`."""
        return [
            (name, DIRECTIONS[direction])
            for item in self.objectives
            for name, direction in item.items()
        ]

    def parameters(self):
        """`{key: SearchParameter}` of `space`."""
        return {key: SearchParameter.from_spec(key, spec) for key, spec in self.space.items()}

    def validate(self, experiment):
        """Checks the block against its experiment (`ExperimentConfig`); raises ValueError
        naming the key."""
        _check_choice("tune.sampler", self.sampler, TUNE_SAMPLERS)
        _check_choice("tune.pruner", self.pruner, TUNE_PRUNERS)
        if self.n_trials is not None and self.n_trials < 1:
            raise ValueError(f"`tune.n_trials` must be positive. Received: {self.n_trials!r}")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError(f"`tune.timeout` must be positive. Received: {self.timeout!r}")
        if self.heartbeat_seconds < 1:
            raise ValueError(
                f"`tune.heartbeat_seconds` must be >= 1. Received: {self.heartbeat_seconds!r}"
            )
        for key, value in self.constraints.items():
            _check_choice("tune.constraints", key, TUNE_CONSTRAINTS)
            if not isinstance(value, numbers.Real) or isinstance(value, bool) or value <= 0:
                raise ValueError(
                    f"`tune.constraints.{key}` must be a positive number. Received: {value!r}"
                )
        self._validate_objectives()
        if self.space:
            parameters = self.parameters()
            values = experiment.to_dict()
            for key, parameter in parameters.items():
                parameter.check_baseline(config_value(values, key))
        return self

    def _validate_objectives(self):
        if not isinstance(self.objectives, list) or not self.objectives:
            raise ValueError(
                "`tune.objectives` must be a non-empty list such as "
                f"[val_accuracy: max, macs: min]. Received: {self.objectives!r}"
            )
        names = []
        for item in self.objectives:
            if not isinstance(item, dict) or len(item) != 1:
                raise ValueError(
                    "Each of `tune.objectives` must be one `name: max` or `name: min`. "
                    f"Received: {item!r}"
                )
            ((name, direction),) = item.items()
            _check_choice(f"tune.objectives.{name}", direction, tuple(DIRECTIONS))
            if not isinstance(name, str) or not name:
                raise ValueError(f"`tune.objectives` names must be strings. Received: {name!r}")
            names.append(name)
        if len(set(names)) != len(names):
            raise ValueError(f"`tune.objectives` names an objective twice: {names}")
        if self.pruner != "none":
            if len(names) > 1:
                raise ValueError(
                    f"`tune.pruner`={self.pruner!r} needs one objective (Optuna prunes "
                    f"single-objective studies only). Received objectives: {names}"
                )
            if names[0] in MODEL_OBJECTIVES + EXPORT_OBJECTIVES:
                raise ValueError(
                    f"`tune.pruner`={self.pruner!r} prunes on a per-epoch metric; "
                    f"`{names[0]}` is known only once a trial ends."
                )

    def needs_export(self):
        """Whether an objective is measured on the TFLite file."""
        return any(name in EXPORT_OBJECTIVES for name, _ in self.objective_directions())


@dataclasses.dataclass(frozen=True)
class SearchParameter:
    """One searched key: `choices`, or a `low`..`high` range (`log`, `step`), for one value
    or `stages` values."""

    key: str
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    stages: int | None = None

    @classmethod
    def from_spec(cls, key, spec):
        """Parses one `tune.space` entry; raises ValueError naming `tune.space.<key>`."""
        where = f"tune.space.{key}"
        _check_key_path(key)
        if not isinstance(spec, dict):
            raise ValueError(
                f"`{where}` must be a mapping such as {{choices: [3, 5]}} or "
                f"{{low: 0.001, high: 0.01, log: true}}. Received: {spec!r}"
            )
        unknown = sorted(set(spec) - _PARAMETER_KEYS)
        if unknown:
            raise ValueError(
                f"Unknown config key `{where}.{unknown[0]}`. Known keys here: "
                f"{sorted(_PARAMETER_KEYS)}"
            )
        stages = spec.get("stages")
        if stages is not None and (not _is_int(stages) or stages < 1):
            raise ValueError(f"`{where}.stages` must be a positive int. Received: {stages!r}")
        if "choices" in spec:
            choices = spec["choices"]
            if set(spec) - {"choices", "stages"}:
                raise ValueError(
                    f"`{where}` takes either `choices` or `low`/`high`, not both. "
                    f"Received: {spec!r}"
                )
            if not isinstance(choices, list) or not choices:
                raise ValueError(
                    f"`{where}.choices` must be a non-empty list. Received: {choices!r}"
                )
            if any(not isinstance(c, str | bool | int | float) for c in choices):
                raise ValueError(
                    f"`{where}.choices` must hold strings, numbers or booleans (Optuna "
                    f"stores them). Received: {choices!r}"
                )
            return cls(key, choices=tuple(choices), stages=stages)
        if "low" not in spec or "high" not in spec:
            raise ValueError(
                f"`{where}` needs `choices`, or both `low` and `high`. Received: {spec!r}"
            )
        low, high, step, log = spec["low"], spec["high"], spec.get("step"), spec.get("log", False)
        for name, value in (("low", low), ("high", high), ("step", step)):
            if value is not None and (
                not isinstance(value, numbers.Real) or isinstance(value, bool)
            ):
                raise ValueError(f"`{where}.{name}` must be a number. Received: {value!r}")
        if not low < high:
            raise ValueError(f"`{where}` needs low < high. Received: low={low!r}, high={high!r}")
        if not isinstance(log, bool):
            raise ValueError(f"`{where}.log` must be true or false. Received: {log!r}")
        if log and low <= 0:
            raise ValueError(f"`{where}` with `log: true` needs low > 0. Received: low={low!r}")
        if step is not None and (step <= 0 or log):
            raise ValueError(
                f"`{where}.step` must be positive and cannot go with `log: true`. "
                f"Received: step={step!r}, log={log!r}"
            )
        return cls(key, low=low, high=high, log=log, step=step, stages=stages)

    @property
    def is_int(self):
        return self.choices is None and all(
            value is None or _is_int(value) for value in (self.low, self.high, self.step)
        )

    def names(self):
        """The Optuna parameter names: the key, or `key[i]` per stage."""
        if self.stages is None:
            return [self.key]
        return [f"{self.key}[{index}]" for index in range(self.stages)]

    def contains(self, value):
        if self.choices is not None:
            return any(type(value) is type(choice) and value == choice for choice in self.choices)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        if self.is_int and not _is_int(value):
            return False
        if not self.low <= value <= self.high:
            return False
        if self.step is not None:
            steps = (value - self.low) / self.step
            return abs(steps - round(steps)) < 1e-9
        return True

    def baseline_values(self, value):
        """`{optuna name: value}` of the config's own value (a scalar is repeated over the
        stages)."""
        if self.stages is None:
            return {self.key: value}
        values = list(value) if isinstance(value, list | tuple) else [value] * self.stages
        return dict(zip(self.names(), values, strict=True))

    def check_baseline(self, value):
        """Raises ValueError unless the config's value `value` lies in the space."""
        where = f"tune.space.{self.key}"
        if value is _MISSING:
            raise ValueError(
                f"`{where}`: the config sets no `{self.key}`. Give it the baseline's value "
                "(the config as written is the study's first trial)."
            )
        if self.stages is not None and isinstance(value, list | tuple):
            if len(value) != self.stages:
                raise ValueError(
                    f"`{where}` has {self.stages} stages but the config's `{self.key}` has "
                    f"{len(value)} values: {list(value)}"
                )
            outside = [item for item in value if not self.contains(item)]
        else:
            outside = [] if self.contains(value) else [value]
        if outside:
            raise ValueError(
                f"`{where}`: the config's value {value!r} is not in the search space "
                f"({self.describe()}); the config is the baseline trial, so it must be."
            )

    def describe(self):
        if self.choices is not None:
            return f"choices {list(self.choices)}"
        text = f"{self.low}..{self.high}"
        if self.log:
            text += ", log"
        if self.step is not None:
            text += f", step {self.step}"
        return text


_MISSING = object()


def config_value(values, key):
    """The value at dotted `key` of a config dict, or a sentinel when it is not set."""
    node = values
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def set_config_value(values, key, value):
    """Sets the value at dotted `key` of a config dict, creating mappings on the way.

    Raises:
        ValueError: if a part of `key` before the last names a value that is not a mapping.
    """
    parts = key.split(".")
    node = values
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"Override `{key}`: `{part}` is not a mapping.")
    node[parts[-1]] = value


def _check_key_path(key):
    parts = key.split(".") if isinstance(key, str) else []
    if len(parts) < 2 or parts[0] not in SEARCHABLE_BLOCKS or not all(parts):
        raise ValueError(
            f"`tune.space` keys are dotted config keys in {list(SEARCHABLE_BLOCKS)}, e.g. "
            f"model.backbone_args.kernel_size or train.learning_rate. Received: {key!r}"
        )


def _check_choice(key, value, choices):
    if value not in choices:
        raise ValueError(f"`{key}` must be one of {list(choices)}. Received: {value!r}")


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
