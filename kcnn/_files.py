"""Writing results so that nothing a user had is lost or left half-written."""

import contextlib
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
