"""Task models: a backbone plus the head, losses and metrics of one task."""

from kcnn.tasks.classification import build_classifier

__all__ = ["build_classifier"]
