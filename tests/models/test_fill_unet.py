import keras
import numpy as np
import pytest

import kcnn  # noqa: F401  (registers the kcnn layers, as a user's import would)
from kcnn.models import MODELS, FillResidualUNet
from kcnn.ops import smooth_fill

from ..layers import citizenship
from .test_pconv_unet import inputs

SIZE = 32
# Fewer sweeps than the default 40 + 20 per level: what these tests check does not depend on
# how far the fill has converged (tests/layers/test_smooth_fill2d.py checks the fill), and
# each model call runs every sweep.
SWEEPS = {"fill_iterations": 6, "fill_coarse_iterations": 3}


def tiny(**kwargs):
    return FillResidualUNet((SIZE, SIZE, 3), width=4, depth=3, **{**SWEEPS, **kwargs})


def test_registered_and_untrained_it_is_the_classical_fill():
    assert MODELS["fill_residual_unet"].task == "inpainting"
    model = tiny(fill_iterations=7, fill_coarse_iterations=3, fill_cg_iterations=2)
    image, mask = inputs()
    expected = np.asarray(
        smooth_fill(image, mask, iterations=7, coarse_iterations=3, cg_iterations=2)
    )
    np.testing.assert_allclose(model.predict([image, mask], verbose=0), expected, atol=1e-6)
    assert model.get_layer("smooth_fill").iterations == 7
    assert model.get_layer("smooth_fill").cg_iterations == 2
    assert model.get_config()["fill_cg_iterations"] == 2


def test_output_ignores_what_the_holes_hold():
    model = tiny()
    # Train a little so the residual is not zero.
    image, mask = inputs(batch=4)
    target = np.concatenate([image, mask], axis=-1)
    model.compile("adam", lambda y, p: keras.ops.mean(keras.ops.abs(y[..., :3] - p)))
    model.optimizer.build(model.trainable_variables)  # else fit traces its step twice
    model.fit([image, mask], target, epochs=2, verbose=0)
    noise = np.random.default_rng(5).random(image.shape, dtype=np.float32)
    filled = image + (1 - mask) * noise
    np.testing.assert_allclose(
        model.predict([filled, mask], verbose=0), model.predict([image, mask], verbose=0), atol=1e-6
    )


def test_learns_what_the_fill_cannot_continue():
    # Vertical stripes of period 4: a smooth fill blurs them to grey in the holes, which a
    # network can learn to continue. A few steps must beat the fill it starts from.
    rng = np.random.default_rng(1)
    columns = (np.arange(SIZE) // 2) % 2
    images = np.empty((16, SIZE, SIZE, 3), np.float32)
    for i in range(16):
        phase = rng.integers(0, 4)
        images[i] = np.roll(columns, phase)[None, :, None] * rng.uniform(0.5, 1.0, 3)
    _, masks = inputs(batch=16, seed=3, area_range=(0.2, 0.3))
    model = tiny()
    model.compile(
        keras.optimizers.Adam(3e-3),
        lambda y, p: keras.ops.mean(keras.ops.square(y[..., :3] - p) * (1 - y[..., 3:])),
    )
    x, y = [images * masks, masks], np.concatenate([images, masks], axis=-1)
    before = model.evaluate(x, y, verbose=0)
    model.optimizer.build(model.trainable_variables)  # else fit traces its step twice
    model.fit(x, y, epochs=60, batch_size=8, verbose=0)
    assert model.evaluate(x, y, verbose=0) < 0.5 * before


def test_keras_file_saved_model_and_tflite_builtins(tmp_path):
    model = tiny()
    model.get_layer("output").kernel.assign(
        np.random.default_rng(2).normal(0, 0.05, model.get_layer("output").kernel.shape)
    )
    x = inputs()
    citizenship.check_keras_file_round_trip(model, x, tmp_path)
    citizenship.check_saved_model_round_trip(model, x, tmp_path)
    citizenship.check_tflite_builtins(model, x, tmp_path, atol=1e-5)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"known height and width"):
        FillResidualUNet((None, None, 3), width=4, depth=2)
    with pytest.raises(ValueError, match=r"`iterations` must be a non-negative int"):
        tiny(fill_iterations=-1)
    with pytest.raises(ValueError, match=r"divisible by 2\*\*depth = 8"):
        FillResidualUNet((36, 32, 3), width=4, depth=3)


def test_mixed_precision_keeps_the_fill_and_the_output_in_float32():
    model = citizenship.built_with_mixed_precision(tiny)
    assert model.get_layer("encoder2").compute_dtype == "float16"
    assert model.get_layer("smooth_fill").compute_dtype == "float32"
    image, mask = inputs()
    output = model(inputs(), training=False)
    assert output.dtype == "float32"
    np.testing.assert_allclose(output, smooth_fill(image, mask, 6, 3), atol=1e-6)
