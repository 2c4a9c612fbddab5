"""The fit stage: optimizer, `model.fit` resumed from a checkpoint, and what a distributed
run needs around it (sharding, synchronized batch norm, the multi-worker workarounds)."""

import hashlib
import shutil

import keras
import numpy as np
import tensorflow as tf

from kcnn._files import atomic_path
from kcnn.ops.batch_norm import MIN_FUSED_EPSILON, fused_batch_norm_training
from kcnn.training.checkpoint import (
    InterruptBetweenSteps,
    RestoreMetricState,
    StepCheckpoint,
    StopOnNonFiniteLoss,
    build_optimizer_slots,
)
from kcnn.training.messages import log
from kcnn.training.run_folder import BACKUP


def build_optimizer(train_config, steps_per_epoch):
    """The optimizer of `train_config` (`adam`, `adamw` or `sgd` with Nesterov momentum 0.9),
    with a cosine schedule after a linear warm-up when `train_config.schedule` is "cosine".

    `train_config.weight_decay` is decoupled weight decay (Loshchilov & Hutter 2019,
    arXiv:1711.05101), Keras's form for `adamw` and `sgd` alike: each step first multiplies
    every weight by `1 - learning_rate * weight_decay` (the scheduled rate). For `sgd` this
    equals PyTorch's coupled L2 of `weight_decay * (1 - momentum)` only roughly; the config
    check refuses a weight decay with `adam`."""
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
    return keras.optimizers.SGD(
        learning_rate,
        momentum=0.9,
        nesterov=True,
        weight_decay=train_config.weight_decay or None,
    )


