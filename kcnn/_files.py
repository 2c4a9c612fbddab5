"""Writing results so that nothing a user had is lost or left half-written."""

import contextlib
import csv
import json
import os
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target):
    """Yields a temporary path beside `target`; on success it replaces `target` at once.

    Works for a file or a folder. If the body raises, `target` is left as it was and the
    temporary path is removed.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    temporary = scratch / target.name
    try:
        yield temporary
        if target.is_dir() and not target.is_symlink():
            previous = scratch / f"{target.name}.previous"
            os.replace(target, previous)
            os.replace(temporary, target)
        else:
            os.replace(temporary, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def write_json(path, values):
    """Writes `values` as indented JSON to `path`, atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(values, indent=2), encoding="utf-8")


def read_history_csv(path):
    """Reads a Keras `CSVLogger` file into {metric: [value per epoch]}.

    `CSVLogger` writes "NA" in the `val_` columns of a run without validation data; such
    columns are left out.
    """
    with Path(path).open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return {
        key: [float(row[key]) for row in rows]
        for key in rows[0]
        if key != "epoch" and any(row[key] != "NA" for row in rows)
    }
