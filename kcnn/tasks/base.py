"""The `Task` contract: everything a run needs to know about one kind of problem.

In the spirit of TF Model Garden's `official/core/base_task.Task`: a task builds its data,
its model, its losses and metrics, evaluates and plots a trained model, and says how the
model is served and exported. The trainer (`kcnn.training`) is a generic pipeline that calls
these hooks and never asks which task it runs; the exporter gets the serving signature and
the parity comparison from the task too.

A task is a subclass registered once by name:

    @register_task("segmentation")
    class SegmentationTask(Task):
        ...

The registry (`TASKS`, `get_task`, `task_names`) is the only place task names live: config
validation asks it, and `kcnn train` looks the task up there.

Hooks, in the order a run calls them (the abstract ones must be written; the others have
defaults that fit a task whose model maps images to one output):

| hook | returns |
| --- | --- |
| `load_dataset(name, **kwargs)` (abstract) | the task's data set loaded by registry name |
| `load_data(data_config, seed)` | the data set of a config, with its fallback |
| `make_dataset(data, images, targets, batch_size, ...)` (abstract) | a batched `tf.data.Dataset` |
| `build_model(model_config, input_shape, num_classes, name)` | the model, from `kcnn.models` |
| `loss(train_config, model)` (abstract) | the Keras loss |
| `metrics(num_classes, train_config)` | Keras metrics for `compile` |
| `callbacks(model, data, validation, data_config)` | extra `fit` callbacks |
| `predict(model, data, batch_size)` | the model's predictions on the test split |
| `evaluate(model, data, ..., predictions)` (abstract) | the `metrics.json` dict |
| `plot(model, data, ..., predictions)` | `{file name: Figure}` of the run folder |
| `summary(metrics)` (abstract) | one line for the log |
| `model_inputs(images, targets)` | float model inputs from uint8 images |
| `serving_signature(model, class_names, image_size)` (abstract) | the SavedModel's uint8 endpoint |
| `tflite_model(model)` | the model the TFLite files are converted from |
| `export_metric(images, targets, class_names)` (abstract) | `(name, function)` for parity |
| `compare_exports` | None, or parity entries for outputs max abs error cannot judge |
"""

import abc

import numpy as np

from kcnn.backbones import build_backbone
from kcnn.models import get_model_entry

TASKS = {}


def register_task(name):
    """Class decorator: registers a `Task` subclass under `name` (one instance).

    Raises:
        TypeError: if the class is not a `Task` subclass.
        ValueError: if a task of that name is already registered.
    """

    def decorator(cls):
        if not (isinstance(cls, type) and issubclass(cls, Task)):
            raise TypeError(f"`register_task` takes a Task subclass. Received: {cls!r}")
        if name in TASKS:
            raise ValueError(f"A task named {name!r} is already registered.")
        cls.name = name
        TASKS[name] = cls()
        return cls

    return decorator


def task_names():
    """The registered task names, sorted."""
    return sorted(TASKS)


def get_task(name):
    """The registered task `name`.

    Raises:
        ValueError: naming the unknown task and listing the registered ones.
    """
    if name not in TASKS:
        raise ValueError(f"`task` must be one of {task_names()}. Received: task={name!r}")
    return TASKS[name]


