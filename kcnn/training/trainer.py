"""The train / evaluate / export loop around `model.fit`, writing one run folder.

A run folder holds everything a finished experiment produced:

    runs/<name>/
      config.yaml          the resolved experiment config
      model.keras          the trained model (reloads with no custom_objects)
      metrics.json         test-split metrics, data set, timing
      history.csv          per-epoch metrics (appended across a resumed run)
      curves.png           training curves
      confusion_matrix.png (classification) / predictions.png (segmentation, inpainting,
                           detection)
      logs/                TensorBoard logs
      saved_model/         TensorFlow SavedModel: uint8 `serving_default`, float `serve`
      model.tflite         LiteRT flatbuffer (fp32), builtin ops only (detection: with
                           decoding and NMS, image in, detections out)
      model_<mode>.tflite  fp16 / dynamic / int8 files, when `export.quantization` asks
      metadata.json        task, class names and the inputs each export takes
      export_report.json   Keras vs LiteRT parity, task metric, size, latency per file

A run that is interrupted (even by `kill -9`) keeps `backup/`, its last checkpoint, written
atomically at each epoch end and every `runtime.checkpoint_every_steps` steps (see
`kcnn.training.checkpoint`); training the same config again resumes from exactly the next
batch, and with `runtime.deterministic: true` ends with the weights an uninterrupted run
would have. A NaN or infinite loss stops the run with an error naming the step and keeps the
last good checkpoint. A finished run is never overwritten:
the next run of the same experiment goes to `runs/<name>-2`, `-3`, ...
"""

import csv
import hashlib
import inspect
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from kcnn._files import atomic_path
from kcnn.backbones import build_backbone
from kcnn.data import per_class_subset
from kcnn.export.exporters import (
    ExportError,
    ExportParityError,
    export_saved_model,
    export_tflite,
    parity_report,
)
from kcnn.export.serving import serving_metadata
from kcnn.models import get_model_entry
from kcnn.tasks import TASKS
from kcnn.training.auxiliary import AuxiliaryLossModel, auxiliary_output_names, main_output_model
from kcnn.training.checkpoint import (
    StepCheckpoint,
    StopOnNonFiniteLoss,
    latest_checkpoint,
    restore,
)
from kcnn.training.config import load_config, save_config
from kcnn.training.distribute import is_chief, resolve_strategy
from kcnn.training.transfer import freeze, head_layers, load_pretrained
from kcnn.viz import plot_training_curves, save_figure

BACKUP = "backup"
FINISHED_MARKER = "metrics.json"


def _log(message):
    prefix = os.environ.get("KCNN_WORKER_PREFIX", "")
    print(f"{prefix}[kcnn] {message}", flush=True)


def load_data(data_config, seed=0, task="classification"):
    """Loads the data a config names for `task`, falling back when it is absent, and keeps
    `data_config.train_per_class` training images of each class when it is set."""
    arguments = {"seed": seed, **data_config.args}
    if data_config.path is not None:
        arguments["path"] = data_config.path
    if data_config.image_size is not None:
        arguments["image_size"] = data_config.image_size
    handler = TASKS[task]
    try:
        dataset = handler.load_data(data_config.name, **arguments)
    except FileNotFoundError as error:
        if not data_config.fallback:
            raise
        _log(f"{error}")
        _log(f"data set '{data_config.name}' is not available; using '{data_config.fallback}'")
        dataset = handler.load_data(data_config.fallback, seed=seed)
    if data_config.train_per_class is not None:
        if task != "classification":
            raise ValueError(
                "`data.train_per_class` keeps images per class label; it applies to "
                f"classification only. Received task={task!r}"
            )
        dataset.x_train, dataset.y_train = per_class_subset(
            dataset.x_train, dataset.y_train, data_config.train_per_class, seed=seed
        )
    return dataset


def split_validation(images, labels, fraction, seed):
    """Holds out `fraction` of the training split for validation: class-stratified for
    image labels, a seeded random subset for masks."""
    if not fraction:
        return (images, labels), None
    rng = np.random.default_rng(seed)
    if labels.ndim > 1:
        held_out = np.sort(rng.permutation(len(labels))[: int(round(fraction * len(labels)))])
    else:
        held_out = []
        for label in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == label))
            held_out.append(members[: int(round(fraction * members.size))])
        held_out = np.sort(np.concatenate(held_out))
    keep = np.setdiff1d(np.arange(len(labels)), held_out)
    return (images[keep], labels[keep]), (images[held_out], labels[held_out])


