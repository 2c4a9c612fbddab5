"""`train`, `evaluate` and `export`: a generic pipeline over the `Task` contract.

`train(config)` runs the stages in order, each handed the part of the config it needs:

1. data: the task loads the data set and builds the training stream and validation batches
   (before any folder exists, so a data error leaves nothing behind);
2. run folder (`kcnn.training.run_folder`): a fresh folder, or the unfinished run of this
   experiment to resume, locked for the run's life;
3. fit (`kcnn.training.fitting`): the task's model, loss and metrics under the strategy,
   `model.fit` resumed from the last checkpoint (`kcnn.training.checkpoint`);
4. evaluate and plot: the task's metrics (`metrics.json`) and figures, the training curves;
5. export (`kcnn.training.exporting`): SavedModel and TFLite, checked against Keras.

The trainer never asks which task it runs: every task-specific step is a hook of
`kcnn.tasks.Task`. A run that is interrupted (even by `kill -9`) keeps `backup/`, its last
checkpoint; training the same config again resumes from exactly the next batch, and with
`runtime.deterministic: true` ends with the weights an uninterrupted run would have. A NaN,
infinite or diverging loss stops the run with an error naming the step and the checkpoint a
resume starts from (see `kcnn.training.checkpoint`).
"""

import contextlib
import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from kcnn.data import split_validation
from kcnn.export.exporters import ExportError, ExportParityError
from kcnn.tasks import get_task
from kcnn.training.auxiliary import AuxiliaryLossModel, auxiliary_output_names, main_output_model
from kcnn.training.checkpoint import TrainingInterruptedError, latest_checkpoint, restore
from kcnn.training.distribute import is_chief, resolve_strategy
from kcnn.training.exporting import export_run
from kcnn.training.fitting import (
    build_optimizer,
    fit_from_checkpoint,
    fuse_batch_norm,
    shard_by_data,
    synchronize_batch_norm,
    undistributed_copy,
    weights_fingerprint,
)
from kcnn.training.messages import log
from kcnn.training.run_folder import (
    BACKUP,
    FINISHED_MARKER,
    RunLock,
    check_run_dir,
    load_run,
    read_history,
    resolve_run_dir,
    save_config,
    save_model,
    write_json,
)
from kcnn.training.transfer import apply_transfer
from kcnn.viz import plot_training_curves, save_figure


def load_data(data_config, seed=0, task="classification"):
    """The data set of a config's `data` block for the task named `task` (see
    `kcnn.tasks.Task.load_data`: the fallback and `train_per_class` included)."""
    return get_task(task).load_data(data_config, seed=seed, log=log)


def build_model(config, input_shape, num_classes):
    """The (uncompiled) model a config describes, built by its task."""
    return get_task(config.task).build_model(
        config.model, input_shape, num_classes, name=config.name.replace("-", "_")
    )


@dataclasses.dataclass
class TrainingData:
    """What the fit stage reads: the data set, the training arrays, the validation split
    (`(images, targets)` or None) and its batches, and the batches per epoch."""

    dataset: object
    x_train: np.ndarray
    y_train: np.ndarray
    validation: tuple | None
    validation_batches: object
    steps_per_epoch: int


def prepare_data(task, data_config, train_config, seed, multi_worker):
    """Loads the data, holds out the validation split and logs what the run trains on."""
    dataset = task.load_data(data_config, seed=seed, log=log)
    (x_train, y_train), validation = split_validation(
        dataset.x_train, dataset.y_train, data_config.validation_fraction, seed
    )
    log(
        f"data: {dataset.name}, {len(x_train)} train / "
        f"{0 if validation is None else len(validation[0])} validation / "
        f"{len(dataset.x_test)} test images of shape {dataset.x_train.shape[1:]}"
        + (f", {len(dataset.class_names)} classes" if dataset.class_names else "")
    )
    validation_batches = None
    if validation is not None:
        validation_batches = task.make_dataset(dataset, *validation, data_config.batch_size)
        if multi_worker:
            validation_batches = shard_by_data(validation_batches)
    if not len(x_train):
        raise ValueError(
            f"`data.validation_fraction`={data_config.validation_fraction} leaves no training "
            f"images of the {len(dataset.x_train)} in '{dataset.name}'; use a smaller fraction."
        )
    steps = train_config.steps_per_epoch or int(np.ceil(len(x_train) / data_config.batch_size))
    return TrainingData(dataset, x_train, y_train, validation, validation_batches, steps)


