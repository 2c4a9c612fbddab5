"""Experiment configuration: YAML file -> typed dataclasses -> constructor arguments.

The layout follows TF Model Garden's experiment configs (official/vision/configs): one
`ExperimentConfig` with a block per concern. Every key is checked: an unknown key is an
error naming its full path (`train.epochz`), and a closed option set names its choices.

Example YAML:

    name: fashion_mnist
    task: classification
    data:
      name: fashion_mnist
      batch_size: 128
    model:
      backbone: plain_cnn
      backbone_args: {filters: [32, 64, 128]}
    train:
      epochs: 10
"""

import dataclasses
import re
import typing
from pathlib import Path

import yaml

from kcnn.export.options import EXPORT_FORMATS, QUANTIZATIONS
from kcnn.models.classic.googlenet import AUX_LOSS_WEIGHT
from kcnn.tasks import task_names
from kcnn.training.freezing import check_layer_selector
from kcnn.training.transfer import PRETRAINED_SUFFIXES
from kcnn.training.tune_config import TuneConfig, set_config_value

OPTIMIZERS = ("adam", "adamw", "sgd")
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")
SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass
class DataConfig:
    """Where the data comes from and how it is batched.

    `name` is a dataset of `kcnn.data` for the task: "fashion_mnist", "digits",
    "image_folder" (classification), "shapes", "segmentation_folders" (segmentation),
    "photos" (inpainting), "shapes" (detection), "localized_fashion_mnist", "shapes"
    (localization); `args` are its own keyword arguments (e.g. `train_count` for shapes).
    When it is not available on this machine and `fallback` names another, that one is used
    and the run says so. `augment` names the task's augmentation (e.g. "flip"); for
    classification it may also be a list of AlexNet-style augmentations
    (`kcnn.data.augment.LIST_AUGMENTATIONS`), applied in order.
    `train_per_class` keeps that many training images of each class (seeded by
    `runtime.seed`), for low-data and transfer-learning experiments; the test split is kept
    whole.
    """

    name: str = "fashion_mnist"
    path: str | None = None
    args: dict = dataclasses.field(default_factory=dict)
    fallback: str | None = None
    image_size: int | None = None
    batch_size: int = 128
    validation_fraction: float = 0.1
    augment: str | list | None = None
    shuffle_buffer: int | None = None
    train_per_class: int | None = None


@dataclasses.dataclass
class ModelConfig:
    """The network: a registered model (`kcnn.models.model_names()`) and, for the families
    that sit on one, a backbone from `kcnn.backbones`. `args` go to the model builder.

    `weights` loads the backbone alone (`kcnn.backbones.build_backbone`). Transfer learning
    (`kcnn.training.transfer`) works on the whole model: `pretrained` names a local `.keras`
    file (e.g. another run's `model.keras`), whose layers are copied into the model by name
    where their shapes match, or a `.weights.h5` file, matched by position. The
    classification head starts fresh unless `pretrained_head` is true (same classes:
    fine-tuning an earlier run). `freeze` keeps part of the model fixed: `"backbone"`
    (everything but the head), a pyramid level such as `"P3"` (the backbone up to that
    level), or a list of layer-name prefixes.
    """

    name: str = "classifier"
    args: dict = dataclasses.field(default_factory=dict)
    backbone: str = "plain_cnn"
    backbone_args: dict = dataclasses.field(default_factory=dict)
    weights: str | None = None
    dropout: float | None = None
    pretrained: str | None = None
    pretrained_head: bool = False
    freeze: str | list | None = None


@dataclasses.dataclass
class TrainConfig:
    """Optimisation. `loss` weights named losses of the task (segmentation:
    `{"crossentropy": 1.0, "dice": 1.0}` by default, see `kcnn.tasks.losses`; inpainting:
    `{"valid": 1, "hole": 6, "tv": 0.1, "perceptual": 0.05, "style": 120}` by default,
    `psnr` (the composite's mean PSNR as a loss) and `vgg16_weights`, a local file the
    perceptual and style terms need, see `kcnn.tasks.inpainting`; detection: `DetectionLoss`
    keyword arguments such as `{"box_weight": 2.5, "box_loss": "ciou"}`, see
    `kcnn.tasks.detection`), and pixels
    labelled `ignore_index` count in no loss or metric. A model with auxiliary classifiers
    (GoogLeNet with `aux_heads: true`) adds their losses times `aux_loss_weight` while
    training (see `kcnn.training.auxiliary`). Training stops like on a NaN loss when one
    step's loss exceeds `divergence_factor` times the median of the steps before (None: only
    NaN or infinite losses and weights stop it; see `kcnn.training.checkpoint`).
    `weight_decay` is decoupled weight decay for `adamw` and `sgd` (see
    `kcnn.training.fitting.build_optimizer`); `adam` refuses one."""

    epochs: int = 10
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    steps_per_epoch: int | None = None
    loss: dict | None = None
    ignore_index: int | None = None
    aux_loss_weight: float = AUX_LOSS_WEIGHT
    divergence_factor: float | None = 1000.0


