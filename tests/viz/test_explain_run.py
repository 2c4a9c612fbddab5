"""`kcnn explain` on a run trained through `kcnn train`."""

import numpy as np
import PIL.Image
import pytest

from kcnn.cli import main
from kcnn.data import load_digits
from kcnn.training import load_run
from kcnn.viz import explain, load_image_for_model

TINY = [
    "-o",
    "data.name=digits",
    "-o",
    "train.epochs=3",
    "-o",
    "model.backbone_args={filters: [8, 16], convs_per_level: 1}",
    "-o",
    "export.formats=[]",
]


@pytest.fixture(scope="module")
def run_and_image(tmp_path_factory):
    folder = tmp_path_factory.mktemp("explain")
    run_dir = folder / "run"
    assert main(["train", "configs/digits.yaml", "--run-dir", str(run_dir), *TINY]) == 0
    # A test digit saved the way a user would have it: larger, in colour.
    (_, _), (x_test, _) = load_digits()
    digit = PIL.Image.fromarray(x_test[0, ..., 0]).resize((32, 32)).convert("RGB")
    image_path = folder / "digit.png"
    digit.save(image_path)
    return run_dir, image_path


@pytest.mark.parametrize(
    "method, options",
    [
        ("gradcam", ["--layer", "level0_conv1"]),
        ("occlusion", ["--class-index", "3"]),
        ("guided", []),
        ("guided_gradcam", []),
        ("deconvnet", ["--class-index", "3"]),
    ],
)
def test_explain_writes_the_figure_of_the_model_map(
    run_and_image, tmp_path, capsys, method, options
):
    run_dir, image_path = run_and_image
    output = tmp_path / "figures" / f"{method}.png"
    arguments = ["explain", str(run_dir), "--image", str(image_path), "--method", method]
    assert main([*arguments, "--output", str(output), *options]) == 0
    assert capsys.readouterr().out.strip() == str(output)
    with PIL.Image.open(output) as figure:
        assert figure.format == "PNG" and figure.size[0] > 200


def test_the_image_is_read_as_the_run_pipeline_scales_it(run_and_image):
    run_dir, image_path = run_and_image
    _, model = load_run(run_dir)
    image = load_image_for_model(image_path, model)
    assert image.shape == (8, 8, 1) and image.dtype == np.float32
    expected = np.asarray(
        PIL.Image.open(image_path).convert("L").resize((8, 8), PIL.Image.BILINEAR)
    )
    np.testing.assert_allclose(image[..., 0], expected / 255.0, atol=1e-6)
    assert explain(model, image, "gradcam").shape == (8, 8)


def test_bad_arguments_exit_2_with_one_line(run_and_image, tmp_path, capsys):
    run_dir, image_path = run_and_image
    output = str(tmp_path / "out.png")
    base = ["explain", str(run_dir), "--output", output]
    assert main([*base, "--image", str(tmp_path / "none.png"), "--method", "saliency"]) == 2
    assert "kcnn explain: error: Image file" in capsys.readouterr().err
    assert main([*base, "--image", str(image_path), "--method", "saliency", "--layer", "x"]) == 2
    assert (
        "`layer_name` applies to method in ('gradcam', 'guided_gradcam') only"
        in capsys.readouterr().err
    )
    assert main([*base, "--image", str(image_path), "--method", "gradcam", "--layer", "x"]) == 2
    assert "Unknown `layer_name`='x'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main([*base, "--image", str(image_path), "--method", "lime"])
    assert exit_info.value.code == 2
    assert not (tmp_path / "out.png").exists()
