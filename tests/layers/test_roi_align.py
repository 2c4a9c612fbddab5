import re

import keras
import numpy as np
import pytest

import kcnn  # noqa: F401  (registers the kcnn layers, as a user's import would)
from kcnn.layers import RoIAlign
from kcnn.ops import multilevel_roi_align

from ..ops.roi_align_reference import roi_align as reference
from . import citizenship

RNG = np.random.default_rng(0)
LEVELS = (2, 3)


def randn(*shape):
    return RNG.standard_normal(shape).astype("float32")


def boxes_on(image_size, count):
    """Random boxes in image pixels, some partly outside the image."""
    corners = RNG.uniform(-4.0, image_size - 8.0, size=(count, 2))
    sizes = RNG.uniform(1.0, image_size / 2, size=(count, 2))
    return np.hstack([corners, corners + sizes]).astype("float32")


def single_level_model(layer, shape=(8, 10, 3)):
    features = keras.Input(shape, name="features")
    boxes = keras.Input((4,), name="boxes")
    box_indices = keras.Input((), dtype="int32", name="box_indices")
    mapped = keras.layers.Conv2D(4, 1, name="conv")(features)
    return keras.Model([features, boxes, box_indices], layer([mapped, boxes, box_indices]))


def pyramid_model(layer, image_size=32, channels=3):
    maps = [
        keras.Input((image_size // 2**k, image_size // 2**k, channels), name=f"P{k}")
        for k in LEVELS
    ]
    boxes = keras.Input((4,), name="boxes")
    box_indices = keras.Input((), dtype="int32", name="box_indices")
    pyramid = {f"P{k}": m for k, m in zip(LEVELS, maps, strict=True)}
    return keras.Model([*maps, boxes, box_indices], layer([pyramid, boxes, box_indices]))


def single_level_inputs(count=3):
    return [randn(3, 8, 10, 3), boxes_on(20, count), RNG.integers(0, 3, count).astype("int32")]


def pyramid_inputs(count=3, image_size=32, channels=3):
    maps = [randn(2, image_size // 2**k, image_size // 2**k, channels) for k in LEVELS]
    # Sides from 4 to 60 px with canonical_size 16: both levels are used.
    corners = RNG.uniform(-2.0, image_size / 2, size=(count, 2))
    sides = np.geomspace(4.0, 60.0, count)[:, None]
    boxes = np.hstack([corners, corners + sides]).astype("float32")
    return [*maps, boxes, RNG.integers(0, 2, count).astype("int32")]


def test_single_level_matches_numpy_reference():
    layer = RoIAlign((3, 2), spatial_scale=0.5, sampling_ratio=3, aligned=False)
    features, boxes, box_indices = single_level_inputs(6)
    pooled = layer([features, boxes, box_indices])
    expected = reference(features, boxes, box_indices, (3, 2), 0.5, 3, False)
    np.testing.assert_allclose(pooled, expected, atol=1e-5)


def test_pyramid_as_dict_or_list():
    layer = RoIAlign(2, levels=LEVELS, canonical_size=16)
    *maps, boxes, box_indices = pyramid_inputs(8)
    pyramid = {"P1": randn(2, 16, 16, 3), "P2": maps[0], "P3": maps[1]}  # P1 is not read
    from_dict = np.asarray(layer([pyramid, boxes, box_indices]))
    from_list = np.asarray(layer([maps, boxes, box_indices]))
    expected = multilevel_roi_align(maps, boxes, box_indices, 2, LEVELS, canonical_size=16)
    np.testing.assert_array_equal(from_dict, from_list)
    np.testing.assert_allclose(from_dict, expected, atol=1e-6)


def test_output_shapes():
    assert single_level_model(RoIAlign((7, 5))).output.shape == (None, 7, 5, 4)
    assert pyramid_model(RoIAlign(7, levels=LEVELS)).output.shape == (None, 7, 7, 3)
    layer = RoIAlign((2, 3), levels=LEVELS)
    shapes = [{"P2": (2, 8, 8, 5), "P3": (2, 4, 4, 5)}, (6, 4), (6,)]
    assert layer.compute_output_shape(shapes) == (6, 2, 3, 5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"output_size": (7, 5), "spatial_scale": 0.125, "sampling_ratio": 1, "aligned": False},
        {"output_size": 14, "levels": [2, 3, 4, 5], "canonical_size": 200, "canonical_level": 3},
    ],
)
def test_config_round_trip(kwargs):
    layer = RoIAlign(**kwargs, name="roi_align")
    citizenship.check_config_round_trip(layer)
    assert RoIAlign.from_config(layer.get_config()).output_size == layer.output_size


@pytest.mark.parametrize("pyramid", [False, True])
def test_file_round_trips(tmp_path, pyramid):
    if pyramid:
        model = pyramid_model(RoIAlign(3, levels=LEVELS, canonical_size=16))
        inputs = pyramid_inputs()
    else:
        model = single_level_model(RoIAlign((3, 2), spatial_scale=0.5))
        inputs = single_level_inputs()
    citizenship.check_keras_file_round_trip(model, inputs, tmp_path)
    citizenship.check_saved_model_round_trip(model, inputs, tmp_path)


@pytest.mark.parametrize("pyramid", [False, True])
def test_tflite_builtins(tmp_path, pyramid):
    if pyramid:
        model = pyramid_model(RoIAlign((3, 2), levels=LEVELS, canonical_size=16))
        inputs = pyramid_inputs(7)
    else:
        model = single_level_model(RoIAlign((2, 3), spatial_scale=0.5, aligned=False))
        inputs = single_level_inputs(7)
    citizenship.check_tflite_builtins(model, inputs, tmp_path, atol=1e-5)


def test_mixed_precision_keeps_float32_boxes():
    inputs = single_level_inputs()
    citizenship.check_mixed_precision(
        lambda: single_level_model(RoIAlign(2, spatial_scale=0.5)), inputs, randn(3, 2, 2, 4)
    )
    # Features equal to x - 1024 along a 1100-pixel row: a box edge at x = 1030.7 would
    # round to 1031 in float16 and move every bin by 0.3.
    features = np.broadcast_to(np.arange(1100.0) - 1024.0, (1, 2, 1100)).astype("float32")
    features = features[..., None]
    boxes = np.array([[1030.7, 0.2, 1050.1, 1.3]], "float32")
    pooled = RoIAlign((1, 2), dtype="mixed_float16")([features, boxes, np.array([0], "int32")])
    expected = reference(features, boxes, [0], (1, 2), 1.0, 2, True)
    assert pooled.dtype == "float16"
    np.testing.assert_allclose(np.asarray(pooled, "float64"), expected, atol=0.1)


def test_jit_compile_and_training_step():
    citizenship.check_jit_compile(
        lambda: single_level_model(RoIAlign((2, 3), spatial_scale=0.5)),
        single_level_inputs(),
        randn(3, 2, 3, 4),
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"output_size": 0}, "`output_size` must be a positive int or a tuple of 2 positive"),
        ({"spatial_scale": -0.5}, "`spatial_scale` must be a positive number. Received: spa"),
        ({"sampling_ratio": -1}, "`sampling_ratio` must be a positive int: the adaptive"),
        ({"aligned": "yes"}, "`aligned` must be a bool. Received: aligned='yes'"),
        ({"levels": (5, 4)}, "`levels` must be a non-empty tuple of consecutive increasing"),
        (
            {"levels": (2, 3), "spatial_scale": 0.25},
            "`spatial_scale` is for a single feature map; with `levels`, level k has scale",
        ),
        ({"canonical_size": 0}, "`canonical_size` must be a positive number. Received: can"),
        ({"canonical_level": "4"}, "`canonical_level` must be an int. Received: canonical"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        RoIAlign(**{"output_size": 7, **kwargs})


@pytest.mark.parametrize(
    "levels, inputs, message",
    [
        (None, "features", "`RoIAlign` must be called on a list [features, boxes, box_indi"),
        (LEVELS, "P3 only", "Missing ['P2']. Received keys: ['P3']"),
        (LEVELS, "one map", "a list of 2 maps in the order of levels=(2, 3). Received: 1 map"),
        (None, "dict", "`features` must be one tensor (batch, height, width, channels) when"),
    ],
)
def test_bad_call_inputs(levels, inputs, message):
    features, boxes, box_indices = randn(1, 8, 8, 2), boxes_on(16, 2), np.zeros(2, "int32")
    call = {
        "features": features,
        "P3 only": [{"P3": features}, boxes, box_indices],
        "one map": [[features], boxes, box_indices],
        "dict": [{"P2": features}, boxes, box_indices],
    }[inputs]
    with pytest.raises(ValueError, match=re.escape(message)):
        RoIAlign(2, levels=levels)(call)


def test_mirrored_strategy():
    # Boxes come per image, (batch, boxes_per_image, 4), as a detector's proposals do, so each
    # replica pools its own images' boxes; the model flattens them and numbers their images.
    citizenship.check_mirrored_strategy(
        """
        from keras import ops
        from kcnn.layers import RoIAlign

        def model_fn():
            images = keras.Input((8, 8, 3))
            boxes = keras.Input((2, 4))
            features = keras.layers.Conv2D(4, 3, padding="same")(images)
            flat = keras.layers.Lambda(lambda b: ops.reshape(b, (-1, 4)))(boxes)
            owner = keras.layers.Lambda(
                lambda b: ops.repeat(ops.arange(ops.shape(b)[0], dtype="int32"), 2)
            )(boxes)
            pooled = RoIAlign((2, 3), spatial_scale=0.5)([features, flat, owner])
            outputs = keras.layers.Lambda(lambda p: ops.reshape(p, (-1, 2, 2, 3, 4)))(pooled)
            return keras.Model([images, boxes], outputs)

        rng = np.random.default_rng(0)
        corners = rng.uniform(-2.0, 10.0, (4, 2, 2))
        boxes = np.concatenate([corners, corners + rng.uniform(1.0, 8.0, (4, 2, 2))], axis=2)
        inputs = [rng.standard_normal((4, 8, 8, 3)).astype("float32"), boxes.astype("float32")]
        targets = rng.standard_normal((4, 2, 2, 3, 4)).astype("float32")
        """
    )
