"""Every notebook runs top to bottom (small-size switch on), its cells raise nothing, and the
key numbers it prints say that it did what it describes."""

import ast
import os
import re
from pathlib import Path

import nbformat
import pytest
from jupyter_client import KernelManager
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))
# The small-mode detector (64x64 scenes, levels P2-P4, 12 epochs) measured 0.63 mAP@.5 on
# its 100 test scenes (0.56 at 10 epochs, 0.72 at 15); an untrained one scores about 0.
MIN_SMALL_DETECTION_MAP50 = 0.5
# Notebooks that set the process up (logical CPU devices must be configured before TensorFlow
# starts) run in a kernel of their own; the others share one kernel, which saves a kernel
# start and TensorFlow's import per notebook. Each notebook starts there from an empty
# namespace, a cleared Keras session, no open figure and a folder of its own (FRESH_START),
# so a name it uses without defining it still fails.
OWN_KERNEL = {"distributed_and_export.ipynb"}
FRESH_START = """\
%reset -f
import os as _os, sys as _sys
if "keras" in _sys.modules:
    _sys.modules["keras"].backend.clear_session()
if "matplotlib.pyplot" in _sys.modules:
    _sys.modules["matplotlib.pyplot"].close("all")
_os.chdir({folder!r})
del _os, _sys
"""


def _number(outputs, label):
    """The first number printed after `label` (a regular expression)."""
    match = re.search(label + r"\s*([-+0-9.e]+)", outputs)
    assert match, f"no line matching {label!r} in the output:\n{outputs[-3000:]}"
    return float(match.group(1).rstrip("."))


def check_architecture_search(outputs):
    assert _number(outputs, r"\btrials:") == 4
    assert "front is non-dominated: True" in outputs
    assert "every other trial is dominated: True" in outputs
    assert "front is Optuna's best_trials: True" in outputs
    assert _number(outputs, "baseline MACs:") == _number(outputs, "baseline MACs from the formula:")
    assert _number(outputs, "baseline parameters:") == _number(
        outputs, "baseline parameters from the formula:"
    )
    # Ten classes (chance 0.1), one epoch each: small mode measured 0.73 for the baseline and
    # 0.89 for the best of the 4 trials.
    assert _number(outputs, "baseline validation accuracy:") >= 0.5
    assert _number(outputs, "best validation accuracy:") >= 0.6


def check_arithmetic_and_layers(outputs):
    assert _number(outputs, "receptive field: analysis") == _number(
        outputs, r"analysis \S+ measured"
    )
    assert _number(outputs, "separable / standard MACs:") == pytest.approx(
        _number(outputs, r"1/N \+ 1/k\^2 ="), abs=1e-4
    )
    assert "hole shrinks as predicted: True" in outputs
    assert "zeros elsewhere: True" in outputs
    assert _number(outputs, r"max \|deformable - dilated conv\|:") < 1e-4
    assert _number(outputs, r"max \|layer - function\|:") < 1e-5


def check_classification(outputs):
    assert _number(outputs, "test accuracy:") >= 0.8
    assert _number(outputs, r"max \|x_adv - x\|:") <= 0.15 + 1e-6
    flipped, random_flipped = _number(outputs, "fgsm flipped:"), _number(outputs, "random signs:")
    assert flipped > 0.5 and flipped > 3 * random_flipped
    before = _number(outputs, "mean activation of level1_conv2_act:")
    assert _number(outputs, r"mean activation of level1_conv2_act: \S+ ->") > before


def check_segmentation(outputs):
    baseline = _number(outputs, "background everywhere: mean IoU")
    # Small mode (6 epochs) measured 0.32 / 0.33 mean IoU for U-Net / SegNet against 0.17.
    for model in ("unet", "segnet"):
        assert _number(outputs, f"{model} test mean IoU:") > baseline + 0.1
        assert _number(outputs, f"{model} test mean IoU: \\S+ pixel accuracy:") > _number(
            outputs, r"background everywhere: mean IoU \S+ pixel accuracy"
        )


def check_inpainting(outputs):
    assert outputs.count("all inside: True") == 6 and "all inside: False" not in outputs
    black = _number(outputs, "holes left black: PSNR")
    # Small mode (3 epochs) measured 22.1 / 19.8 dB (pconv / conv) against 12.4 dB black.
    for model in ("pconv", "conv"):
        assert _number(outputs, f"{model} test PSNR:") > black + 3.0
        assert 0 < _number(outputs, rf"{model} test PSNR: \S+ SSIM:") <= 1
    assert _number(outputs, "biharmonic test PSNR:") > black + 3.0


