import re

import numpy as np
import pytest
import tensorflow as tf

from kcnn.ops import assign_pyramid_levels, multilevel_roi_align, roi_align

from .roi_align_reference import pyramid_level
from .roi_align_reference import roi_align as reference

RNG = np.random.default_rng(0)


def random_boxes(count, image_size, scale=1.0):
    """Boxes in image pixels of every awkward kind, with `count` random ones after them."""
    height, width = image_size
    awkward = [
        [-3.0, -2.5, 4.2, 3.1],  # partly outside, top-left
        [width - 2.3, height - 1.7, width + 3.0, height + 2.2],  # partly outside, bottom-right
        [2.2, 1.4, 2.9, 1.8],  # smaller than a pixel
        [3.0, 1.0, 3.0, 4.5],  # degenerate: x1 == x2
        [4.0, 2.0, 1.5, 0.5],  # reversed: x2 < x1 and y2 < y1
        [-9.0, -9.0, -4.0, -5.0],  # entirely outside
        [0.0, 0.0, width, height],  # the whole image
    ]
    corners = RNG.uniform(-2.0, [width + 1, height + 1], size=(count, 2))
    sizes = RNG.uniform(0.3, [width, height], size=(count, 2))
    boxes = np.concatenate([np.array(awkward), np.hstack([corners, corners + sizes])])
    return boxes / scale


@pytest.mark.parametrize(
    "aligned, output_size, sampling_ratio, spatial_scale",
    [
        (True, (2, 3), 2, 1.0),
        (False, (3, 2), 2, 1.0),
        (True, (3, 3), 1, 0.5),
        (False, (2, 2), 3, 0.25),
    ],
)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matches_numpy_reference(aligned, output_size, sampling_ratio, spatial_scale, dtype):
    features = RNG.standard_normal((3, 7, 9, 2))
    boxes = random_boxes(9, (7, 9), spatial_scale)
    box_indices = RNG.integers(0, 3, len(boxes))
    pooled = roi_align(
        features.astype(dtype),
        boxes.astype(dtype),
        box_indices.astype("int32"),
        output_size,
        spatial_scale=spatial_scale,
        sampling_ratio=sampling_ratio,
        aligned=aligned,
    )
    expected = reference(
        features, boxes, box_indices, output_size, spatial_scale, sampling_ratio, aligned
    )
    assert pooled.shape == (len(boxes), *output_size, 2) and pooled.dtype == dtype
    np.testing.assert_allclose(pooled, expected, atol=1e-5 if dtype == "float32" else 1e-12)


def test_boundary_rules():
    """Hand-computed values on a 1-channel 3 x 4 map: reading the border within one pixel
    outside, zero beyond it, and the last row and column alone."""
    features = np.arange(12, dtype="float64").reshape(1, 3, 4, 1)

    def at(y, x):  # a 1 x 1 box sampled once at (y, x), aligned=False
        box = np.array([[x - 0.5, y - 0.5, x + 0.5, y + 0.5]])
        value = roi_align(features, box, np.array([0]), 1, sampling_ratio=1, aligned=False)
        return float(np.asarray(value).squeeze())

    assert at(-0.9, 1.0) == 1.0  # above the image within a pixel: row 0
    assert at(-1.1, 1.0) == 0.0  # farther out: nothing
    assert at(1.0, -0.5) == 4.0  # left of column 0: column 0
    assert at(2.5, 1.0) == 9.0  # past the last row: row 2 alone
    assert at(3.0, 1.0) == 9.0  # y = H is still read
    assert at(3.1, 1.0) == 0.0
    assert at(1.5, 3.5) == 9.0  # between rows 1 and 2, past the last column: (7 + 11) / 2
    assert at(0.25, 0.5) == pytest.approx(0.75 * 0.5 + 0.25 * 4.5)


def test_half_pixel_offset():
    """A box over pixels 1 and 2 of each axis (corners 1 and 3): with aligned=True its 2 x 2
    bins are centred on those pixels and read their values; without, half a pixel off."""
    features = np.arange(16, dtype="float64").reshape(1, 4, 4, 1)  # value 4 * y + x
    box, image = np.array([[1.0, 1.0, 3.0, 3.0]]), np.array([0])
    aligned = np.asarray(roi_align(features, box, image, 2, aligned=True)).squeeze()
    legacy = np.asarray(roi_align(features, box, image, 2, aligned=False)).squeeze()
    np.testing.assert_allclose(aligned, [[5.0, 6.0], [9.0, 10.0]], atol=1e-12)
    np.testing.assert_allclose(legacy, [[7.5, 8.5], [11.5, 12.5]], atol=1e-12)


