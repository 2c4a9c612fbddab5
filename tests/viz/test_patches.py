"""Top-activating patches: a unit built to detect a planted pattern finds it, and each patch
is the unit's receptive field from `kcnn.analysis`."""

import keras
import numpy as np
import pytest

from kcnn.analysis import analyze
from kcnn.viz import (
    deconvnet_projection,
    plot_top_patches,
    receptive_field_geometry,
    top_activating_patches,
    top_patch_projections,
)

CROSS = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]])  # an "X"
PLANTED = (2, 5, 11, 13, 17)


def detector_network():
    """conv 3x3 "same" whose channel 0 is a matched filter for the X (ReLU) -> 2x2 max-pool
    -> conv 3x3 "valid" whose channel 0 adds channel 0 of its window (ReLU)."""
    inputs = keras.Input((24, 24, 1))
    x = keras.layers.Conv2D(2, 3, padding="same", activation="relu", name="detect")(inputs)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Conv2D(2, 3, activation="relu", name="gather")(x)
    model = keras.Model(inputs, x)
    detect = np.zeros((3, 3, 1, 2))
    detect[..., 0, 0] = 2.0 * CROSS - 1.0
    detect[..., 0, 1] = np.random.default_rng(0).normal(size=(3, 3))
    gather = np.zeros((3, 3, 2, 2))
    gather[:, :, 0, 0] = 1.0
    gather[1, 1, 1, 1] = 1.0
    model.get_layer("detect").set_weights([detect, np.array([-2.5, 0.0])])
    model.get_layer("gather").set_weights([gather, np.zeros(2)])
    return model


def images_with_planted_crosses():
    rng = np.random.default_rng(3)
    images = rng.uniform(0.0, 0.3, (20, 24, 24, 1)).astype("float32")
    for index in PLANTED:
        top, left = rng.integers(0, 21, 2)
        images[index, top : top + 3, left : left + 3, 0] = np.maximum(
            images[index, top : top + 3, left : left + 3, 0], CROSS
        )
    return images


def contains(patch, pattern):
    size = pattern.shape[0]
    return any(
        np.array_equal(patch[i : i + size, j : j + size] >= 1.0, pattern > 0)
        for i in range(patch.shape[0] - size + 1)
        for j in range(patch.shape[1] - size + 1)
    )


def test_the_cross_detector_finds_the_planted_crosses_in_fields_of_the_right_size():
    model, images = detector_network(), images_with_planted_crosses()
    result = top_activating_patches(model, "gather", images, [0, 1], k=5)
    record = next(r for r in analyze(model).layers if r.name == "gather")
    assert record.receptive_field == 8
    assert result.receptive_field == (8, 8)
    assert result.patches.shape == (2, 5, 8, 8, 1)
    assert sorted(result.image_indices[0]) == list(PLANTED)
    assert all(contains(patch[..., 0], CROSS) for patch in result.patches[0])
    # Each patch is the image inside its box (zeros beyond the border), the box centred at
    # start + position * jump.
    for patch, index, position, box in zip(
        result.patches[0],
        result.image_indices[0],
        result.positions[0],
        result.boxes[0],
        strict=True,
    ):
        centre = record.start + position * record.jump
        np.testing.assert_array_equal(box[:2], centre - 3.5)
        padded = np.pad(images[index, ..., 0], 8)
        top, left = box[:2] + 8
        np.testing.assert_array_equal(patch[..., 0], padded[top : top + 8, left : left + 8])
    activations = model(images).numpy()[..., 0].reshape(20, -1).max(axis=1)
    np.testing.assert_allclose(result.activations[0], np.sort(activations)[::-1][:5], rtol=1e-6)
    figure = plot_top_patches(result)
    assert len(figure.axes) == 10
    # Each projection is the whole-image projection inside the box; nothing lies outside it.
    projections = top_patch_projections(model, "gather", images, result)
    assert projections.shape == result.patches.shape
    for projection, index, position in zip(
        projections[1], result.image_indices[1], result.positions[1], strict=True
    ):
        whole = deconvnet_projection(model, "gather", 1, images[index], tuple(position))
        assert np.abs(projection).sum() == pytest.approx(np.abs(whole).sum(), rel=1e-6)
        assert np.abs(whole).sum() > 0
    assert len(plot_top_patches(result, projections).axes) == 20


def test_geometry_and_bad_arguments():
    model, images = detector_network(), images_with_planted_crosses()
    assert receptive_field_geometry(model, "pool") == ((4, 4), (2, 2), (0.5, 0.5))  # pixels -1 .. 2
    with pytest.raises(ValueError, match=r"`k` must be at most the number of images \(20\)"):
        top_activating_patches(model, "gather", images, 0, k=21)
    with pytest.raises(ValueError, match=r"`channels` must be ints in \[0, 2\)"):
        top_activating_patches(model, "gather", images, [0, 2])
    with pytest.raises(ValueError, match=r"Unknown `layer_name`='nope'"):
        top_activating_patches(model, "nope", images, 0)
    pooled = keras.Model(
        model.inputs, keras.layers.GlobalAveragePooling2D(name="gap")(model.outputs[0])
    )
    with pytest.raises(ValueError, match=r"must have a \(batch, height, width, channels\)"):
        top_activating_patches(pooled, "gap", images, 0)