def check_detection(outputs):
    map50 = _number(outputs, r"test mAP@\.5:")
    assert map50 >= MIN_SMALL_DETECTION_MAP50
    assert 0 < _number(outputs, r"test mAP@\[\.5:\.95\]:") <= map50
    assert "LiteRT matches Keras: True" in outputs
    assert _number(outputs, r"max box difference \(px\):") < 0.05


def check_distributed_and_export(outputs):
    assert _number(outputs, "replicas in sync:") == 2
    assert _number(outputs, "test accuracy:") >= 0.9
    assert _number(outputs, r"max \|SavedModel - Keras\|:") < 1e-5
    assert _number(outputs, "fp32 max abs error:") < 1e-4
    # A tiny model: the int8 drop is reported, not held to the export tolerance.
    assert _number(outputs, "int8 accuracy drop:") <= 0.1


def check_visualisation(outputs):
    assert _number(outputs, r"largest \|projection\| outside the receptive field:") == 0.0
    # The style term falls at least tenfold from the content image's (issue bar; measured
    # about 1000x in small mode).
    assert _number(outputs, r"style loss: content image \S+ -> result \S+ \(") >= 10
    assert _number(outputs, r"test accuracy \(1000 images\):") >= 0.6


CHECKS = {
    "architecture_search.ipynb": check_architecture_search,
    "arithmetic_and_layers.ipynb": check_arithmetic_and_layers,
    "classification.ipynb": check_classification,
    "detection.ipynb": check_detection,
    "distributed_and_export.ipynb": check_distributed_and_export,
    "inpainting.ipynb": check_inpainting,
    "segmentation.ipynb": check_segmentation,
    "visualisation.ipynb": check_visualisation,
}


def test_there_are_notebooks():
    assert NOTEBOOKS


def test_every_notebook_has_its_readme_picture():
    pictures = Path(__file__).parents[1] / "docs" / "notebooks"
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        tagged = [c for c in notebook.cells if "readme-picture" in c.metadata.get("tags", [])]
        assert len(tagged) == 1 and tagged[0].cell_type == "code", path.name
        picture = pictures / f"{path.stem}.png"
        assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", picture
        assert f"docs/notebooks/{path.stem}.png" in readme, path.name


def _first_import_of(notebook, packages):
    """The top-level package of the first `import` of one of `packages` in `notebook`."""
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        source = "\n".join(
            line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!"))
        )
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                if name.split(".")[0] in packages:
                    return name.split(".")[0]
    return None


def test_notebooks_import_kcnn_before_tensorflow():
    # `import kcnn` turns TensorFlow's oneDNN CPU kernels on only if TensorFlow is not loaded
    # yet; `make notebooks` (unlike the tests) does not set TF_ENABLE_ONEDNN_OPTS itself.
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        assert _first_import_of(notebook, {"kcnn", "keras", "tensorflow"}) == "kcnn", path.name


def test_notebooks_are_stored_without_outputs():
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, path.name


@pytest.fixture(scope="module")
def shared_kernel(tmp_path_factory):
    """One small-mode kernel for the notebooks not in OWN_KERNEL."""
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(
        env={**os.environ, "KCNN_NOTEBOOK_SMALL": "1"}, cwd=str(tmp_path_factory.mktemp("kernel"))
    )
    yield manager
    manager.shutdown_kernel(now=True)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_runs(path, request, monkeypatch, tmp_path):
    assert path.name in CHECKS, f"add a check of what {path.name} prints to CHECKS"
    monkeypatch.setenv("KCNN_NOTEBOOK_SMALL", "1")
    notebook = nbformat.read(path, as_version=4)
    shared = path.name not in OWN_KERNEL
    if shared:
        manager = request.getfixturevalue("shared_kernel")
        if not manager.is_alive():  # a notebook before this one crashed the kernel
            manager.restart_kernel(now=True)
        notebook.cells.insert(
            0, nbformat.v4.new_code_cell(FRESH_START.format(folder=str(tmp_path)))
        )
        client = NotebookClient(notebook, timeout=600, km=manager)
    else:
        client = NotebookClient(
            notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
        )
    try:
        client.execute()
    finally:
        # The shared kernel lives on; only this notebook's client channels close.
        if shared and client.kc is not None:
            client.kc.stop_channels()
    outputs = "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )
    CHECKS[path.name](outputs)