def _optimizer(train_config, steps_per_epoch):
    total_steps = max(1, train_config.epochs * steps_per_epoch)
    warmup_steps = int(train_config.warmup_epochs * steps_per_epoch)
    learning_rate = train_config.learning_rate
    if train_config.schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup_steps else train_config.learning_rate,
            decay_steps=max(1, total_steps - warmup_steps),
            warmup_target=train_config.learning_rate if warmup_steps else None,
            warmup_steps=warmup_steps,
        )
    if train_config.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate)
    if train_config.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=train_config.weight_decay)
    return keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True)


def resolve_run_dir(config):
    """Returns the run folder: an unfinished run of this experiment, or a fresh folder.

    A folder is reused while its training is unfinished (it resumes from `backup/`). A folder
    with `metrics.json` is finished, and one with `model.keras` but no `metrics.json` has
    trained but failed its evaluation or export; neither is touched again: the next free
    `NAME-2`, `NAME-3`, ... is used instead (`kcnn export RUN` re-runs an export).
    """
    base = Path(config.output_dir) / config.name
    candidate, index = base, 1
    while candidate.exists():
        trained = (candidate / FINISHED_MARKER).exists() or (candidate / "model.keras").exists()
        if not trained:
            return candidate  # unfinished: resume it (or reuse an empty folder)
        index += 1
        candidate = base.with_name(f"{base.name}-{index}")
    return candidate


def read_history(run_dir):
    """Reads `history.csv` of a run into {metric: [value per epoch]}.

    Keras's `CSVLogger` writes "NA" in the `val_` columns of a run without validation
    data; such columns are left out.
    """
    path = Path(run_dir) / "history.csv"
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return {
        key: [float(row[key]) for row in rows]
        for key in rows[0]
        if key != "epoch" and any(row[key] != "NA" for row in rows)
    }


def _write_json(path, values):
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(values, indent=2), encoding="utf-8")


def build_model(config, input_shape, num_classes):
    """Builds the model a config describes (not compiled), through the model registry."""
    entry = get_model_entry(config.model.name, config.task)
    parameters = inspect.signature(entry.builder).parameters
    arguments = dict(config.model.args)
    if "dropout" in parameters and config.model.dropout is not None:
        # None keeps the architecture's own default (0.5 in AlexNet and VGG).
        arguments.setdefault("dropout", config.model.dropout)
    if "name" in parameters:
        arguments.setdefault("name", config.name.replace("-", "_"))
    if entry.uses_backbone:
        backbone = build_backbone(
            config.model.backbone,
            input_shape=input_shape,
            weights=config.model.weights,
            **config.model.backbone_args,
        )
        return entry.builder(backbone, num_classes=num_classes, **arguments)
    return entry.builder(input_shape=tuple(input_shape), num_classes=num_classes, **arguments)


def task_loss(task, train_config, model):
    """The task's loss. A task whose `loss` takes the model gets it: detection's loss needs
    the detector's input size and level strides (its anchor points)."""
    if "model" in inspect.signature(task.loss).parameters:
        return task.loss(train_config, model=model)
    return task.loss(train_config)


def task_callbacks(task, model, dataset, validation, config):
    """The callbacks a task adds to `fit` (detection: COCO mAP on the validation split);
    none for a task without a `callbacks` method."""
    callbacks = getattr(task, "callbacks", None)
    return [] if callbacks is None else list(callbacks(model, dataset, validation, config))


def apply_transfer(model, model_config):
    """Loads `model_config.pretrained` into `model` and freezes `model_config.freeze`.

    The classification head keeps its fresh weights unless `model_config.pretrained_head`.

    Returns:
        A dict for `metrics.json`: the checkpoint, the layers loaded, skipped and frozen.
    """
    record = {}
    if model_config.pretrained is not None:
        exclude = () if model_config.pretrained_head else head_layers(model)
        report = load_pretrained(model, model_config.pretrained, exclude=exclude)
        _log(f"pretrained: {report.summary()}")
        record["pretrained"] = {
            "path": report.path,
            "loaded_layers": report.loaded,
            "skipped_layers": report.skipped,
        }
    if model_config.freeze is not None:
        record["frozen_layers"] = freeze(model, model_config.freeze)
        trainable = int(sum(np.prod(weight.shape) for weight in model.trainable_weights))
        _log(
            f"frozen: {len(record['frozen_layers'])} layers ({model_config.freeze}); "
            f"{trainable:,} of {model.count_params():,} parameters train"
        )
        record["trainable_params"] = trainable
    return record