def _choose_run_dir(config, run_dir):
    """The run folder: the one given (checked: never a trained run or another experiment's),
    or this experiment's next (`resolve_run_dir`); a scratch folder on workers other than the
    chief, which train in step with it but write nothing the user keeps."""
    if not is_chief():
        return Path(tempfile.mkdtemp(prefix="kcnn-worker-"))
    if run_dir is not None:
        return check_run_dir(run_dir, config)
    return resolve_run_dir(config)


def _start_run_dir(config, run_dir, strategy):
    """Creates the run folder, writes the config into it and logs what the run does."""
    run_dir.mkdir(parents=True, exist_ok=True)
    resuming = (run_dir / BACKUP).exists()  # a checkpoint lives only there
    log(f"run folder: {run_dir}" + (" (resuming)" if resuming else ""))
    if is_chief():
        save_config(config, run_dir / "config.yaml")
    if strategy.num_replicas_in_sync > 1 or config.runtime.strategy != "auto":
        kind = (
            "MultiWorkerMirroredStrategy"
            if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            else type(strategy).__name__
        )
        log(
            f"strategy: {kind} with {strategy.num_replicas_in_sync} replica(s); "
            f"global batch {config.data.batch_size}"
        )


@contextlib.contextmanager
def _runtime_settings(runtime_config):
    """Seeds, op determinism and the mixed-precision policy for the life of a run."""
    keras.utils.set_random_seed(runtime_config.seed)
    if runtime_config.deterministic:
        tf.config.experimental.enable_op_determinism()
    previous_policy = keras.config.dtype_policy()
    if runtime_config.mixed_precision:
        keras.config.set_dtype_policy("mixed_float16")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous_policy)


def _compiled_model(task, config, data):
    """The task's model with transfer learning applied, compiled (inside the strategy's
    scope). Returns `(model, training_model, transfer_record)`: they differ for a model with
    auxiliary classifiers (GoogLeNet), which add to the loss in training only."""
    model = build_model(config, data.dataset.x_train.shape[1:], len(data.dataset.class_names))
    if config.runtime.sync_batch_norm:
        synchronize_batch_norm(model)
    if config.runtime.fused_batch_norm:
        fuse_batch_norm(model)
    transfer_record = apply_transfer(model, config.model)
    training_model = model
    if auxiliary_output_names(model):
        training_model = AuxiliaryLossModel(model, config.train.aux_loss_weight)
        model = main_output_model(model)
        log(
            f"auxiliary outputs {auxiliary_output_names(training_model.network)} add "
            f"to the training loss with weight {config.train.aux_loss_weight}"
        )
    training_model.compile(
        optimizer=build_optimizer(config.train, data.steps_per_epoch),
        loss=task.loss(config.train, model),
        metrics=task.metrics(len(data.dataset.class_names), config.train),
        jit_compile=config.runtime.jit_compile,
    )
    return model, training_model, transfer_record


def _fit(task, config, data, strategy, run_dir, callbacks, verbose):
    """Builds, compiles and fits the model; returns `(model, transfer_record)`, the model
    outside the strategy."""
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)

    # One endless, seeded stream of batches: epoch k is the k-th reshuffle. Each fit call
    # gets a freshly built stream (a dataset object's reshuffle state advances with every
    # iterator made from it), skipped to its first step: the position after `step` batches
    # is the same in a resumed process as in an uninterrupted one.
    def train_stream():
        stream = task.make_dataset(
            data.dataset,
            data.x_train,
            data.y_train,
            config.data.batch_size,
            shuffle=True,
            seed=config.runtime.seed,
            augment=config.data.augment,
        ).repeat()
        return shard_by_data(stream) if multi_worker else stream

    with strategy.scope():
        model, training_model, transfer_record = _compiled_model(task, config, data)
        record = restore(training_model, run_dir / BACKUP, log=log)
    try:
        fit_from_checkpoint(
            training_model,
            train_stream,
            data.validation_batches,
            config.train,
            config.runtime,
            run_dir,
            data.steps_per_epoch,
            record,
            callbacks,
            verbose,
            is_chief(),
            task.callbacks(model, data.dataset, data.validation, config.data),
        )
    except KeyboardInterrupt:
        step = int(training_model.optimizer.iterations.numpy())
        kept = latest_checkpoint(run_dir / BACKUP) if is_chief() else None
        where = (
            f"the checkpoint of step {kept['step']} is kept in {run_dir / BACKUP}"
            if kept
            else "no checkpoint was written yet"
        )
        raise TrainingInterruptedError(
            f"interrupted at step {step}; {where}: run the same command to resume."
        ) from None
    if strategy is not tf.distribute.get_strategy():
        model = undistributed_copy(model)
    return model, transfer_record


