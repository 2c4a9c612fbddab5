"""Where a study lives, and how a trial whose process died is failed and run again.

`tune.storage` is None (a SQLite file `study.db` in the study folder: nothing to start), an
SQLAlchemy URL (`sqlite:///path.db`, `postgresql://user:password@host/db`,
`mysql+pymysql://...`) or `journal:PATH` (Optuna's journal file, appended under a file
lock; on a file system every machine mounts, the same file serves them all).

A trial killed with `kill -9` is found in two ways. Database storages run Optuna's
heartbeat: a RUNNING trial whose heartbeat is older than twice `tune.heartbeat_seconds` is
failed by the next trial any worker starts, on any machine. On the machine it ran on, a
trial is failed as soon as `kcnn tune` starts again and finds its process gone (every
trial records its host and process id), for every storage, the journal file included
(Optuna 5's journal storage has no heartbeat). Either way, a killed trial is retried once
with the same parameters, and the retry resumes its training from the killed run's last
checkpoint (see `kcnn.tuning.study`).
"""

import os
import socket
import warnings
from pathlib import Path

import optuna
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

STUDY_FILE = "study.db"
JOURNAL_PREFIX = "journal:"


def storage_url(tune_config, study_dir):
    """The storage of a study: `tune.storage`, or the SQLite file `study.db` in
    `study_dir`."""
    if tune_config.storage is None:
        return f"sqlite:///{(Path(study_dir) / STUDY_FILE).resolve()}"
    return tune_config.storage


def open_storage(tune_config, study_dir):
    """An Optuna storage for `tune.storage` (see the module docstring).

    Raises:
        ValueError: if `tune.storage` is neither an SQLAlchemy URL nor `journal:PATH`.
    """
    url = storage_url(tune_config, study_dir)
    if url.startswith(JOURNAL_PREFIX):
        path = Path(url[len(JOURNAL_PREFIX) :]).expanduser()
        if not path.parent.is_dir():
            raise ValueError(f"`tune.storage` {url!r}: the folder {path.parent} does not exist.")
        return JournalStorage(JournalFileBackend(str(path)))
    if "://" not in url:
        raise ValueError(
            "`tune.storage` must be an SQLAlchemy URL (sqlite:///study.db, "
            "postgresql://user:password@host/db, ...) or journal:PATH. "
            f"Received: {url!r}"
        )
    # SQLite serialises writers with a file lock: let a worker wait for another's write.
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    with warnings.catch_warnings():  # Optuna marks the heartbeat experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=tune_config.heartbeat_seconds,
            grace_period=2 * tune_config.heartbeat_seconds,
            heartbeat_stale_trial_callback=retry_once,
        )


def retry_once(study, trial):
    """Enqueues a failed trial's parameters again, once (a retry is not retried): the new
    trial records `retry_of`, the number of the trial it replaces."""
    if trial.user_attrs.get("retry_of") is not None:
        return
    study.enqueue_trial(
        trial.params,
        user_attrs={
            "retry_of": trial.number,
            "baseline": bool(trial.user_attrs.get("baseline", False)),
        },
    )


def trial_owner():
    """`{"host": ..., "pid": ...}`: what a trial records so a restart can tell it died."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_dead_local_trials(study, log=print):
    """Fails the RUNNING trials of this machine whose process is gone, and retries each
    once (`retry_once`). Returns their numbers."""
    host = socket.gethostname()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = trial.user_attrs.get("pid")
        if trial.user_attrs.get("host") != host or pid is None or _process_alive(pid):
            continue
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        retry_once(study, trial)
        failed.append(trial.number)
    if failed:
        log(
            f"trial(s) {failed} of this machine were killed (process gone): failed, and "
            "retried once from their last checkpoint"
        )
    return failed
