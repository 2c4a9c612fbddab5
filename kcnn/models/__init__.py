"""Architectures built on kcnn backbones; see `kcnn.tasks` for task heads."""