def shard_by_data(dataset):
    """Shards in-memory data across workers by element (there are no files to split)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def synchronize_batch_norm(model):
    """Makes every `BatchNormalization` layer of `model` compute its batch statistics over all
    replicas: nested ones too, in sub-models and inside custom layers (a block that holds its
    own batch norm). Returns the number of layers changed."""
    changed = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization) and not layer.synchronized:
            layer.synchronized = True
            changed += 1
    return changed


def fuse_batch_norm(model):
    """Makes every Keras `BatchNormalization` layer of `model` (nested ones too) compute its
    training-mode step with TensorFlow's fused kernel (`kcnn.ops.batch_norm`): the same
    values (the same moments, output and moving averages, to float32 rounding) in fewer
    passes over the activations. Returns the number of layers changed.

    A layer keeps Keras's own computation where the fused kernel does not apply: in
    inference mode (so evaluation and every export are unchanged), when it is frozen,
    synchronized across replicas, renormalized, masked, not on 4-D channels-last float32
    input, or its epsilon is below `MIN_FUSED_EPSILON`. Only the layer objects change: a
    saved model holds plain Keras `BatchNormalization` layers.

    Example:

    >>> import keras
    >>> inputs = keras.Input((8, 8, 3))
    >>> x = keras.layers.Conv2D(4, 3)(inputs)
    >>> model = keras.Model(inputs, keras.layers.BatchNormalization()(x))
    >>> fuse_batch_norm(model)
    1
    """
    changed = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if type(layer) is keras.layers.BatchNormalization and not getattr(layer, "_kcnn_fused", 0):
            layer.call = _fused_call(layer, layer.call)
            layer._kcnn_fused = True
            changed += 1
    return changed


def _fused_call(layer, keras_call):
    def call(inputs, training=None, mask=None):
        if (
            training is True
            and layer.trainable
            and mask is None
            and not layer.synchronized
            and not layer.renorm
            and layer.axis in (-1, 3)
            and len(inputs.shape) == 4
            and inputs.dtype == "float32"
            and layer.compute_dtype == "float32"
            and layer.epsilon >= MIN_FUSED_EPSILON
        ):
            outputs, mean, variance = fused_batch_norm_training(
                inputs, layer.gamma, layer.beta, layer.epsilon
            )
            momentum = layer.momentum
            layer.moving_mean.assign(layer.moving_mean * momentum + mean * (1.0 - momentum))
            layer.moving_variance.assign(
                layer.moving_variance * momentum + variance * (1.0 - momentum)
            )
            return outputs
        return keras_call(inputs, training=training, mask=mask)

    return call


def undistributed_copy(model):
    """The trained model rebuilt outside the strategy, for evaluation and export.

    Rebuilt from its own config (not `keras.models.clone_model`, which turns a functional
    subclass such as `kcnn.models.UNet` into a plain functional model), so the copy is of
    the model's class and keeps its facts (`num_classes`, `strides`, ...).
    """
    with tf.distribute.get_strategy().scope():
        copy = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
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


def fit_from_checkpoint(
    model,
    train_data,
    validation_data,
    train_config,
    runtime_config,
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
    epochs = train_config.epochs
    step = record["step"] if record else 0
    epoch, batch = divmod(step, steps_per_epoch)
    if record:
        log(f"resuming from step {step} (epoch {epoch + 1}, batch {batch})")
    backup = run_dir / BACKUP
    checkpoint = StepCheckpoint(
        backup,
        steps_per_epoch,
        every_steps=runtime_config.checkpoint_every_steps,
        write=chief,
        delete_on_end=False,
    )
    # The divergence guard goes first: it raises before a bad step could be checkpointed.
    guard = StopOnNonFiniteLoss(steps_per_epoch, checkpoint, train_config.divergence_factor)
    # An epoch's row of history.csv is written before its epoch-end checkpoint, so a
    # checkpoint never names an epoch whose row is missing; rows past a checkpoint (written
    # before a crash) are dropped when it resumes, since those epochs run again.
    before_log = [guard, *metric_callbacks]
    after_log = [checkpoint]
    if chief:
        after_log.append(
            keras.callbacks.TensorBoard(log_dir=str(run_dir / "logs"), write_graph=False)
        )
        if step:
            _keep_history_before(run_dir / "history.csv", epoch)
    phases = []
    if batch and epoch < epochs:
        phases.append((epoch, epoch + 1, steps_per_epoch - batch))
        epoch += 1
    if epoch < epochs:
        phases.append((epoch, epochs, steps_per_epoch))
    strategy = model.distribute_strategy
    if model.built:
        # Outside a strategy scope Keras would build the optimizer inside the first traced
        # train step, and a `tf.function` that creates variables is traced a second time
        # once they exist: built here (as a resumed run's restore does), the step is traced
        # once, which is most of a short run's start-up. Its slots start at zero either way.
        with strategy.scope():
            build_optimizer_slots(model)
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
    # A resume inside an epoch gets that epoch's running metrics back, so its logged values
    # average all of its batches, as an uninterrupted run's do.
    resumed_metrics = []
    if record and batch and record.get("metric_state") is not None:
        resumed_metrics = [RestoreMetricState(record["metric_state"])]
        guard.resume_within_epoch(batch)
    # Ctrl-C ends the run at a batch boundary, after that step's checkpoint.
    with InterruptBetweenSteps() as interrupt:
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
                callbacks=[
                    *(resumed_metrics if phase == 0 else []),
                    *before_log,
                    history_log,
                    *after_log,
                    *(callbacks or []),
                    interrupt,
                ],
                shuffle=False,  # the tf.data pipeline shuffles, seeded
                verbose=verbose,
            )
    if chief:
        shutil.rmtree(backup, ignore_errors=True)


def _keep_history_before(path, epoch):
    """Rewrites the CSV history at `path` (atomically) with only its rows of epochs before
    `epoch`: the rows a resumed run does not run again."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    epoch_of = [line.split(",", 1)[0].strip() for line in lines[1:]]
    kept = lines[:1] + [
        line
        for line, value in zip(lines[1:], epoch_of, strict=True)
        if value.isdigit() and int(value) < epoch
    ]
    if len(kept) < len(lines):
        with atomic_path(path) as temporary:
            temporary.write_text("".join(kept))
