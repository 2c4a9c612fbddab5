"""The fused batch-norm step computes what Keras's `BatchNormalization` computes: checked
against NumPy float64 (Ioffe & Szegedy 2015, Algorithm 1, biased batch variance), against
Keras's own layer (outputs, every gradient, moving averages), and through `kcnn train`."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kcnn.ops.batch_norm import fused_batch_norm_training
from kcnn.training import (
    config_from_dict,
    fuse_batch_norm,
    load_run,
    synchronize_batch_norm,
    train,
)

EPSILON = 1e-3


def _batch(shape=(6, 5, 7, 3), seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(2.0, 3.0, shape) * rng.uniform(0.5, 2.0, shape[-1])).astype("float32")


def test_op_equals_the_papers_formula_in_float64():
    x = _batch()
    rng = np.random.default_rng(1)
    gamma, beta = rng.normal(1, 0.3, 3).astype("float32"), rng.normal(0, 0.3, 3).astype("float32")
    y, mean, variance = fused_batch_norm_training(x, gamma, beta, EPSILON)
    x64 = x.astype(np.float64)
    mu = x64.mean(axis=(0, 1, 2))
    var = ((x64 - mu) ** 2).mean(axis=(0, 1, 2))  # biased, as the output uses
    expected = gamma * (x64 - mu) / np.sqrt(var + EPSILON) + beta
    np.testing.assert_allclose(mean, mu, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(variance, var, rtol=1e-5)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


def test_op_rejects_what_the_kernel_cannot_take():
    with pytest.raises(ValueError, match="4-D"):
        fused_batch_norm_training(np.zeros((2, 3), "float32"), None, None, EPSILON)
    with pytest.raises(ValueError, match="epsilon"):
        fused_batch_norm_training(_batch(), None, None, 1e-6)


def _pair(**layer_args):
    """Two copies of conv -> batch norm, the second fused; same weights."""

    def build():
        inputs = keras.Input((5, 7, 3))
        # No conv bias: batch norm cancels it, so its gradient is 0 up to rounding.
        x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)
        x = keras.layers.BatchNormalization(momentum=0.8, **layer_args)(x)
        return keras.Model(inputs, keras.layers.Activation("tanh")(x))

    keras.utils.set_random_seed(0)
    reference, fused = build(), build()
    # Non-trivial gamma and beta, so their gradients and effect are checked too.
    weights = [w + 0.1 * (i + 1) for i, w in enumerate(reference.get_weights())]
    reference.set_weights(weights)
    fused.set_weights(weights)
    return reference, fused


def _graph_ops(model, x, training):
    function = tf.function(lambda inputs: model(inputs, training=training))
    return {op.type for op in function.get_concrete_function(x).graph.get_operations()}


def test_fused_layers_step_like_keras_outputs_gradients_and_moving_averages():
    reference, fused = _pair()
    assert fuse_batch_norm(fused) == 1
    assert fuse_batch_norm(fused) == 0  # once only
    x = tf.constant(_batch())
    assert "FusedBatchNormV3" in _graph_ops(fused, x, True)
    assert "FusedBatchNormV3" not in _graph_ops(reference, x, True)
    for step in range(3):
        batch = tf.constant(_batch(seed=step))
        results = []
        for model in (reference, fused):
            with tf.GradientTape() as tape:
                tape.watch(batch)
                outputs = model(batch, training=True)
                loss = tf.reduce_sum(outputs * tf.cos(outputs))
            gradients = tape.gradient(loss, [batch, *model.trainable_weights])
            results.append((outputs, gradients))
        (out_a, grads_a), (out_b, grads_b) = results
        np.testing.assert_allclose(out_b, out_a, rtol=1e-5, atol=1e-5)
        for grad_a, grad_b in zip(grads_a, grads_b, strict=True):
            scale = float(np.max(np.abs(grad_a)))
            np.testing.assert_allclose(grad_b, grad_a, atol=1e-5 * scale)
    for a, b in zip(reference.non_trainable_weights, fused.non_trainable_weights, strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)
    # Inference mode is Keras's own computation, on the same moving averages.
    assert "FusedBatchNormV3" not in _graph_ops(fused, x, False)
    np.testing.assert_allclose(fused(x, training=False), reference(x, training=False), atol=1e-6)


@pytest.mark.parametrize(
    "case",
    ["frozen", "synchronized", "epsilon", "rank"],
)
def test_layers_the_kernel_does_not_fit_keep_kerass_computation(case):
    if case == "rank":
        inputs = keras.Input((6, 3))
        model = keras.Model(inputs, keras.layers.BatchNormalization()(inputs))
        x = tf.constant(_batch((2, 6, 3)))
    else:
        _, model = _pair(epsilon=1e-6) if case == "epsilon" else _pair()
        x = tf.constant(_batch())
    fuse_batch_norm(model)
    layer = next(lyr for lyr in model.layers if isinstance(lyr, keras.layers.BatchNormalization))
    if case == "frozen":
        layer.trainable = False
    if case == "synchronized":
        layer.synchronized = True
    assert "FusedBatchNormV3" not in _graph_ops(model, x, True)


def _run(tmp_path, fused):
    config = config_from_dict(
        {
            "name": f"fused_{fused}",
            "output_dir": str(tmp_path),
            "task": "classification",
            "data": {"name": "digits", "batch_size": 32, "validation_fraction": 0.1},
            "model": {"backbone_args": {"filters": [8, 16], "convs_per_level": 2}},
            "train": {"epochs": 1, "steps_per_epoch": 4, "optimizer": "sgd"},
            "runtime": {"fused_batch_norm": fused, "seed": 3},
            "export": {"formats": []},
        }
    )
    return load_run(train(config, verbose=0))[1]


def test_kcnn_train_with_the_fused_step_ends_with_the_weights_of_kerass(tmp_path):
    fused, plain = _run(tmp_path, True), _run(tmp_path, False)
    # The saved model holds Keras's own layers: the fusion is a training-time switch.
    layers = [lyr for lyr in fused._flatten_layers() if "BatchNormalization" in type(lyr).__name__]
    assert len(layers) == 4 and all(type(lyr) is keras.layers.BatchNormalization for lyr in layers)
    for a, b in zip(plain.get_weights(), fused.get_weights(), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


class _BlockWithOwnBatchNorm(keras.layers.Layer):
    """A custom layer holding its batch norm as an attribute, not as a layer of a model."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(4, 3, padding="same")
        self.norm = keras.layers.BatchNormalization()

    def call(self, inputs, training=None):
        return self.norm(self.conv(inputs), training=training)


