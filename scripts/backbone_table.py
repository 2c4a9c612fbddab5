"""Prints README's backbone table: every name of `kcnn.backbones.BACKBONES` with its levels
(channels), parameters and MACs at 224x224, counted by `kcnn.analysis.analyze` (what
`kcnn analyze` prints).

    .venv/bin/python scripts/backbone_table.py
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from kcnn.analysis import analyze  # noqa: E402
from kcnn.backbones import BACKBONES, build_backbone, sorted_levels  # noqa: E402

SIZE = 224


def main():
    print(f"| backbone | levels (channels) | params | MACs at {SIZE}x{SIZE} |")
    print("| --- | --- | --- | --- |")
    for name in BACKBONES:
        backbone = build_backbone(name, (SIZE, SIZE, 3))
        analysis = analyze(backbone)
        if analysis.total_params != backbone.count_params():
            raise RuntimeError(f"{name}: analyze and Keras disagree on the parameter count")
        levels = ", ".join(
            f"{key} ({backbone.output[key].shape[-1]})" for key in sorted_levels(backbone.output)
        )
        print(
            f"| `{name}` | {levels} | {analysis.total_params:,} | "
            f"{analysis.total_macs / 1e9:.2f} G |"
        )


if __name__ == "__main__":
    main()
