"""Fault tolerance: atomic step checkpoints that a killed run resumes from, and a NaN guard.

Keras's `BackupAndRestore` writes `latest.weights.h5` and `training_metadata.json` in place
(a SIGKILL during the write leaves a half-written file that the next run trusts) and, when it
saves mid-epoch, restarts the interrupted epoch from its first batch on the mid-epoch
weights. `StepCheckpoint` instead writes each checkpoint into a fresh folder and then
switches one pointer file with `os.replace`, so a checkpoint is either complete or never
seen; it records the global step, so the trainer resumes from exactly the next batch.

Layout of the backup folder:

    backup/
      latest.json        {"step": 120, "epoch": 2, "batch": 15, "folder": "step-00000120"}
      step-00000120/     state.weights.h5 (model and optimizer variables, incl. the step)
                         random_state.npz (seed-generator states of dropout etc.)
                         metric_state.npz (the epoch's running metrics: loss, accuracy ...)
"""

import json
import math
import os
import shutil
import signal
import tempfile
import threading
import zipfile
from pathlib import Path

import h5py
import keras
import numpy as np

POINTER = "latest.json"
STATE = "state.weights.h5"
RANDOM_STATE = "random_state.npz"
METRIC_STATE = "metric_state.npz"


def _random_state_variables(model):
    """The model's variables that `save_weights` leaves out: the seed-generator states of
    dropout and other random layers. Without them a resumed run would draw the dropout
    masks of step 0 again."""
    saved = {id(weight) for weight in model.weights}
    return [variable for variable in model.variables if id(variable) not in saved]


