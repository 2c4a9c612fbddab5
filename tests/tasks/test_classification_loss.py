"""Label smoothing for classification (`train.loss: {label_smoothing: eps}`), checked against
the formula of Szegedy et al. 2016 (Sec. 7) in NumPy float64 and its softmax gradient."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kcnn.tasks import LabelSmoothingCrossEntropy, get_task
from kcnn.training import config_from_dict

CLASSES = 5


def _probabilities_and_labels(batch=6, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(batch, CLASSES)) * 2.0
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return logits, probabilities, rng.integers(0, CLASSES, batch)


def _smoothed_targets(labels, eps):
    # q'(k) = (1 - eps) delta(k, y) + eps / K
    return (1 - eps) * np.eye(CLASSES)[labels] + eps / CLASSES


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_loss_is_the_cross_entropy_of_the_smoothed_targets(eps):
    _, probabilities, labels = _probabilities_and_labels()
    expected = np.mean(-np.sum(_smoothed_targets(labels, eps) * np.log(probabilities), axis=1))
    loss = LabelSmoothingCrossEntropy(eps)
    value = loss(labels, probabilities.astype("float32"))
    np.testing.assert_allclose(float(value), expected, rtol=1e-6)
    # (B, 1) labels, as Keras's sparse losses take them, give the same value.
    np.testing.assert_allclose(float(loss(labels[:, None], probabilities)), expected, rtol=1e-6)


def test_no_smoothing_is_keras_sparse_cross_entropy():
    _, probabilities, labels = _probabilities_and_labels(seed=1)
    keras_value = keras.losses.SparseCategoricalCrossentropy()(labels, probabilities)
    np.testing.assert_allclose(
        float(LabelSmoothingCrossEntropy(0.0)(labels, probabilities)),
        float(keras_value),
        rtol=1e-6,
    )


def test_gradient_through_softmax_is_probabilities_minus_smoothed_targets():
    # d/dz of -sum_k q'(k) log softmax(z)_k is softmax(z) - q' (per example; / B for the mean).
    logits, probabilities, labels = _probabilities_and_labels(seed=2)
    eps = 0.2
    z = tf.Variable(logits.astype("float32"))
    with tf.GradientTape() as tape:
        value = LabelSmoothingCrossEntropy(eps)(labels, tf.nn.softmax(z))
    expected = (probabilities - _smoothed_targets(labels, eps)) / len(labels)
    np.testing.assert_allclose(tape.gradient(value, z).numpy(), expected, atol=1e-6)


def test_serialization_round_trip_and_keras_file(tmp_path):
    loss = LabelSmoothingCrossEntropy(0.15)
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(again) is LabelSmoothingCrossEntropy and again.label_smoothing == 0.15
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(CLASSES, activation="softmax")(inputs))
    model.compile(optimizer="sgd", loss=loss)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert loaded.loss.label_smoothing == 0.15


def _task_loss(loss_options):
    config = config_from_dict({"task": "classification", "train": {"loss": loss_options}})
    return get_task("classification").loss(config.train)


def test_the_classification_task_reads_label_smoothing_from_train_loss():
    assert type(_task_loss(None)) is keras.losses.SparseCategoricalCrossentropy
    assert _task_loss({"label_smoothing": 0.1}).label_smoothing == 0.1


@pytest.mark.parametrize(
    "options, message",
    [
        ({"smoothing": 0.1}, r"Unknown classification loss key\(s\) \['smoothing'\]"),
        ({"label_smoothing": 1.0}, r"`train.loss.label_smoothing`.*\[0, 1\).*1.0"),
        ({"label_smoothing": -0.1}, r"`train.loss.label_smoothing`.*-0.1"),
        ({"label_smoothing": "0.1"}, r"`train.loss.label_smoothing`.*'0.1'"),
    ],
)
def test_bad_loss_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        _task_loss(options)
