"""A trial's candidate: the values it suggests for the searched keys, and its config."""

from kcnn.training import config_from_dict
from kcnn.training.tune_config import set_config_value


def trial_config(config, values, number, for_training=True):
    """The `ExperimentConfig` of one trial: `config` with `values` (`{dotted key: value}`)
    put in, named `<name>-trial-<number>`, without the `tune` block. For training, the
    exports are only those an objective needs (none, or the fp32 TFLite file)."""
    tune = config.tune
    data = config.to_dict()
    del data["tune"]
    data["name"] = f"{config.name}-trial-{number}"
    for key, value in values.items():
        set_config_value(data, key, value)
    if for_training and not tune.needs_export():
        data["export"]["formats"] = []
    elif for_training:
        data["export"].update({"formats": ["tflite"], "quantization": "none"})
    return config_from_dict(data)


def suggest(trial, parameters):
    """`{dotted key: value}` the trial suggests for each `SearchParameter` (a list per
    stage for staged ones)."""
    values = {}
    for key, parameter in parameters.items():
        suggested = [_suggest_one(trial, name, parameter) for name in parameter.names()]
        values[key] = suggested if parameter.stages is not None else suggested[0]
    return values


def _suggest_one(trial, name, parameter):
    if parameter.choices is not None:
        return trial.suggest_categorical(name, list(parameter.choices))
    if parameter.is_int:
        return trial.suggest_int(
            name, parameter.low, parameter.high, step=parameter.step or 1, log=parameter.log
        )
    return trial.suggest_float(
        name, parameter.low, parameter.high, step=parameter.step, log=parameter.log
    )


def values_of_params(params, parameters):
    """`{dotted key: value}` from a finished trial's Optuna `params`."""
    values = {}
    for key, parameter in parameters.items():
        suggested = [params[name] for name in parameter.names()]
        values[key] = suggested if parameter.stages is not None else suggested[0]
    return values
