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
"""

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np

POINTER = "latest.json"
STATE = "state.weights.h5"
RANDOM_STATE = "random_state.npz"


def _random_state_variables(model):
    """The model's variables that `save_weights` leaves out: the seed-generator states of
    dropout and other random layers. Without them a resumed run would draw the dropout
    masks of step 0 again."""
    saved = {id(weight) for weight in model.weights}
    return [variable for variable in model.variables if id(variable) not in saved]


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def latest_checkpoint(directory):
    """Returns the pointer record (dict with "step", "epoch", "batch", "folder") or None.

    A pointer to a missing folder (which a correct writer never leaves) is an error, not a
    silent fresh start.
    """
    pointer = Path(directory) / POINTER
    if not pointer.is_file():
        return None
    record = json.loads(pointer.read_text(encoding="utf-8"))
    if not (Path(directory) / record["folder"] / STATE).is_file():
        raise FileNotFoundError(
            f"Checkpoint pointer {pointer} names {record['folder']}, which has no {STATE}."
        )
    return record


def restore(model, directory):
    """Loads the latest checkpoint of `directory` into a compiled `model`.

    Removes what an interrupted write left behind (temporary folders, folders no pointer
    names). Returns the pointer record, or None when there is nothing to resume.
    """
    directory = Path(directory)
    record = latest_checkpoint(directory)
    if directory.is_dir():
        keep = {POINTER, record["folder"]} if record else set()
        for path in directory.iterdir():
            if path.name not in keep:
                _remove(path)
    if record is None:
        return None
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
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
    return record


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
        _fsync_folder(temporary)
        os.replace(temporary, self.directory / folder)
        record = {"step": step, "epoch": epoch, "batch": batch, "folder": folder}
        pointer = self.directory / f".{POINTER}.tmp"
        pointer.write_text(json.dumps(record), encoding="utf-8")
        with open(pointer, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(pointer, self.directory / POINTER)
        _fsync_folder(self.directory)
        for path in self.directory.iterdir():
            if path.name.startswith("step-") and path.name != folder:
                _remove(path)

    def on_train_end(self, logs=None):
        if self.delete_on_end and self.write:
            shutil.rmtree(self.directory, ignore_errors=True)


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raises `TrainingDivergedError` naming the step when the loss is NaN or infinite.

    Put it before `StepCheckpoint` in the callback list: it raises before that batch's
    weights could be saved, so the last checkpoint stays the last good one.

    Args:
        steps_per_epoch: int. Steps in one epoch, to name the epoch and batch.
        backup: str or Path or None. Where the last good checkpoint is (for the message).
    """

    def __init__(self, steps_per_epoch, backup=None):
        super().__init__()
        self.steps_per_epoch = int(steps_per_epoch)
        self.backup = backup

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(float(loss)):
            return
        step = int(self.model.optimizer.iterations.numpy())
        epoch, in_epoch = divmod(step - 1, self.steps_per_epoch)
        where = f" The last good checkpoint is kept in {self.backup}." if self.backup else ""
        raise TrainingDivergedError(
            f"The training loss became {float(loss)} at step {step} (epoch {epoch + 1}, batch "
            f"{in_epoch + 1}); training stopped.{where} Lower `train.learning_rate` or check "
            "the data for NaN or infinite values."
        )