def _evaluate_and_plot(task, model, dataset, config, run_dir):
    """The task's test metrics and the epochs trained; writes `model.keras`, the curves and
    the task's plots."""
    predictions = task.predict(model, dataset, config.data.batch_size)
    metrics = task.evaluate(
        model, dataset, config.data.batch_size, config.train, predictions=predictions
    )
    save_model(model, run_dir)
    history = read_history(run_dir)
    save_figure(plot_training_curves(history, title=config.name), run_dir / "curves.png")
    figures = task.plot(model, dataset, config.data.batch_size, config.train, predictions)
    for file_name, figure in figures.items():
        save_figure(figure, run_dir / file_name)
    (run_dir / "class_names.json").write_text(json.dumps(list(dataset.class_names)))
    return metrics, len(next(iter(history.values())))


def train(config, run_dir=None, verbose="auto", callbacks=None):
    """Trains, evaluates, plots and exports the experiment `config` describes.

    Args:
        config: an `ExperimentConfig` (see `kcnn.training.config.load_config`).
        run_dir: folder for the run; defaults to `resolve_run_dir(config)`.
        verbose: Keras `fit` verbosity. Defaults to `"auto"` (a progress bar).
        callbacks: extra `keras.callbacks.Callback`s for `fit`. Defaults to None.

    Returns:
        The run folder (`pathlib.Path`).
    """
    started = time.time()
    # The strategy first: splitting the CPU into logical devices must precede any op.
    strategy = resolve_strategy(config.runtime)
    task = get_task(config.task)
    run_dir = _choose_run_dir(config, run_dir)
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    with contextlib.ExitStack() as run:
        with _runtime_settings(config.runtime):
            # The data before the folder: a data error leaves no folder behind.
            data = prepare_data(task, config.data, config.train, config.runtime.seed, multi_worker)
            if is_chief():
                run.enter_context(RunLock(run_dir))
            _start_run_dir(config, run_dir, strategy)
            model, transfer_record = _fit(task, config, data, strategy, run_dir, callbacks, verbose)
        log(f"final weights sha256: {weights_fingerprint(model)}")
        if not is_chief():
            shutil.rmtree(run_dir, ignore_errors=True)
            return run_dir
        train_seconds = time.time() - started
        return _finish(task, config, data, model, transfer_record, run_dir, started, train_seconds)


def _finish(task, config, data, model, transfer_record, run_dir, started, train_seconds):
    """Evaluates, plots and exports a trained model, then writes `metrics.json`."""
    metrics, epochs = _evaluate_and_plot(task, model, data.dataset, config, run_dir)
    try:
        export_run(model, run_dir, task, config.export, data.dataset, config.data.image_size)
    except (ExportError, ExportParityError) as error:
        raise type(error)(
            f"{error}. The trained model is kept in {run_dir / 'model.keras'}; "
            f"`kcnn export {run_dir}` runs the export again."
        ) from error
    metrics.update(
        {
            "dataset": data.dataset.name,
            "epochs": epochs,
            "train_seconds": round(train_seconds, 1),
            "total_seconds": round(time.time() - started, 1),
            "params": int(model.count_params()),
            **transfer_record,
        }
    )
    write_json(run_dir / FINISHED_MARKER, metrics)
    log(f"{task.summary(metrics)} ({metrics['total_seconds']:.0f} s)")
    files = sorted(p.name for p in run_dir.iterdir() if not p.name.startswith("."))
    log(f"wrote {run_dir}/: " + ", ".join(files))
    return run_dir


def evaluate(run_dir):
    """Re-evaluates a finished run on its test split; writes and returns `evaluation.json`."""
    config, model = load_run(run_dir)
    task = get_task(config.task)
    dataset = task.load_data(config.data, seed=config.runtime.seed, log=log)
    metrics = task.evaluate(model, dataset, config.data.batch_size, config.train)
    write_json(Path(run_dir) / "evaluation.json", metrics)
    return metrics


def export(run_dir, quantization=None, allow_flex=None, int8_io=None):
    """Exports a finished run again (e.g. with other quantizations); see `export_run`."""
    config, model = load_run(run_dir)
    task = get_task(config.task)
    dataset = task.load_data(config.data, seed=config.runtime.seed, log=log)
    return export_run(
        model,
        run_dir,
        task,
        config.export,
        dataset,
        config.data.image_size,
        quantization=quantization,
        allow_flex=allow_flex,
        int8_io=int8_io,
    )
