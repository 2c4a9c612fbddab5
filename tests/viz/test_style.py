"""Neural style transfer: the losses against the paper's formulas in float64, the transfer
itself on two real photos with the random texture network, and the argument checks."""

import keras
import matplotlib.figure
import numpy as np
import pytest

from kcnn.data import load_photo
from kcnn.data._imaging import resize_image
from kcnn.viz.style import (
    content_loss,
    plot_style_transfer,
    random_texture_extractor,
    style_loss,
    style_transfer,
)

RNG = np.random.default_rng(0)
STYLE_LAYERS = ["scale_3", "scale_5", "scale_7", "scale_11", "scale_15"]
CONTENT_LAYERS = ["deep"]


def photo(name, size=32):
    """A bundled photo, its centre square resized to `size`, as floats in [0, 1]."""
    picture = load_photo(name)
    side = min(picture.shape[:2])
    top, left = (picture.shape[0] - side) // 2, (picture.shape[1] - side) // 2
    square = picture[top : top + side, left : left + side]
    return resize_image(square, size, size).astype(np.float32) / 255.0


def paper_matrix(features):
    """Gatys et al.'s F^l: `(N, M)`, N feature maps of M positions, for one image."""
    return features.reshape(-1, features.shape[-1]).T.astype(np.float64)


def paper_content_loss(features, content_features):
    """Eq. (1), 1/2 sum (F - P)^2, divided by N M as kcnn documents."""
    f, p = paper_matrix(features), paper_matrix(content_features)
    return 0.5 * np.sum((f - p) ** 2) / f.size


def paper_style_loss(features, style_features):
    """Eq. (4), 1 / (4 N^2 M^2) sum (G - A)^2 with the unnormalised Grams G = F F^T.

    A style image with M' != M positions enters with its Gram rescaled to M positions,
    A M / M' (for M' = M that is the paper's formula as printed)."""
    f, s = paper_matrix(features), paper_matrix(style_features)
    (n, m), m_style = f.shape, s.shape[1]
    gram, style_gram = f @ f.T, (s @ s.T) * m / m_style
    return np.sum((gram - style_gram) ** 2) / (4 * n**2 * m**2)


def luminance_correlation(first, second):
    first, second = first.mean(axis=-1), second.mean(axis=-1)
    return np.corrcoef(first.ravel(), second.ravel())[0, 1]


@pytest.fixture(scope="module")
def extractor():
    return random_texture_extractor()


@pytest.fixture(scope="module")
def probe(extractor):
    """The extractor's style and content layers as float64 arrays, built apart from the code
    under test."""
    model = keras.Model(
        extractor.input,
        [extractor.get_layer(name).output for name in STYLE_LAYERS + CONTENT_LAYERS],
    )

    def features(image):
        outputs = model(np.asarray(image, np.float32)[np.newaxis])
        return [np.asarray(output, np.float64)[0] for output in outputs]

    return features


