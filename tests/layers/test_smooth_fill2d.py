import keras
import numpy as np
import pytest
import tensorflow as tf

import kcnn  # noqa: F401  (registers the kcnn layers, as a user's import would)
from kcnn.layers import SmoothFill2D
from kcnn.ops import smooth_fill

from ..ops.test_smooth_fill import reference_fill
from . import citizenship

RNG = np.random.default_rng(4)


def inputs(batch=2, size=16, channels=3):
    images = RNG.random((batch, size, size, channels)).astype("float32")
    masks = (RNG.random((batch, size, size, 1)) > 0.45).astype("float32")
    return [images * masks, masks]


def small_model(size=16, **kwargs):
    image, mask = keras.Input((size, size, 3)), keras.Input((size, size, 1))
    return keras.Model([image, mask], SmoothFill2D(**kwargs)([image, mask]))


def test_matches_float64_reference_and_keeps_its_config():
    layer = SmoothFill2D(iterations=5, coarse_iterations=2)
    images, masks = inputs()
    outputs = np.asarray(layer([images, masks]), np.float64)
    for image, mask, output in zip(images, masks, outputs, strict=True):
        np.testing.assert_allclose(output, reference_fill(image, mask, 5, 2), atol=2e-5)
    citizenship.check_config_round_trip(layer)
    assert SmoothFill2D(levels=1).get_config()["levels"] == 1
    citizenship.check_config_round_trip(SmoothFill2D(cg_iterations=3))
    assert SmoothFill2D(cg_iterations=3).get_config()["cg_iterations"] == 3
    harmonic = SmoothFill2D(iterations=5, coarse_iterations=2, cg_iterations=2, order=1)
    citizenship.check_config_round_trip(harmonic)
    assert harmonic.get_config()["order"] == 1
    np.testing.assert_allclose(
        harmonic([images, masks]),
        smooth_fill(images, masks, 5, 2, cg_iterations=2, order=1),
        atol=1e-6,
    )
    assert np.abs(np.asarray(harmonic([images, masks])) - outputs).max() > 1e-3


def test_gradient_flows_to_the_known_pixels():
    # The fill is linear in the known pixels: its Jacobian is checked numerically. The
    # bilinear resize computes in float32 even for float64 inputs, hence the tolerance.
    image = tf.constant(RNG.random((1, 8, 8, 1)))
    mask = np.ones((1, 8, 8, 1))
    mask[:, 2:6, 3:6] = 0
    layer = SmoothFill2D(iterations=4, coarse_iterations=2, dtype="float64")
    theoretical, numerical = tf.test.compute_gradient(
        lambda x: layer([x, tf.constant(mask)]), [image], delta=1e-4
    )
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=2e-4)
    assert np.abs(theoretical[0]).max() > 0.1


def test_keras_file_saved_model_and_tflite_builtins(tmp_path):
    # With conjugate-gradient steps: their reductions and divisions are builtins too.
    model = small_model(iterations=6, coarse_iterations=3, cg_iterations=2)
    x = inputs()
    citizenship.check_keras_file_round_trip(model, x, tmp_path)
    citizenship.check_saved_model_round_trip(model, x, tmp_path)
    citizenship.check_tflite_builtins(model, x, tmp_path, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"iterations": -1}, r"`iterations` must be a non-negative int. Received: iterations=-1"),
        ({"coarse_iterations": "2"}, r"`coarse_iterations` must be a non-negative int"),
        ({"levels": 0.5}, r"`levels` must be a non-negative int"),
        ({"cg_iterations": -3}, r"`cg_iterations` must be a non-negative int"),
        ({"order": 0}, r"`order` must be 1 \(harmonic\) or 2 \(biharmonic\)"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SmoothFill2D(**kwargs)