@dataclasses.dataclass
class RuntimeConfig:
    """How the job runs (the `runtime` block of TF Model Garden).

    `strategy` is one of "auto", "one_device", "mirrored", "multi_worker" and `devices`
    lists the devices of "one_device" / "mirrored" (see `kcnn.training.distribute`; on a
    CPU-only machine `["/cpu:0", "/cpu:1"]` splits the CPU into two logical devices).
    `data.batch_size` is the global batch over all replicas. `mixed_precision` trains in
    `mixed_float16`. `checkpoint_every_steps` saves a resumable checkpoint every so many
    steps as well as at each epoch end, so a killed run loses at most that many steps.
    `deterministic` makes TensorFlow's ops deterministic, so that a resumed run ends with
    the weights of an uninterrupted one. `sync_batch_norm` makes every batch normalization
    layer compute its statistics over the global batch (Keras's `synchronized=True`), so
    that R replicas train exactly like one device; otherwise each replica normalises with
    the statistics of its own B / R examples, as in the BN paper's multi-GPU practice.
    `fused_batch_norm` computes each batch normalization's training step with TensorFlow's
    fused kernel (`kcnn.training.fuse_batch_norm`): the same values, fewer passes.
    """

    seed: int = 0
    strategy: str = "auto"
    devices: list = dataclasses.field(default_factory=list)
    sync_batch_norm: bool = False
    fused_batch_norm: bool = True
    mixed_precision: bool = False
    jit_compile: bool = False
    deterministic: bool = False
    checkpoint_every_steps: int | None = None


@dataclasses.dataclass
class ExportConfig:
    """What a finished run exports, and the parity check it must pass."""

    formats: list = dataclasses.field(default_factory=lambda: list(EXPORT_FORMATS))
    # One TFLite mode or a list of them: none (fp32), fp16, dynamic, int8, int16x8.
    quantization: str | list = "none"
    parity_samples: int = 1000  # capped by the test split
    parity_tolerance: float = 1e-4
    # Largest task-metric drop of an int8 or int16x8 file; None takes the task's default (top-1
    # accuracy 0.01, mean IoU 0.02, PSNR 0.5 dB).
    int8_tolerance: float | None = None
    int8_io: bool = False  # int8 input and output tensors (full-integer model)
    allow_flex: bool = False  # allow TensorFlow (Flex) ops the stock interpreter lacks
    latency_runs: int = 20

    @property
    def quantizations(self):
        """`quantization` as a list."""
        return [self.quantization] if isinstance(self.quantization, str) else self.quantization


@dataclasses.dataclass
class ExperimentConfig:
    """One experiment: everything `kcnn train` needs."""

    name: str = "experiment"
    task: str = "classification"
    output_dir: str = "runs"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)
    # What `kcnn tune` searches (`kcnn.training.tune_config`); `kcnn train` ignores it.
    tune: TuneConfig = dataclasses.field(default_factory=TuneConfig)

    def validate(self):
        """Checks closed option sets and ranges; raises ValueError naming the key."""
        _choice("task", self.task, task_names())
        _choice("train.optimizer", self.train.optimizer, OPTIMIZERS)
        _choice("train.schedule", self.train.schedule, SCHEDULES)
        for quantization in self.export.quantizations:
            _choice("export.quantization", quantization, QUANTIZATIONS)
        if not self.export.quantizations:
            raise ValueError("`export.quantization` must name at least one mode.")
        _choice("runtime.strategy", self.runtime.strategy, STRATEGIES)
        if self.runtime.checkpoint_every_steps is not None:
            _positive("runtime.checkpoint_every_steps", self.runtime.checkpoint_every_steps)
        for export_format in self.export.formats:
            _choice("export.formats", export_format, EXPORT_FORMATS)
        _positive("data.batch_size", self.data.batch_size)
        _positive("train.epochs", self.train.epochs)
        _positive("train.learning_rate", self.train.learning_rate)
        if not 0.0 <= self.data.validation_fraction < 1.0:
            raise ValueError(
                "`data.validation_fraction` must be in [0, 1). "
                f"Received: {self.data.validation_fraction}"
            )
        _check_run_name(self.name)
        if self.train.steps_per_epoch is not None:
            _positive("train.steps_per_epoch", self.train.steps_per_epoch)
        _at_least("train.warmup_epochs", self.train.warmup_epochs, 0)
        if self.train.divergence_factor is not None:
            _at_least("train.divergence_factor", self.train.divergence_factor, 1)
        _at_least("train.weight_decay", self.train.weight_decay, 0)
        if self.train.weight_decay and self.train.optimizer == "adam":
            raise ValueError(
                "`train.weight_decay` needs `train.optimizer` adamw or sgd (decoupled weight "
                f"decay); adam takes none. Received: weight_decay={self.train.weight_decay}, "
                "optimizer='adam'"
            )
        _positive("export.parity_samples", self.export.parity_samples)
        _positive("export.parity_tolerance", self.export.parity_tolerance)
        _at_least("export.latency_runs", self.export.latency_runs, 0)
        if self.data.image_size is not None:
            _positive("data.image_size", self.data.image_size)
        if self.data.shuffle_buffer is not None:
            _positive("data.shuffle_buffer", self.data.shuffle_buffer)
        _at_least("runtime.seed", self.runtime.seed, 0)
        if self.model.dropout is not None and not 0.0 <= self.model.dropout < 1.0:
            raise ValueError(f"`model.dropout` must be in [0, 1). Received: {self.model.dropout}")
        if self.data.train_per_class is not None:
            _positive("data.train_per_class", self.data.train_per_class)
        if self.train.aux_loss_weight < 0:
            raise ValueError(
                f"`train.aux_loss_weight` must be >= 0. Received: {self.train.aux_loss_weight}"
            )
        pretrained = self.model.pretrained
        if pretrained is not None and not pretrained.endswith(PRETRAINED_SUFFIXES):
            raise ValueError(
                "`model.pretrained` must be a local '.keras' model file or '.weights.h5' "
                f"weights file. Received: {pretrained!r}"
            )
        if self.model.freeze is not None:
            check_layer_selector(self.model.freeze, "model.freeze")
        self.tune.validate(self)
        return self

    def to_dict(self):
        return dataclasses.asdict(self)