def _metric_variables(model):
    """The variables of the model's training metrics (the loss tracker's total and count,
    accuracy's ...): what an epoch's logged values are averaged from."""
    return [variable for metric in model.metrics for variable in metric.variables]


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite, or diverged; the last good checkpoint is kept."""


class TrainingInterruptedError(RuntimeError):
    """Training was interrupted (Ctrl-C); the last checkpoint is kept for a resume."""


class InterruptBetweenSteps(keras.callbacks.Callback):
    """Delivers Ctrl-C as a `KeyboardInterrupt` at the next batch boundary.

    Python raises `KeyboardInterrupt` from SIGINT wherever the interpreter is, including in
    the middle of a C-API call that TensorFlow's step makes; there it can surface as a
    `SystemError` ("bad argument to internal function") instead, which no `except
    KeyboardInterrupt` catches. Inside this context manager SIGINT only sets a flag, and
    the callback raises at the end of the current training or validation batch; a second
    Ctrl-C raises at once. Outside the main thread, or when the user installed their own
    SIGINT handler, nothing changes.
    """

    def __init__(self):
        super().__init__()
        self.interrupted = False
        self._previous = None

    def __enter__(self):
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc_info):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        return False

    def _on_sigint(self, signum, frame):
        if self.interrupted:  # the second Ctrl-C does not wait
            raise KeyboardInterrupt
        self.interrupted = True

    def _raise_if_interrupted(self, *args, **kwargs):
        if self.interrupted:
            raise KeyboardInterrupt

    on_train_batch_end = on_test_batch_end = on_epoch_end = _raise_if_interrupted


def _step_of(folder):
    return int(folder.name[len("step-") :])


def _readable(folder):
    """Whether a step folder holds a complete checkpoint: a state file HDF5 can open (a file
    cut short by a crash cannot be) and, when present, a loadable random-state file."""
    try:
        with h5py.File(folder / STATE, "r"):
            pass
        if (folder / RANDOM_STATE).is_file():
            with np.load(folder / RANDOM_STATE) as values:
                for name in values.files:
                    values[name]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return False
    return True


def _record(folder):
    return {"step": _step_of(folder), "folder": folder.name}


def latest_checkpoint(directory, log=None):
    """Returns the record (dict with "step" and "folder", and "epoch", "batch" when the
    pointer file gave them) of the newest complete checkpoint, or None when there is none.

    The pointer file names the newest checkpoint. When it is damaged, or names a folder whose
    state file is missing or cut short, the newest complete step folder is used instead and
    `log` (when given) says so.

    Raises:
        ValueError: if the folder holds checkpoints and none of them can be read (named).
    """
    directory = Path(directory)
    pointer = directory / POINTER
    candidates = sorted(directory.glob("step-*"), key=_step_of, reverse=True)
    if not pointer.is_file() and not candidates:
        return None
    problem = None
    if pointer.is_file():
        try:
            record = json.loads(pointer.read_text(encoding="utf-8"))
            folder = directory / str(record["folder"])
            if _readable(folder):
                return record
            problem = f"{folder / STATE} is missing or damaged"
        except (ValueError, KeyError, TypeError) as error:
            problem = f"the checkpoint pointer {pointer} is damaged ({error})"
            folder = None
        candidates = [c for c in candidates if c != folder]
    for candidate in candidates:
        if _readable(candidate):
            if log is not None and problem is not None:
                log(f"{problem}; resuming from the newest complete checkpoint, {candidate.name}")
            return _record(candidate)
    raise ValueError(
        f"No readable checkpoint in {directory}"
        + (f": {problem}" if problem else "")
        + ". Remove that folder to train from the start."
    )


def build_optimizer_slots(model):
    """Creates the variables of a compiled `model`'s optimizer (zeros) if it has none yet.

    Before `fit`, so that they are not created inside the traced training step, which
    TensorFlow then traces a second time; before a restore, which loads into them.
    """
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)


def restore(model, directory, log=None):
    """Loads the latest complete checkpoint of `directory` into a compiled `model`.

    The checkpoint is verified before anything is deleted (see `latest_checkpoint`); then
    what an interrupted write left behind (temporary folders, damaged or older checkpoints)
    is removed. Returns the record, or None when there is nothing to resume.
    """
    directory = Path(directory)
    record = latest_checkpoint(directory, log)
    if record is None:
        if directory.is_dir():
            for path in directory.iterdir():
                _remove(path)
        return None
    build_optimizer_slots(model)
    folder = directory / record["folder"]
    model.load_weights(folder / STATE)
    if (folder / RANDOM_STATE).is_file():
        with np.load(folder / RANDOM_STATE) as values:
            states = [values[f"arr_{i}"] for i in range(len(values.files))]
        variables = _random_state_variables(model)
        if len(states) != len(variables):
            raise ValueError(
                f"The checkpoint in {folder} holds {len(states)} random states; the model has "
                f"{len(variables)}. It was written for another model."
            )
        for variable, state in zip(variables, states, strict=True):
            variable.assign(state)
    _point_to(directory, record)
    for path in directory.iterdir():
        if path.name not in (POINTER, record["folder"]):
            _remove(path)
    if (folder / METRIC_STATE).is_file():
        with np.load(folder / METRIC_STATE) as values:
            record["metric_state"] = [values[f"arr_{i}"] for i in range(len(values.files))]
    return record


class RestoreMetricState(keras.callbacks.Callback):
    """Adds a checkpoint's running metrics back into the epoch a run resumes in, so its
    logged loss and metrics average all of its batches, as in a run never interrupted.

    Keras builds the compiled metrics at the first training step, after `fit` reset them,
    so the state is added after that step: a metric's state is a sum (total and count,
    a confusion matrix ...), and the sum of the checkpoint's and the new batches' is what an
    uninterrupted epoch holds. The step's logs are updated in place, so the callbacks after
    this one see the epoch's values.
    """

    def __init__(self, states):
        super().__init__()
        self.states = states

    def on_train_batch_end(self, batch, logs=None):
        if self.states is None:
            return
        states, self.states = self.states, None
        variables = _metric_variables(self.model)
        if len(variables) != len(states):
            return
        for variable, state in zip(variables, states, strict=True):
            variable.assign_add(np.asarray(state, dtype=variable.dtype))
        if logs is not None:
            for name, value in self.model.get_metrics_result().items():
                if name in logs:
                    logs[name] = float(np.asarray(value).reshape(-1)[0])


def _point_to(directory, record):
    """Switches the pointer file to `record` atomically."""
    pointer = directory / f".{POINTER}.tmp"
    pointer.write_text(json.dumps(record), encoding="utf-8")
    with open(pointer, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(pointer, directory / POINTER)
    _fsync_folder(directory)


def _remove(path):
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _fsync_folder(path):
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class StepCheckpoint(keras.callbacks.Callback):
    """Saves model and optimizer state every `every_steps` steps and at each epoch end.

    Each save writes `step-<global step>/state.weights.h5` into a temporary folder, renames
    it into place, then replaces `latest.json`; older step folders are removed afterwards.
    The global step is the optimizer's iteration count, which the weights file carries, so a
    resumed run knows exactly which batch comes next.

    Args:
        directory: str or Path. The backup folder (created when needed).
        steps_per_epoch: int. Steps in one epoch, to record (epoch, batch).
        every_steps: int or None. Save every this many steps; None saves at epoch ends only.
        write: bool. False on non-chief workers of a multi-worker run: they save too (saving
            may need their collective ops) but into a scratch folder that is removed.
        delete_on_end: bool. Remove the folder when training ends normally. Defaults to
            `True`.
    """

    def __init__(
        self, directory, steps_per_epoch, every_steps=None, write=True, delete_on_end=True
    ):
        super().__init__()
        self.directory = Path(directory)
        self.steps_per_epoch = int(steps_per_epoch)
        if every_steps is not None and (not isinstance(every_steps, int) or every_steps < 1):
            raise ValueError(
                "`every_steps` must be a positive int or None. "
                f"Received: every_steps={every_steps!r}"
            )
        self.every_steps = every_steps
        self.write = write
        self.delete_on_end = delete_on_end

    def _step(self):
        return int(self.model.optimizer.iterations.numpy())

    def on_train_batch_end(self, batch, logs=None):
        step = self._step()
        if self.every_steps and step % self.every_steps == 0 and step % self.steps_per_epoch:
            self.save(step)

    def on_epoch_end(self, epoch, logs=None):
        self.save(self._step())

    def save(self, step):
        """Writes the checkpoint of `step` atomically (see the class docstring)."""
        epoch, batch = divmod(step, self.steps_per_epoch)
        # Every worker reads the metrics: a multi-worker metric's value is a collective
        # reduction, which the chief alone would wait on for ever.
        metrics = [np.asarray(v.numpy()) for v in _metric_variables(self.model)]
        if not self.write:
            scratch = Path(tempfile.mkdtemp(prefix="kcnn-worker-checkpoint-"))
            try:
                self.model.save_weights(scratch / STATE)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        folder = f"step-{step:08d}"
        if (self.directory / folder / STATE).is_file():
            return  # already saved at this step (e.g. an epoch end after a step save)
        temporary = Path(tempfile.mkdtemp(prefix=f".{folder}.", dir=self.directory))
        self.model.save_weights(temporary / STATE)
        states = [np.asarray(v.numpy()) for v in _random_state_variables(self.model)]
        np.savez(temporary / RANDOM_STATE, *states)
        np.savez(temporary / METRIC_STATE, *metrics)
        _fsync_folder(temporary)
        os.replace(temporary, self.directory / folder)
        _point_to(self.directory, {"step": step, "epoch": epoch, "batch": batch, "folder": folder})
        # The one before stays too: when the next loss shows these weights diverged,
        # `discard_from` falls back to it.
        steps = sorted(self.directory.glob("step-*"), key=_step_of, reverse=True)
        for path in steps[2:]:
            _remove(path)

    def discard_from(self, step):
        """Removes the checkpoints of `step` and later (weights a diverged loss came from)
        and points to the newest one before; returns its record, or None when none is left."""
        if not self.write or not self.directory.is_dir():
            return None
        kept = None
        for path in sorted(self.directory.glob("step-*"), key=_step_of, reverse=True):
            if _step_of(path) >= step:
                _remove(path)
            elif kept is None and _readable(path):
                kept = _record(path)
                epoch, batch = divmod(kept["step"], self.steps_per_epoch)
                kept.update(epoch=epoch, batch=batch)
        if kept is None:
            (self.directory / POINTER).unlink(missing_ok=True)
        else:
            _point_to(self.directory, kept)
        return kept

    def on_train_end(self, logs=None):
        if self.delete_on_end and self.write:
            shutil.rmtree(self.directory, ignore_errors=True)


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training with `TrainingDivergedError` when the loss is NaN or infinite, or
    diverges: a step's loss above `divergence_factor` times the median of the steps before
    (after `warmup_steps` of them), or non-finite weights at an epoch end.

    The loss of step k is computed with the weights step k - 1 left, so those weights are
    where the divergence shows first: the checkpoints of step k - 1 and later are discarded
    (`StepCheckpoint.discard_from`) and the message names the step of the checkpoint kept,
    or says that none was written yet. Put it before `StepCheckpoint` in the callback list,
    so a diverged step is never saved.

    Keras logs an epoch's running mean of the loss; the loss of one step is recovered from
    two consecutive means (n m_n - (n - 1) m_{n-1}).

    Args:
        steps_per_epoch: int. Steps in one epoch, to name the epoch and batch.
        checkpoint: a `StepCheckpoint` or None.
        divergence_factor: float or None. None checks for non-finite values only.
            Defaults to 1000.
        warmup_steps: int. Steps seen before the divergence check starts. Defaults to 1: a
            first step's loss, from the initial weights, is already a fair reference.
    """

    def __init__(self, steps_per_epoch, checkpoint=None, divergence_factor=1000.0, warmup_steps=1):
        super().__init__()
        self.steps_per_epoch = int(steps_per_epoch)
        self.checkpoint = checkpoint
        self.divergence_factor = divergence_factor
        self.warmup_steps = int(warmup_steps)
        self._losses = []
        self._previous_mean = None
        self._offset = self._pending_offset = 0

    def resume_within_epoch(self, batches_done):
        """The next epoch's running mean already holds `batches_done` batches (its metric
        state came back from a checkpoint)."""
        self._pending_offset = int(batches_done)

    def on_epoch_begin(self, epoch, logs=None):
        self._previous_mean = None
        self._offset, self._pending_offset = self._pending_offset, 0

    def on_train_batch_end(self, batch, logs=None):
        mean = (logs or {}).get("loss")
        if mean is None:
            return
        mean = float(np.asarray(mean).reshape(-1)[0])  # a vector of one in multi-worker runs
        if not math.isfinite(mean):
            self._stop(f"The training loss became {mean}")
        seen = self._offset + batch + 1  # batches in the epoch's running mean
        step_loss = (
            mean if self._previous_mean is None else seen * mean - (seen - 1) * self._previous_mean
        )
        self._previous_mean = mean
        if (
            self.divergence_factor is not None
            and len(self._losses) >= self.warmup_steps
            and step_loss > self.divergence_factor * max(float(np.median(self._losses)), 1e-12)
        ):
            self._stop(
                f"The training loss diverged to {step_loss:.4g} (over {self.divergence_factor:g} "
                f"times the median {float(np.median(self._losses)):.4g} of the steps before; "
                "`train.divergence_factor`)"
            )
        self._losses = (self._losses + [step_loss])[-200:]

    def on_epoch_end(self, epoch, logs=None):
        for weight in self.model.weights:
            if not np.all(np.isfinite(np.asarray(weight))):
                self._stop(f"The weight {weight.path} became non-finite")

    def _stop(self, what):
        step = int(self.model.optimizer.iterations.numpy())
        epoch, in_epoch = divmod(step - 1, self.steps_per_epoch)
        kept = self.checkpoint.discard_from(step - 1) if self.checkpoint is not None else None
        if self.checkpoint is None or not self.checkpoint.write:
            where = ""
        elif kept is None:
            where = " No checkpoint was kept (none was written before the divergence)."
        else:
            where = (
                f" The checkpoint of step {kept['step']}, the last whose weights gave a sane "
                f"loss, is kept in {self.checkpoint.directory}: running the same command "
                "resumes from it."
            )
        raise TrainingDivergedError(
            f"{what} at step {step} (epoch {epoch + 1}, batch {in_epoch + 1}); training "
            f"stopped.{where} Lower `train.learning_rate` or check the data for NaN or "
            "infinite values."
        )
