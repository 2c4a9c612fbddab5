"""The one-line progress messages of a run: `[kcnn] ...`, prefixed per worker process."""

import os


def log(message):
    """Prints `[kcnn] message` (after `KCNN_WORKER_PREFIX`, set for multi-worker runs)."""
    prefix = os.environ.get("KCNN_WORKER_PREFIX", "")
    print(f"{prefix}[kcnn] {message}", flush=True)