def _tflite_name(quantization):
    return "model.tflite" if quantization == "none" else f"model_{quantization}.tflite"


def _export_table(report):
    """One line per TFLite file: size, latency, max error and the task metric."""
    lines = []
    for quantization, entry in report["tflite"].items():
        if "error" in entry:
            lines.append(f"  {_tflite_name(quantization):22} FAILED to run: {entry['error']}")
            continue
        metric = entry.get("metric")
        line = (
            f"  {_tflite_name(quantization):22} {entry['file_bytes'] / 1024:9.1f} KiB  "
            f"{entry.get('latency_ms', float('nan')):7.2f} ms  max|err| "
            f"{entry['max_abs_error']:.2e}"
        )
        if metric is not None:
            line += (
                f"  {metric} {entry[f'litert_{metric}']:.4f} (Keras {entry[f'keras_{metric}']:.4f})"
            )
        lines.append(line + ("" if entry["passed"] else "  FAILED"))
    return "\n".join(lines)


def export_run(model, run_dir, config, dataset, quantization=None, allow_flex=None, int8_io=None):
    """Writes the exports of a run folder and checks them against Keras.

    Writes `saved_model/` (the `serving_default` uint8 signature and the float `serve`
    one, see `kcnn.export.serving`), one `.tflite` file per quantization (`model.tflite`
    for fp32, `model_<mode>.tflite` otherwise), `metadata.json` (task, class names, inputs)
    and `export_report.json`: per file, the max abs error against Keras, the task metric
    (top-1 accuracy, mean IoU, PSNR or mAP@.5) for Keras and LiteRT, top-1 agreement, file
    size and single-thread LiteRT latency, on the first `config.export.parity_samples` test
    images. Detection's files hold the decoder and NMS; they pass when LiteRT's detections
    match Keras's (`DetectionTask.compare_exports`).
    int8 calibration draws on the training split.

    Args:
        quantization: None (the config's `export.quantization`), a mode or a list of modes.
        allow_flex: None (the config's `export.allow_flex`) or bool.
        int8_io: None (the config's `export.int8_io`) or bool.

    Raises:
        ExportParityError: if the fp32 file differs from Keras by more than
            `config.export.parity_tolerance`, or the int8 file drops the task metric by more
            than `config.export.int8_tolerance` (the report is still written).
    """
    run_dir = Path(run_dir)
    options = config.export
    task = TASKS[config.task]
    if quantization is None:
        quantizations = options.quantizations
    else:
        quantizations = [quantization] if isinstance(quantization, str) else list(quantization)
    allow_flex = options.allow_flex if allow_flex is None else allow_flex
    int8_io = options.int8_io if int8_io is None else int8_io
    metadata = serving_metadata(model, config.task, dataset.class_names, config.data.image_size)
    report = {"task": config.task, "formats": list(options.formats), "tflite": {}}
    saved_model_dir = run_dir / "saved_model"
    if "saved_model" in options.formats:
        export_saved_model(
            model,
            saved_model_dir,
            task=config.task,
            class_names=dataset.class_names,
            image_size=config.data.image_size,
            metadata=metadata,
        )
        report["saved_model"] = {
            "path": str(saved_model_dir),
            "signatures": sorted(metadata["signatures"]),
        }
    failures = []
    if "tflite" in options.formats:
        count = options.parity_samples
        images, labels = dataset.x_test[:count], dataset.y_test[:count]
        samples = task.model_inputs(images, labels)
        metric = task.export_metric(images, labels, dataset.class_names)
        int8_tolerance = options.int8_tolerance
        if int8_tolerance is None:
            int8_tolerance = task.int8_tolerance
        # A task may convert another model than `serve` (detection: the detector with its
        # decoder and NMS) and compare its several outputs its own way.
        tflite_model = task.tflite_model(model) if hasattr(task, "tflite_model") else model
        converted_saved_model = saved_model_dir.exists() and tflite_model is model
        for mode in quantizations:
            tflite_path = run_dir / _tflite_name(mode)
            export_tflite(
                tflite_model,
                tflite_path,
                saved_model_dir=saved_model_dir if converted_saved_model else None,
                quantization=mode,
                representative_images=task.model_inputs(
                    dataset.x_train[:256], dataset.y_train[:256]
                ),
                allow_flex=allow_flex,
                int8_io=int8_io and mode == "int8",
            )
            try:
                entry = parity_report(
                    tflite_model,
                    tflite_path,
                    samples,
                    options.parity_tolerance,
                    mode,
                    class_outputs=task.class_outputs,
                    metric=metric,
                    latency_runs=options.latency_runs,
                    compare=getattr(task, "compare_exports", None),
                )
            except RuntimeError as error:  # a kernel that fails to run in LiteRT
                message = str(error).strip().splitlines()[-1]
                report["tflite"][mode] = {
                    "quantization": mode,
                    "path": str(tflite_path),
                    "file_bytes": tflite_path.stat().st_size,
                    "error": message,
                    "passed": False,
                }
                failures.append(f"{tflite_path.name} fails in the LiteRT interpreter: {message}")
                continue
            entry["path"] = str(tflite_path)
            if not entry["passed"] and "mismatch" in entry:
                failures.append(f"{tflite_path.name} {entry['mismatch']}")
            elif not entry["passed"]:
                failures.append(
                    f"{tflite_path.name} differs from Keras by {entry['max_abs_error']:.3g} "
                    f"(tolerance {entry['tolerance']})"
                )
            if mode == "int8":
                entry["metric_tolerance"] = int8_tolerance
                entry["passed"] = entry["metric_drop"] <= int8_tolerance
                if not entry["passed"]:
                    failures.append(
                        f"{tflite_path.name} drops {entry['metric']} by "
                        f"{entry['metric_drop']:.4g} (tolerance {int8_tolerance}: "
                        "export.int8_tolerance)"
                    )
            report["tflite"][mode] = entry
        metadata["tflite_files"] = {mode: _tflite_name(mode) for mode in report["tflite"]}
        metadata["tflite_int8_io"] = bool(int8_io and "int8" in report["tflite"])
    report["passed"] = not failures
    _write_json(run_dir / "metadata.json", metadata)
    _write_json(run_dir / "export_report.json", report)
    if report["tflite"]:
        shown = min(count, len(dataset.x_test))
        _log(f"exports (LiteRT on {shown} test samples, 1 thread):\n{_export_table(report)}")
    if failures:
        raise ExportParityError("; ".join(failures) + f"; see {run_dir / 'export_report.json'}")
    return report


