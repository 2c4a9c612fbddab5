"""Executes the notebooks and saves, for each, the figure of its cell tagged `readme-picture`
as `docs/notebooks/<notebook>.png` (the pictures README shows). Notebooks are not written back.

    python scripts/notebook_pictures.py                 # all notebooks, full size
    KCNN_NOTEBOOK_SMALL=1 python scripts/notebook_pictures.py notebooks/inpainting.ipynb
"""

import argparse
import base64
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
TAG = "readme-picture"


def picture(notebook):
    """The first PNG output of the tagged cell of an executed notebook."""
    for cell in notebook.cells:
        if TAG in cell.get("metadata", {}).get("tags", []):
            images = [
                o["data"]["image/png"] for o in cell.outputs if "image/png" in o.get("data", {})
            ]
            if not images:
                raise RuntimeError(f"the cell tagged {TAG!r} drew no figure")
            return base64.b64decode(images[0])
    raise RuntimeError(f"no cell is tagged {TAG!r}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "notebooks")
    arguments = parser.parse_args()
    paths = arguments.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    arguments.output.mkdir(parents=True, exist_ok=True)
    for path in paths:
        start = time.perf_counter()
        notebook = nbformat.read(path, as_version=4)
        NotebookClient(
            notebook,
            timeout=3600,
            kernel_name="python3",
            resources={"metadata": {"path": str(path.parent)}},
        ).execute()
        target = arguments.output / f"{path.stem}.png"
        target.write_bytes(picture(notebook))
        print(f"{path.name}: {target} ({time.perf_counter() - start:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
