"""Each figure function returns a Figure whose panels show the arrays it was given, and
save_figure writes a PNG that reads back."""

import keras
import matplotlib.figure
import numpy as np
import PIL.Image
import pytest

from kcnn.backbones import build_backbone
from kcnn.tasks import build_classifier
from kcnn.viz import (
    layer_output,
    plot_adversarial,
    plot_deep_dream,
    plot_embedding,
    plot_feature_maps,
    plot_filters,
    plot_neighbours,
    plot_saliency,
    save_figure,
)


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    backbone = build_backbone("plain_cnn", input_shape=(8, 8, 3), filters=(6, 10))
    return build_classifier(backbone, num_classes=3)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((6, 8, 8, 3)).astype("float32")


def _shown_panels(figure):
    return [axis for axis in figure.axes if axis.images]


def _saves_a_png(figure, path):
    save_figure(figure, path)
    with PIL.Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) > 100


def test_filters_one_panel_per_filter_rgb_for_three_input_channels(model, tmp_path):
    figure = plot_filters(model)  # first conv layer: 3x3x3 kernels, 6 filters
    assert isinstance(figure, matplotlib.figure.Figure)
    panels = _shown_panels(figure)
    assert len(panels) == 6
    kernel = np.asarray(model.get_layer("plain_cnn").get_layer("level0_conv1").kernel)
    shown = panels[2].images[0].get_array()
    expected = (kernel[..., 2] - kernel[..., 2].min()) / np.ptp(kernel[..., 2])
    np.testing.assert_allclose(shown, expected, atol=1e-6)
    grey = plot_filters(model, "level1_conv2")
    assert len(_shown_panels(grey)) == 10 and grey.axes[0].images[0].get_array().ndim == 2
    _saves_a_png(figure, tmp_path / "filters.png")
    with pytest.raises(ValueError, match="`layer_name`='pool' must name a conv layer"):
        plot_filters(model, "pool")


def test_feature_maps_show_the_layer_output(model, images, tmp_path):
    figure = plot_feature_maps(model, images[0], "level1_conv1_act", max_maps=8)
    panels = _shown_panels(figure)
    assert len(panels) == 8
    maps = layer_output(model, images[:1], "level1_conv1_act")[0]
    np.testing.assert_allclose(panels[5].images[0].get_array(), maps[..., 5], atol=1e-6)
    assert len(_shown_panels(plot_feature_maps(model, images[0], "level0_conv1"))) == 6
    _saves_a_png(figure, tmp_path / "maps.png")
    with pytest.raises(ValueError, match="must name a layer with a .batch, height, width"):
        plot_feature_maps(model, images[0], "pool")


def test_saliency_overlays_one_panel_per_map(images, tmp_path):
    maps = {"a": np.zeros((8, 8)), "b": np.arange(64.0).reshape(8, 8)}
    figure = plot_saliency(images[0], maps, title="explained")
    assert [axis.get_title() for axis in figure.axes] == ["image", "a", "b"]
    np.testing.assert_allclose(figure.axes[2].images[1].get_array(), maps["b"] / 63.0)
    _saves_a_png(figure, tmp_path / "saliency.png")
    with pytest.raises(ValueError, match=r"Map 'a' must have the image's size \(8, 8\)"):
        plot_saliency(images[0], {"a": np.zeros((4, 4))})


def test_embedding_one_colour_group_per_class(tmp_path):
    points = np.random.default_rng(0).normal(size=(30, 2))
    labels = np.arange(30) % 3
    figure = plot_embedding(points, labels, ["a", "b", "c"])
    groups = figure.axes[0].collections
    assert len(groups) == 3
    np.testing.assert_allclose(groups[1].get_offsets(), points[labels == 1])
    assert [text.get_text() for text in figure.axes[0].get_legend().get_texts()] == ["a", "b", "c"]
    _saves_a_png(figure, tmp_path / "embedding.png")
    with pytest.raises(ValueError, match=r"`points` must be \(N, 2\) with one label each"):
        plot_embedding(points, labels[:5])


def test_neighbours_one_row_per_query_and_space(images, tmp_path):
    neighbours = {"feature space": np.array([[1, 2], [0, 3]]), "pixel space": [[4, 5], [5, 4]]}
    figure = plot_neighbours(
        images[:2], images, neighbours, labels=[0, 0, 1, 1, 2, 2], query_labels=[0, 1]
    )
    assert len(_shown_panels(figure)) == 2 * 2 * 3
    first_row = figure.axes[:3]
    np.testing.assert_allclose(first_row[2].images[0].get_array(), images[2], atol=1e-6)
    assert first_row[1].title.get_color() == "green" and first_row[2].title.get_color() == "red"
    _saves_a_png(figure, tmp_path / "neighbours.png")


def test_adversarial_and_deep_dream(images, tmp_path):
    adversarial = np.clip(images + 0.05, 0, 1)
    figure = plot_adversarial(images[:3], adversarial[:3], [0, 1, 2], [0, 2, 2], ["x", "y", "z"])
    titles = [axis.get_title() for axis in figure.axes]
    assert titles[:3] == ["predicted x", "perturbation, max 0.050", "predicted x"]
    assert figure.axes[5].title.get_color() == "red" and figure.axes[2].title.get_color() == "black"
    _saves_a_png(figure, tmp_path / "adversarial.png")
    dream = plot_deep_dream(images[0], adversarial[0], "level1_conv1")
    assert len(dream.axes) == 3 and dream.axes[1].get_title() == "dreamed (level1_conv1)"
    _saves_a_png(dream, tmp_path / "dream.png")