def _shard_by_data(dataset):
    """Shards in-memory data across workers by element (there are no files to split)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def synchronize_batch_norm(model):
    """Makes every `BatchNormalization` layer of `model` (nested ones too) compute its batch
    statistics over all replicas. Returns the number of layers changed."""
    changed = 0
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization) and not layer.synchronized:
            layer.synchronized = True
            changed += 1
    return changed


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def _undistributed_copy(model):
    """The trained model rebuilt outside the strategy, for evaluation and export."""
    with tf.distribute.get_strategy().scope():
        copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _logs_as_vectors(step):
    def wrapped(data):
        return {name: tf.reshape(value, [1]) for name, value in step(data).items()}

    return wrapped


def weights_fingerprint(model):
    """SHA-256 of all weights' bytes: equal on every worker of a correct multi-worker run."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()


def _fit(
    model,
    train_data,
    validation_data,
    config,
    run_dir,
    steps_per_epoch,
    record,
    callbacks,
    verbose,
    chief,
    metric_callbacks=(),
):
    """Runs `model.fit` from the step a checkpoint `record` names (or from the start).

    A run resumed inside an epoch first finishes that epoch's remaining batches, then
    runs the remaining epochs, on the same stream of batches an uninterrupted run sees.
    `train_data` is a function returning a fresh endless dataset. `metric_callbacks` write
    values into the epoch logs, so they run before the callbacks that record them.
    """
    epochs = config.train.epochs
    step = record["step"] if record else 0
    epoch, batch = divmod(step, steps_per_epoch)
    if record:
        _log(f"resuming from step {step} (epoch {epoch + 1}, batch {batch})")
    backup = run_dir / BACKUP
    checkpoint = StepCheckpoint(
        backup,
        steps_per_epoch,
        every_steps=config.runtime.checkpoint_every_steps,
        write=chief,
        delete_on_end=False,
    )
    # The NaN guard goes first: it raises before a bad step could be checkpointed.
    shared = [
        StopOnNonFiniteLoss(steps_per_epoch, backup if chief else None),
        *metric_callbacks,
        checkpoint,
    ]
    if chief:
        shared.append(keras.callbacks.TensorBoard(log_dir=str(run_dir / "logs"), write_graph=False))
    phases = []
    if batch and epoch < epochs:
        phases.append((epoch, epoch + 1, steps_per_epoch - batch))
        epoch += 1
    if epoch < epochs:
        phases.append((epoch, epochs, steps_per_epoch))
    strategy = model.distribute_strategy
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        # Keras 3 builds a distributed model from a batch it averages across replicas with
        # `strategy.reduce`, which fails under MultiWorkerMirroredStrategy with one device
        # per worker ("Attempt to convert a value (PerReplica ...)"). Build it from one
        # local batch instead, once, and skip Keras's own attempt.
        with strategy.scope():
            model._symbolic_build(data_batch=next(iter(train_data().take(1))))
        model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
        # Its multi-worker "mean" of the logged values reduces along axis 0, which a scalar
        # lacks: give it each value as a vector of one.
        model.train_step = _logs_as_vectors(model.train_step)
        model.test_step = _logs_as_vectors(model.test_step)
    for phase, (first_epoch, end_epoch, steps) in enumerate(phases):
        # A run resumed from a checkpoint continues its history; one that starts at step 0
        # (also in a folder an earlier attempt left without a checkpoint) starts it afresh.
        history_log = keras.callbacks.CSVLogger(
            str(run_dir / "history.csv"), append=bool(step) or phase > 0
        )
        model.fit(
            train_data().skip(first_epoch * steps_per_epoch + (steps_per_epoch - steps)),
            validation_data=validation_data,
            initial_epoch=first_epoch,
            epochs=end_epoch,
            steps_per_epoch=steps,
            callbacks=[*shared, history_log, *(callbacks or [])],
            shuffle=False,  # the tf.data pipeline shuffles, seeded
            verbose=verbose,
        )
    if chief:
        shutil.rmtree(backup, ignore_errors=True)


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
    chief = is_chief()
    if chief:
        run_dir = Path(run_dir) if run_dir is not None else resolve_run_dir(config)
    else:
        # Other workers train in step with the chief but write nothing the user keeps.
        run_dir = Path(tempfile.mkdtemp(prefix="kcnn-worker-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    resuming = latest_checkpoint(run_dir / BACKUP) is not None or (run_dir / BACKUP).exists()
    _log(f"run folder: {run_dir}" + (" (resuming)" if resuming else ""))
    if chief:
        save_config(config, run_dir / "config.yaml")
    if strategy.num_replicas_in_sync > 1 or config.runtime.strategy != "auto":
        kind = (
            "MultiWorkerMirroredStrategy"
            if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            else type(strategy).__name__
        )
        _log(
            f"strategy: {kind} with {strategy.num_replicas_in_sync} replica(s); "
            f"global batch {config.data.batch_size}"
        )

    keras.utils.set_random_seed(config.runtime.seed)
    if config.runtime.deterministic:
        tf.config.experimental.enable_op_determinism()
    previous_policy = keras.config.dtype_policy()
    if config.runtime.mixed_precision:
        keras.config.set_dtype_policy("mixed_float16")

    task = TASKS[config.task]
    dataset = load_data(config.data, seed=config.runtime.seed, task=config.task)
    (x_train, y_train), validation = split_validation(
        dataset.x_train, dataset.y_train, config.data.validation_fraction, config.runtime.seed
    )
    _log(
        f"data: {dataset.name}, {len(x_train)} train / "
        f"{0 if validation is None else len(validation[0])} validation / "
        f"{len(dataset.x_test)} test images of shape {dataset.x_train.shape[1:]}"
        + (f", {len(dataset.class_names)} classes" if dataset.class_names else "")
    )
    batch_size = config.data.batch_size

    # One endless, seeded stream of batches: epoch k is the k-th reshuffle. Each fit call
    # gets a freshly built stream (a dataset object's reshuffle state advances with every
    # iterator made from it), skipped to its first step: the position after `step` batches
    # is the same in a resumed process as in an uninterrupted one.
    def train_data():
        data = task.make_dataset(
            dataset,
            x_train,
            y_train,
            batch_size,
            shuffle=True,
            seed=config.runtime.seed,
            augment=config.data.augment,
        ).repeat()
        return _shard_by_data(data) if multi_worker else data

    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    validation_data = None
    if validation is not None:
        validation_data = task.make_dataset(dataset, *validation, batch_size)
    if multi_worker and validation_data is not None:
        validation_data = _shard_by_data(validation_data)

    steps_per_epoch = config.train.steps_per_epoch or int(np.ceil(len(x_train) / batch_size))
    try:
        with strategy.scope():
            model = build_model(config, dataset.x_train.shape[1:], len(dataset.class_names))
            if config.runtime.sync_batch_norm:
                synchronize_batch_norm(model)
            transfer_record = apply_transfer(model, config.model)
            # Auxiliary classifiers (GoogLeNet) add to the loss in training only; evaluation,
            # the saved model and the exports are the main output alone.
            training_model = model
            if auxiliary_output_names(model):
                training_model = AuxiliaryLossModel(model, config.train.aux_loss_weight)
                model = main_output_model(model)
                _log(
                    f"auxiliary outputs {auxiliary_output_names(training_model.network)} add "
                    f"to the training loss with weight {config.train.aux_loss_weight}"
                )
            training_model.compile(
                optimizer=_optimizer(config.train, steps_per_epoch),
                loss=task_loss(task, config.train, model),
                metrics=task.metrics(len(dataset.class_names), config.train),
                jit_compile=config.runtime.jit_compile,
            )
            record = restore(training_model, run_dir / BACKUP)
        _fit(
            training_model,
            train_data,
            validation_data,
            config,
            run_dir,
            steps_per_epoch,
            record,
            callbacks,
            verbose,
            chief,
            task_callbacks(task, model, dataset, validation, config),
        )
        if strategy is not tf.distribute.get_strategy():
            model = _undistributed_copy(model)
    finally:
        keras.config.set_dtype_policy(previous_policy)
    if not chief:
        _log(f"final weights sha256: {weights_fingerprint(model)}")
        shutil.rmtree(run_dir, ignore_errors=True)
        return run_dir
    _log(f"final weights sha256: {weights_fingerprint(model)}")
    train_seconds = time.time() - started

    metrics, figures = task.evaluate(model, dataset, batch_size, config.train)
    with atomic_path(run_dir / "model.keras") as temporary:
        model.save(temporary)
    history = read_history(run_dir)
    save_figure(plot_training_curves(history, title=config.name), run_dir / "curves.png")
    for file_name, figure in figures.items():
        save_figure(figure, run_dir / file_name)
    (run_dir / "class_names.json").write_text(json.dumps(list(dataset.class_names)))

    try:
        export_run(model, run_dir, config, dataset)
    except (ExportError, ExportParityError) as error:
        raise type(error)(
            f"{error}. The trained model is kept in {run_dir / 'model.keras'}; "
            f"`kcnn export {run_dir}` runs the export again."
        ) from error
    metrics.update(
        {
            "dataset": dataset.name,
            "epochs": len(next(iter(history.values()))),
            "train_seconds": round(train_seconds, 1),
            "total_seconds": round(time.time() - started, 1),
            "params": int(model.count_params()),
            **transfer_record,
        }
    )
    _write_json(run_dir / FINISHED_MARKER, metrics)
    _log(f"{task.summary(metrics)} ({metrics['total_seconds']:.0f} s)")
    _log(f"wrote {run_dir}/: " + ", ".join(sorted(p.name for p in run_dir.iterdir())))
    return run_dir


def load_run(run_dir):
    """Loads the config and the trained model of a finished run folder."""
    run_dir = Path(run_dir)
    model_path = run_dir / "model.keras"
    if not model_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a finished kcnn run: no model.keras in it.")
    config = load_config(run_dir / "config.yaml")
    return config, keras.saving.load_model(model_path)


def evaluate(run_dir):
    """Re-evaluates a finished run on its test split; writes and returns `evaluation.json`."""
    config, model = load_run(run_dir)
    dataset = load_data(config.data, seed=config.runtime.seed, task=config.task)
    metrics, _ = TASKS[config.task].evaluate(model, dataset, config.data.batch_size, config.train)
    _write_json(Path(run_dir) / "evaluation.json", metrics)
    return metrics


def export(run_dir, quantization=None, allow_flex=None, int8_io=None):
    """Exports a finished run again (e.g. with other quantizations); see `export_run`."""
    config, model = load_run(run_dir)
    dataset = load_data(config.data, seed=config.runtime.seed, task=config.task)
    return export_run(
        model,
        run_dir,
        config,
        dataset,
        quantization=quantization,
        allow_flex=allow_flex,
        int8_io=int8_io,
    )