def test_non_finite_boxes_read_zero():
    features = RNG.standard_normal((1, 5, 5, 3))
    boxes = np.array([[np.nan, 1.0, 3.0, 3.0], [1.0, 1.0, np.inf, 3.0]])
    pooled = np.asarray(roi_align(features, boxes, np.array([0, 0]), 2))
    assert np.all(np.isfinite(pooled[0])) and not np.any(pooled[0])
    assert np.all(np.isfinite(pooled[1]))


def test_gradient_with_respect_to_features():
    features = tf.constant(RNG.standard_normal((2, 4, 5, 2)))
    # Partly outside at both corners, smaller than a pixel, and two random boxes.
    boxes = tf.constant(random_boxes(2, (4, 5), 0.5)[[0, 1, 2, 7, 8]])
    box_indices = tf.constant(RNG.integers(0, 2, len(boxes)), tf.int32)
    pool = tf.function(lambda f: roi_align(f, boxes, box_indices, (2, 3), spatial_scale=0.5))
    theoretical, numerical = tf.test.compute_gradient(pool, [features])
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-8)
    assert np.abs(theoretical[0]).max() > 0.1  # the gradient is not trivially zero


def test_gradient_with_respect_to_boxes_is_the_derivative_of_the_sampling():
    """Inside the image, away from pixel edges, the box gradient is the derivative of the
    bilinear formula: finite differences agree."""
    features = tf.constant(RNG.standard_normal((1, 8, 8, 2)))
    boxes = tf.constant([[1.13, 2.21, 5.37, 6.29], [0.71, 0.93, 3.17, 7.41]], tf.float64)
    box_indices = tf.constant([0, 0])
    pool = tf.function(lambda b: roi_align(features, b, box_indices, 2))
    theoretical, numerical = tf.test.compute_gradient(pool, [boxes], delta=1e-6)
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-6)
    assert np.abs(theoretical[0]).max() > 0.01


def test_box_indices_and_the_features_other_images_get_no_gradient():
    features = tf.Variable(RNG.standard_normal((3, 4, 4, 1)))
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(roi_align(features, [[0.0, 0.0, 3.0, 3.0]], tf.constant([1]), 2))
    gradient = np.asarray(tape.gradient(total, features))
    assert not np.any(gradient[[0, 2]]) and gradient[1].sum() == pytest.approx(4.0)