def _choice(key, value, choices):
    if value not in choices:
        raise ValueError(f"`{key}` must be one of {list(choices)}. Received: {value!r}")


def _positive(key, value):
    if value is None or value <= 0:
        raise ValueError(f"`{key}` must be positive. Received: {value!r}")


def _at_least(key, value, minimum):
    if value is None or value < minimum:
        raise ValueError(f"`{key}` must be >= {minimum}. Received: {value!r}")


def _check_run_name(name):
    """A run's `name` is one plain folder name under `output_dir`: no path separator, not
    empty, not "." or ".." (the run must not be written outside `output_dir`)."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or name != name.strip():
        raise ValueError(
            "`name` must be a plain folder name (no '/', not empty, '.' or '..'), the run "
            f"folder under `output_dir`. Received: name={name!r}"
        )


# YAML 1.1 reads `1e-3` (no dot) as a string; for a float key it is the number users mean.
_FLOAT_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _check_type(key, value, annotation):
    """Checks a YAML scalar against a dataclass field annotation (ints pass as floats)."""
    allowed = typing.get_args(annotation) or (annotation,)
    allowed = tuple(typing.get_origin(a) or a for a in allowed)
    allowed = tuple(type(None) if a is None else a for a in allowed)
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if float in allowed and isinstance(value, str) and _FLOAT_TEXT.match(value.strip()):
        return float(value)
    if isinstance(value, bool) and bool not in allowed:
        raise ValueError(f"`{key}` must be of type {_type_names(allowed)}. Received: {value!r}")
    if not isinstance(value, allowed):
        raise ValueError(f"`{key}` must be of type {_type_names(allowed)}. Received: {value!r}")
    return value


def _type_names(types):
    return " or ".join("null" if t is type(None) else t.__name__ for t in types)


def _from_dict(cls, values, prefix):
    if not isinstance(values, dict):
        raise ValueError(f"`{prefix or 'config'}` must be a mapping. Received: {values!r}")
    fields = {field.name: field for field in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    arguments = {}
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            raise ValueError(f"Unknown config key `{path}`. Known keys here: {sorted(fields)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            arguments[key] = _from_dict(hint, value, path)
        else:
            arguments[key] = _check_type(path, value, hint)
    return cls(**arguments)


def config_from_dict(values):
    """Builds and validates an `ExperimentConfig` from a plain dict."""
    return _from_dict(ExperimentConfig, values or {}, "").validate()


def _apply_override(values, override):
    if "=" not in override:
        raise ValueError(f"An override must look like key.subkey=value. Received: {override!r}")
    key, raw = override.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as error:
        reason = str(error).splitlines()[0]
        raise ValueError(
            f"Override `{key}`: the value {raw!r} is not valid YAML ({reason})."
        ) from None
    set_config_value(values, key.strip(), value)


def load_config(path, overrides=()):
    """Loads a YAML experiment file, applies `key.subkey=value` overrides, and validates.

    Args:
        path: str or Path of a YAML file.
        overrides: iterable of strings such as `"train.epochs=3"`; values are parsed as
            YAML (`3` is an int, `[8, 16]` a list, `null` None).

    Returns:
        A validated `ExperimentConfig`.

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: for YAML that is not a mapping, an unknown key (named with its full
            path), a value of the wrong type, or a value outside its option set.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Config file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ValueError(f"Config file {path} is not valid YAML: {error}") from error
    if values is None:
        raise ValueError(
            f"Config file {path} is empty (or only comments): it must name at least the "
            "experiment, e.g. `name:` and `task:` (see configs/)."
        )
    if not isinstance(values, dict):
        raise ValueError(f"Config file {path} must hold a mapping at the top level.")
    for override in overrides:
        _apply_override(values, override)
    try:
        return config_from_dict(values)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error


def save_config(config, path):
    """Writes `config` as YAML (what a run folder keeps as `config.yaml`); the `tune` block
    only when it is not the default one."""
    values = config.to_dict()
    if config.tune == TuneConfig():
        del values["tune"]
    Path(path).write_text(yaml.safe_dump(values, sort_keys=False), encoding="utf-8")