def _nested_model():
    """Batch norm at the top, inside a nested sub-model and inside a custom layer."""
    inner_inputs = keras.Input((5, 7, 4))
    inner = keras.Model(inner_inputs, keras.layers.BatchNormalization()(inner_inputs))
    inputs = keras.Input((5, 7, 3))
    x = keras.layers.BatchNormalization()(inputs)
    x = _BlockWithOwnBatchNorm()(x)
    return keras.Model(inputs, inner(x))


def _batch_norms(layer):
    found = [layer] if isinstance(layer, keras.layers.BatchNormalization) else []
    for child in vars(layer).values():
        if isinstance(child, keras.layers.Layer):
            found += _batch_norms(child)
    for child in getattr(layer, "layers", []):
        found += _batch_norms(child)
    return found


@pytest.mark.parametrize("change", ["fuse", "synchronize"])
def test_every_batch_norm_is_reached_in_sub_models_and_custom_layers(change):
    model = _nested_model()
    norms = {id(layer): layer for layer in _batch_norms(model)}
    assert len(norms) == 3
    if change == "fuse":
        assert fuse_batch_norm(model) == 3
        assert all(getattr(layer, "_kcnn_fused", False) for layer in norms.values())
        assert fuse_batch_norm(model) == 0  # idempotent
    else:
        assert synchronize_batch_norm(model) == 3
        assert all(layer.synchronized for layer in norms.values())
        assert synchronize_batch_norm(model) == 0