def test_content_and_style_losses_match_the_papers_formulas():
    features = RNG.normal(0.3, 1.0, (2, 5, 7, 4)).astype(np.float32)
    content_features = RNG.normal(0.0, 1.0, (1, 5, 7, 4)).astype(np.float32)
    same_size = RNG.normal(0.5, 1.0, (1, 5, 7, 4)).astype(np.float32)
    other_size = RNG.normal(0.5, 1.0, (1, 6, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(
        content_loss(features, content_features),
        [paper_content_loss(f, content_features[0]) for f in features],
        rtol=1e-5,
    )
    for style_features in (same_size, other_size):
        np.testing.assert_allclose(
            style_loss(features, style_features),
            [paper_style_loss(f, style_features[0]) for f in features],
            rtol=1e-5,
        )
    assert float(style_loss(same_size, same_size)[0]) == 0.0


def test_style_transfer_lowers_the_style_loss_tenfold_and_keeps_the_content(extractor, probe):
    content, style = photo("chelsea"), photo("brick")
    image, history = style_transfer(
        content, style, extractor, CONTENT_LAYERS, STYLE_LAYERS, steps=200, verbose=0
    )
    assert image.shape == content.shape and image.dtype == np.float32
    assert image.min() >= 0.0 and image.max() <= 1.0
    assert [len(history[key]) for key in ("loss", "content_loss", "style_loss")] == [200] * 3

    *style_targets, _ = probe(style)
    *content_style_features, content_target = probe(content)
    *result_style_features, result_content = probe(image)

    def mean_style_loss(features):
        pairs = zip(features, style_targets, strict=True)
        return np.mean([paper_style_loss(f, a) for f, a in pairs])

    before, after = mean_style_loss(content_style_features), mean_style_loss(result_style_features)
    np.testing.assert_allclose(history["style_loss"][0], before, rtol=1e-4)
    assert after <= before / 10, (before, after)
    # The content features stay closer to the content's than the style photo's are, the
    # layout stays (luminance correlation; 0.89 measured, 0.05 for the style photo), and
    # yet the image changed.
    style_as_content = paper_content_loss(probe(style)[-1], content_target)
    assert paper_content_loss(result_content, content_target) < 0.75 * style_as_content
    assert luminance_correlation(image, content) > 0.6
    assert luminance_correlation(style, content) < 0.2
    assert np.abs(image - content).mean() > 0.03


def test_noise_start_is_seeded_and_the_extractor_deterministic():
    extractor = random_texture_extractor(filters=8, kernel_sizes=(3, 7))
    again = random_texture_extractor(filters=8, kernel_sizes=(3, 7))
    for weights, same in zip(extractor.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(weights, same)
    other_seed = random_texture_extractor(filters=8, kernel_sizes=(3, 7), seed=1)
    assert not np.array_equal(extractor.get_weights()[0], other_seed.get_weights()[0])

    content, style = photo("coffee", 16), photo("gravel", 16)

    def run(seed):
        return style_transfer(
            content,
            style,
            extractor,
            ["deep"],
            ["scale_3", "scale_7"],
            steps=5,
            init="noise",
            seed=seed,
            verbose=0,
        )[0]

    first = run(seed=3)
    np.testing.assert_array_equal(first, run(seed=3))
    assert np.abs(first - run(seed=4)).mean() > 0.1


def test_texture_synthesis_does_not_depend_on_the_loss_scale(extractor):
    """Adam's steps ignore a constant factor on the loss only while its epsilon is far below
    the gradients; Keras' default 1e-7 is not (mean difference 0.012 measured)."""
    texture = photo("brick")
    results = [
        style_transfer(
            texture,
            texture,
            extractor,
            CONTENT_LAYERS,
            STYLE_LAYERS,
            steps=100,
            content_weight=0.0,
            style_weight=weight,
            init="noise",
            verbose=0,
        )[0]
        for weight in (1.0, 1e4)
    ]
    assert np.abs(results[0] - results[1]).mean() < 1e-3


def test_sequential_extractor_style_of_another_size_and_progress_bar(capsys):
    extractor = keras.Sequential(
        [
            keras.Input((None, None, 1)),
            keras.layers.Conv2D(4, 3, activation="relu", name="low"),
            keras.layers.Conv2D(4, 3, activation="relu", name="high"),
        ]
    )
    content = RNG.random((12, 10, 1)).astype(np.float32)
    style = RNG.random((20, 16, 1)).astype(np.float32)
    image, history = style_transfer(
        content, style, extractor, ["high"], ["low", "high"], steps=3, value_range=(0.0, 1.0)
    )
    assert image.shape == (12, 10, 1) and len(history["loss"]) == 3
    assert "3/3" in capsys.readouterr().out
    np.testing.assert_allclose(
        history["loss"], np.add(history["content_loss"], 1e3 * np.array(history["style_loss"]))
    )


@pytest.mark.parametrize(
    "change, message",
    [
        ({"style_layers": ["scale_3", "conv9"]}, r"\['conv9'\] in `style_layers`.*scale_15"),
        ({"content_layers": ["nope"]}, r"\['nope'\] in `content_layers`.*'deep'"),
        ({"style_layers": []}, "`style_layers` must be a non-empty list"),
        ({"content_layers": "deep"}, "`content_layers` must be a non-empty list"),
        ({"style_layers": ["image", "multi_scale"]}, None),
        ({"content": np.zeros((8, 8, 3), np.uint8)}, r"`content` must be floats.*uint8"),
        ({"style": np.zeros((8, 8, 3), np.int64)}, r"`style` must be floats.*int64"),
        ({"content": np.zeros((8, 8, 1), np.float32)}, r"`content` must have the shape"),
        ({"style": np.zeros((1, 8, 8, 3), np.float32)}, r"`style` must have the shape"),
        ({"content": np.full((8, 8, 3), np.nan, np.float32)}, "`content` must be finite"),
        ({"steps": 0}, "`steps` must be a positive int. Received: steps=0"),
        ({"style_weight": -1.0}, "`style_weight` must be >= 0. Received: style_weight=-1.0"),
        ({"learning_rate": 0.0}, "`learning_rate` must be > 0"),
        ({"content_weight": 0, "style_weight": 0.0}, "both 0: nothing to optimise"),
        ({"value_range": (1.0, 0.0)}, "`value_range` must be \\(low, high\\) with low < high"),
        ({"init": "zeros"}, "`init` must be one of"),
        ({"verbose": 3}, "`verbose` must be 0, 1 or 2"),
    ],
)
def test_bad_arguments_are_refused_with_a_message_naming_them(change, message):
    extractor = random_texture_extractor(filters=2, kernel_sizes=(3, 15))
    arguments = {
        "content": np.zeros((8, 8, 3), np.float32),
        "style": np.zeros((8, 8, 3), np.float32),
        "extractor": extractor,
        "content_layers": ["deep"],
        "style_layers": ["scale_3"],
        "steps": 1,
        "verbose": 0,
        **change,
    }
    if message is None:  # the input layer and the concatenation are valid style layers
        style_transfer(**arguments)
        return
    with pytest.raises(ValueError, match=message):
        style_transfer(**arguments)


def test_style_layers_must_have_spatial_outputs():
    inputs = keras.Input((8, 8, 1))
    flat = keras.layers.Flatten(name="flat")(keras.layers.Conv2D(2, 3, name="conv")(inputs))
    extractor = keras.Model(inputs, flat)
    with pytest.raises(ValueError, match="`style_layers` must name layers with 4-D outputs"):
        style_transfer(np.zeros((8, 8, 1)), np.zeros((8, 8, 1)), extractor, ["flat"], ["flat"])


def test_random_texture_extractor_refuses_bad_arguments():
    with pytest.raises(ValueError, match="`kernel_sizes` must be a tuple of distinct"):
        random_texture_extractor(kernel_sizes=(3, 3))
    with pytest.raises(ValueError, match="`kernel_sizes` must be a positive int or a tuple"):
        random_texture_extractor(kernel_sizes=(3, 0))
    with pytest.raises(ValueError, match="`filters` must be a positive int"):
        random_texture_extractor(filters=0)


def test_plot_shows_the_three_images_and_the_losses():
    content, style, result = (RNG.random((8, 8, 3)) for _ in range(3))
    history = {"loss": [3.0, 2.0], "content_loss": [0.0, 1.0], "style_loss": [1e-3, 1e-4]}
    figure = plot_style_transfer(content, style, result, history)
    assert isinstance(figure, matplotlib.figure.Figure) and len(figure.axes) == 4
    np.testing.assert_allclose(figure.axes[2].images[0].get_array(), result)
    curves = {line.get_label(): line.get_ydata() for line in figure.axes[3].lines}
    assert set(curves) == set(history)
    np.testing.assert_allclose(curves["style_loss"], history["style_loss"])
    assert len(plot_style_transfer(content, style, result).axes) == 3
    with pytest.raises(ValueError, match="`history` must hold"):
        plot_style_transfer(content, style, result, {"loss": [1.0]})