def test_xla_gives_the_same_output_and_gradient():
    features = tf.constant(RNG.standard_normal((2, 6, 7, 3)), tf.float32)
    boxes = tf.constant(random_boxes(5, (6, 7)), tf.float32)
    box_indices = tf.constant(RNG.integers(0, 2, len(boxes)), tf.int32)

    def pooled_and_gradient(f):
        with tf.GradientTape() as tape:
            tape.watch(f)
            pooled = roi_align(f, boxes, box_indices, (3, 2), aligned=False)
            loss = tf.reduce_sum(pooled**2)
        return pooled, tape.gradient(loss, f)

    eager = pooled_and_gradient(features)
    compiled = tf.function(pooled_and_gradient, jit_compile=True)(features)
    for got, want in zip(compiled, eager, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_unknown_number_of_boxes_and_no_boxes():
    features = RNG.standard_normal((2, 6, 6, 4)).astype("float32")
    pool = tf.function(
        lambda b, i: roi_align(features, b, i, 3),
        input_signature=[tf.TensorSpec([None, 4]), tf.TensorSpec([None], tf.int32)],
    )
    boxes = random_boxes(3, (6, 6)).astype("float32")
    indices = np.array([0, 1] * 5, "int32")[: len(boxes)]
    expected = reference(features, boxes, indices, (3, 3), 1.0, 2, True)
    np.testing.assert_allclose(pool(boxes, indices), expected, atol=1e-5)
    assert pool(np.zeros((0, 4), "float32"), np.zeros((0,), "int32")).shape == (0, 3, 3, 4)


def test_float16_features_keep_float32_sample_positions():
    features = RNG.standard_normal((1, 40, 40, 2))
    boxes = np.array([[3.3, 7.7, 33.1, 29.9]])
    pooled = roi_align(features.astype("float16"), boxes.astype("float32"), np.array([0]), 4)
    assert pooled.dtype == "float16"
    expected = reference(features, boxes, [0], (4, 4), 1.0, 2, True)
    np.testing.assert_allclose(np.asarray(pooled, "float64"), expected, atol=1e-2)


# Sides sqrt(w * h) around FPN's thresholds 112, 224 and 448 (levels 3, 4, 5 from k0 = 4).
LEVEL_BOXES = [
    [0, 0, 40, 40],
    [10, 10, 121.9, 121.9],  # side 111.9: level 2
    [0, 0, 112, 112],  # exactly 112: level 3
    [0, 0, 56, 224],  # side 112, not square: level 3
    [5, 5, 228.9, 228.9],  # 223.9: level 3
    [0, 0, 224, 224],  # exactly 224: level 4
    [0, 0, 447.9, 447.9],
    [0, 0, 448, 448],  # exactly 448: level 5
    [0, 0, 2000, 900],  # above the top level: clamped to 5
    [3, 3, 3, 80],  # degenerate: the lowest level
]


def test_pyramid_levels_follow_fpn_equation_1():
    levels = (2, 3, 4, 5)
    assigned = np.asarray(assign_pyramid_levels(np.array(LEVEL_BOXES, "float32"), levels))
    expected = [pyramid_level(box, levels) for box in LEVEL_BOXES]
    assert assigned.tolist() == expected
    assert expected == [2, 2, 3, 3, 3, 4, 4, 5, 5, 2]
    other = np.asarray(assign_pyramid_levels(np.array(LEVEL_BOXES), (3, 4), 112.0, 3))
    assert other.tolist() == [pyramid_level(box, (3, 4), 112.0, 3) for box in LEVEL_BOXES]


def test_multilevel_equals_single_level_at_each_box_level():
    levels = (2, 3, 4, 5)
    image = 512
    pyramid = [RNG.standard_normal((2, image // 2**k, image // 2**k, 3)) for k in levels]
    boxes = np.array(LEVEL_BOXES, "float64") + RNG.uniform(-3, 3, (len(LEVEL_BOXES), 4))
    box_indices = RNG.integers(0, 2, len(boxes))
    pooled = np.asarray(
        multilevel_roi_align(pyramid, boxes, box_indices, (2, 3), levels, sampling_ratio=1)
    )
    for k, box in enumerate(boxes):
        level = pyramid_level(box, levels)
        single = roi_align(
            pyramid[level - levels[0]],
            box[None],
            box_indices[k : k + 1],
            (2, 3),
            spatial_scale=2.0**-level,
            sampling_ratio=1,
        )
        np.testing.assert_allclose(pooled[k], np.asarray(single)[0], atol=1e-12)
    assert len({pyramid_level(box, levels) for box in boxes}) == 4  # every level is used


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"output_size": (3, 0)},
            "`output_size` must be a positive int or a tuple of 2 positive ints. "
            "Received: output_size=(3, 0)",
        ),
        ({"spatial_scale": 0}, "`spatial_scale` must be a positive number. Received: spatial_"),
        ({"spatial_scale": float("nan")}, "Received: spatial_scale=nan"),
        (
            {"sampling_ratio": 0},
            "`sampling_ratio` must be a positive int: the adaptive sampling of torchvision's "
            "sampling_ratio <= 0",
        ),
        ({"sampling_ratio": 1.5}, "`sampling_ratio` must be a positive int. Received: sampling"),
        ({"aligned": 1}, "`aligned` must be a bool. Received: aligned=1"),
        ({"features": np.zeros((4, 4, 1))}, "`features` must be 4D (batch, height, width, "),
        ({"boxes": np.zeros((2, 5))}, "`boxes` must be a float tensor of shape (num_boxes, 4)"),
        ({"boxes": np.zeros((2, 4), "int32")}, "boxes.dtype=int32"),
        ({"box_indices": np.zeros(2)}, "box_indices.dtype=float64"),
        ({"box_indices": np.zeros(3, "int32")}, "must have the same number of boxes. Received"),
    ],
)
def test_bad_arguments(kwargs, message):
    arguments = {
        "features": np.zeros((1, 4, 4, 1)),
        "boxes": np.zeros((2, 4)),
        "box_indices": np.zeros(2, "int32"),
        "output_size": 2,
        **kwargs,
    }
    with pytest.raises(ValueError, match=re.escape(message)):
        roi_align(**arguments)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"levels": (2, 4)}, "`levels` must be a non-empty tuple of consecutive increasing"),
        ({"levels": ("P2", "P3")}, "Received: levels=('P2', 'P3')"),
        ({"levels": (3,)}, "`features` must be a list of 1 feature maps, one per level"),
        ({"canonical_size": -1}, "`canonical_size` must be a positive number. Received: can"),
        ({"canonical_level": 4.0}, "`canonical_level` must be an int. Received: canonical"),
        ({"features": [np.zeros((1, 4, 4, 2)), np.zeros((1, 2, 2, 3))]}, "the same channels"),
    ],
)
def test_bad_multilevel_arguments(kwargs, message):
    arguments = {
        "features": [np.zeros((1, 4, 4, 2)), np.zeros((1, 2, 2, 2))],
        "boxes": np.zeros((2, 4)),
        "box_indices": np.zeros(2, "int32"),
        "output_size": 2,
        "levels": (2, 3),
        **kwargs,
    }
    with pytest.raises(ValueError, match=re.escape(message)):
        multilevel_roi_align(**arguments)