class Task(abc.ABC):
    """One kind of problem (classification, segmentation, ...): the hooks a run calls.

    Class attributes:
        name: str. The registry name (set by `register_task`).
        int8_tolerance: float. Largest drop of the task metric an int8 export may have
            (`export.int8_tolerance` overrides it).
        class_outputs: bool. Whether the model's last output axis holds class scores, for
            which the export report gives top-1 agreement.
        tflite_outputs: str. What the TFLite files return, for `metadata.json`.
    """

    name = None
    int8_tolerance = 0.01
    class_outputs = False
    tflite_outputs = "as the `serve` signature"

    # --- data ---

    @abc.abstractmethod
    def load_dataset(self, name, **kwargs):
        """Loads the task's data set registered as `name` (see `kcnn.data`).

        Raises:
            FileNotFoundError: if the data set is not installed on this machine.
        """

    def load_data(self, data_config, seed=0, log=print):
        """The data set a config's `data` block names.

        Falls back to `data_config.fallback` (and says so through `log`) when the named set
        is not installed, and keeps `data_config.train_per_class` training images of each
        class when set (`select_per_class`).
        """
        arguments = {"seed": seed, **data_config.args}
        if data_config.path is not None:
            arguments["path"] = data_config.path
        if data_config.image_size is not None:
            arguments["image_size"] = data_config.image_size
        try:
            dataset = self.load_dataset(data_config.name, **arguments)
        except FileNotFoundError as error:
            if not data_config.fallback:
                raise
            log(f"{error}")
            log(f"data set '{data_config.name}' is not available; using '{data_config.fallback}'")
            dataset = self.load_dataset(data_config.fallback, seed=seed)
        if data_config.train_per_class is not None:
            self.select_per_class(dataset, data_config.train_per_class, seed)
        return dataset

    def select_per_class(self, dataset, count, seed):
        """Keeps `count` training images of each class of `dataset` (in place).

        Raises:
            ValueError: for a task whose targets are not one class label per image.
        """
        raise ValueError(
            "`data.train_per_class` keeps images per class label; it applies to "
            f"classification only. Received task={self.name!r}"
        )

    @abc.abstractmethod
    def make_dataset(self, data, images, targets, batch_size, shuffle=False, seed=0, augment=None):
        """A batched `tf.data.Dataset` of `(model inputs, targets)` from uint8 `images`.

        `data` is the whole data set (a task may draw on more than the arrays, e.g.
        inpainting's mask pool); `shuffle=True` makes training batches (shuffled, seeded,
        augmented with `augment`).
        """

    # --- model ---

    def build_model(self, model_config, input_shape, num_classes, name="model"):
        """The model a config's `model` block describes (not compiled), from the model
        registry of `kcnn.models`: on a backbone of `kcnn.backbones` for the families that
        sit on one.

        Raises:
            ValueError: for a model name not registered for this task (named).
        """
        entry = get_model_entry(model_config.name, self.name)
        arguments = dict(model_config.args)
        if entry.accepts("dropout") and model_config.dropout is not None:
            # None keeps the architecture's own default (0.5 in AlexNet and VGG).
            arguments.setdefault("dropout", model_config.dropout)
        if entry.accepts("name"):
            arguments.setdefault("name", name)
        if entry.uses_backbone:
            backbone = build_backbone(
                model_config.backbone,
                input_shape=input_shape,
                weights=model_config.weights,
                **model_config.backbone_args,
            )
            return entry.builder(backbone, num_classes=num_classes, **arguments)
        return entry.builder(input_shape=tuple(input_shape), num_classes=num_classes, **arguments)

    # --- training ---

    @abc.abstractmethod
    def loss(self, train_config, model):
        """The Keras loss for `model` with the config's `train.loss` options.

        Raises:
            ValueError: for a `train.loss` key the task's loss does not take (named).
        """

    def metrics(self, num_classes, train_config):
        """Keras metrics logged by `fit` each epoch. Defaults to none."""
        return []

    def callbacks(self, model, data, validation, data_config):
        """Extra `fit` callbacks, e.g. a metric computed on the whole validation split
        (`validation` is `(images, targets)` or None). Defaults to none."""
        return []

    # --- evaluation ---

    def predict(self, model, data, batch_size=32):
        """The model's outputs on the test split, which `evaluate` and `plot` share."""
        return model.predict(
            self.make_dataset(data, data.x_test, data.y_test, batch_size), verbose=0
        )

    @abc.abstractmethod
    def evaluate(self, model, data, batch_size=32, train_config=None, predictions=None):
        """The test-split metrics of a trained model, JSON-able (`metrics.json`).

        `predictions` are `predict`'s result when the caller has it already.
        """

    def plot(self, model, data, batch_size=32, train_config=None, predictions=None):
        """`{file name: matplotlib Figure}` of the run folder besides the training curves.
        Defaults to none."""
        return {}

    @abc.abstractmethod
    def summary(self, metrics):
        """One line of the `evaluate` metrics for the log."""

    # --- serving and export ---

    def model_inputs(self, images, targets):
        """Float32 model inputs in [0, 1] from uint8 images (targets are not inputs)."""
        return np.asarray(images, dtype="float32") / 255.0

    @abc.abstractmethod
    def serving_signature(self, model, class_names, image_size=None):
        """The SavedModel's `serving_default` endpoint: a
        `kcnn.export.ServingSignature` taking uint8 images of any size."""

    def tflite_model(self, model):
        """The Keras model the TFLite files are converted from. Defaults to `model`."""
        return model

    @abc.abstractmethod
    def export_metric(self, images, targets, class_names):
        """`(name, function)`: the task metric of model outputs on `images` that an export's
        parity report computes for Keras and LiteRT (higher is better)."""

    # None, or a method `compare_exports(expected, actual)` for a TFLite model with several
    # named outputs: Keras's and LiteRT's outputs (`{name: array}` each) -> report entries,
    # `mismatch` among them when they disagree (see `kcnn.export.parity_report`'s
    # `compare`). None compares the one output by max abs error.
    compare_exports = None
