import json
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

import kcnn  # noqa: F401  (registers the kcnn layers, as a user's import would)
from kcnn.models import classic
from kcnn.training import config_from_dict, train
from kcnn.training.auxiliary import (
    AuxiliaryLossModel,
    auxiliary_output_names,
    main_output_model,
)
from kcnn.training.trainer import load_data, read_history

RNG = np.random.default_rng(0)
NUM_CLASSES = 4


def googlenet():
    keras.backend.clear_session()
    model = classic.GoogLeNet((96, 96, 1), NUM_CLASSES, aux_heads=True, dropout=0.0, width=0.125)
    # The auxiliary heads drop 70% in training: without dropout the training-mode forward
    # pass is deterministic, so the loss `fit` minimises can be recomputed exactly.
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0
    return model


def batch():
    x = RNG.random((6, 96, 96, 1), dtype=np.float32)
    y = np.array([0, 1, 2, 3, 0, 1])
    return x, y


def cross_entropy(probabilities, labels):
    probabilities = np.asarray(probabilities, np.float64)
    return float(-np.mean(np.log(probabilities[np.arange(labels.size), labels])))


def compiled(model, aux_loss_weight=classic.AUX_LOSS_WEIGHT, learning_rate=0.0):
    training_model = AuxiliaryLossModel(model, aux_loss_weight)
    training_model.compile(
        optimizer=keras.optimizers.SGD(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return training_model


def test_training_loss_is_main_plus_weighted_auxiliary_losses_evaluation_is_main_only():
    model = googlenet()
    x, y = batch()
    main, aux1, aux2 = model(x, training=False)
    expected_training = cross_entropy(main, y) + 0.3 * (
        cross_entropy(aux1, y) + cross_entropy(aux2, y)
    )
    training_model = compiled(model)

    logs = training_model.train_on_batch(x, y, return_dict=True)

    assert sorted(logs) == ["accuracy", "loss"]
    assert logs["loss"] == pytest.approx(expected_training, rel=1e-5)
    assert logs["loss"] > cross_entropy(main, y) * 1.2  # the auxiliary losses do count
    evaluated = training_model.evaluate(x, y, verbose=0, return_dict=True)
    assert evaluated["loss"] == pytest.approx(cross_entropy(main, y), rel=1e-5)
    main_accuracy = np.mean(np.asarray(main).argmax(-1) == y)
    assert evaluated["accuracy"] == pytest.approx(main_accuracy)


def test_auxiliary_heads_learn_only_through_their_weighted_losses():
    x, y = batch()
    for weight, should_change in ((0.0, False), (0.3, True)):
        model = googlenet()
        before = [np.asarray(w).copy() for w in model.get_layer("aux1_fc").weights]
        main_before = np.asarray(model.get_layer("predictions").kernel).copy()
        compiled(model, aux_loss_weight=weight, learning_rate=0.1).train_on_batch(x, y)
        after = model.get_layer("aux1_fc").weights
        changed = any(not np.array_equal(b, a) for b, a in zip(before, after, strict=True))
        assert changed == should_change, weight
        assert not np.array_equal(main_before, model.get_layer("predictions").kernel)


def test_main_output_model_shares_the_weights_and_has_one_output():
    model = googlenet()
    x, _ = batch()
    main = main_output_model(model)
    assert main.output_names == ["predictions"] and main.output_shape == (None, NUM_CLASSES)
    assert all(any(w is v for v in model.weights) for w in main.weights)
    np.testing.assert_allclose(main(x), model(x)[0], atol=1e-6)
    single = classic.LeNet5((32, 32, 1), 10)
    assert main_output_model(single) is single and auxiliary_output_names(single) == []


def test_bad_arguments_are_named():
    single = classic.LeNet5((32, 32, 1), 10)
    with pytest.raises(ValueError) as error:
        AuxiliaryLossModel(single)
    assert str(error.value) == (
        "`model` must have auxiliary outputs besides 'predictions'. Received a model with "
        "outputs ['predictions']."
    )
    model = googlenet()
    with pytest.raises(ValueError, match=re.escape("Received: aux_loss_weight=-0.1")):
        AuxiliaryLossModel(model, aux_loss_weight=-0.1)
    with pytest.raises(ValueError, match=re.escape("`loss` must be a keras.losses.Loss instance")):
        AuxiliaryLossModel(model).compile("sgd", loss="sparse_categorical_crossentropy")
    inputs = keras.Input((3,))
    two_heads = keras.Model(
        inputs, [keras.layers.Dense(2, name="a")(inputs), keras.layers.Dense(2, name="b")(inputs)]
    )
    with pytest.raises(ValueError) as error:
        auxiliary_output_names(two_heads)
    assert str(error.value) == (
        "A model with several outputs needs one named 'predictions' (the main classifier). "
        f"Model '{two_heads.name}' has outputs ['a', 'b']."
    )


class _Watch(keras.callbacks.Callback):
    """Records the model `fit` trains and an auxiliary head's weights before and after."""

    def on_train_begin(self, logs=None):
        self.trained = self.model
        self.before = np.asarray(self.model.network.get_layer("aux2_fc").kernel).copy()

    def on_train_end(self, logs=None):
        self.after = np.asarray(self.model.network.get_layer("aux2_fc").kernel).copy()


@pytest.mark.slow
def test_googlenet_auxiliary_heads_train_and_the_run_keeps_the_main_output(tmp_path):
    config = config_from_dict(
        {
            "name": "googlenet_aux",
            "output_dir": str(tmp_path / "runs"),
            "data": {
                "name": "digits",
                "image_size": 72,
                "train_per_class": 8,
                "batch_size": 40,
                "validation_fraction": 0.0,
            },
            "model": {"name": "googlenet", "args": {"aux_heads": True, "width": 0.125}},
            "train": {"epochs": 2, "learning_rate": 0.003},
            "export": {"formats": ["saved_model", "tflite"], "parity_samples": 4},
        }
    )
    watch = _Watch()
    run_dir = train(config, verbose=0, callbacks=[watch])

    assert isinstance(watch.trained, AuxiliaryLossModel)
    assert watch.trained.aux_loss_weight == 0.3
    assert not np.array_equal(watch.before, watch.after)  # the auxiliary loss trained its head
    assert sorted(read_history(run_dir)) == ["accuracy", "loss"]

    model = keras.saving.load_model(run_dir / "model.keras")
    assert model.output_names == ["predictions"] and model.output_shape == (None, 10)
    data = load_data(config.data, seed=config.runtime.seed)
    images = data.x_test.astype("float32") / 255.0
    accuracy = float(np.mean(model.predict(images, verbose=0).argmax(-1) == data.y_test))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test_accuracy"] == pytest.approx(accuracy, abs=1e-9)
    assert metrics["params"] == model.count_params()

    # The exports serve the main output alone: one tensor, no auxiliary heads.
    served = tf.saved_model.load(str(run_dir / "saved_model"))
    output = served.serve(images[:3])
    assert not isinstance(output, (list, tuple, dict)), type(output)
    assert tuple(output.shape) == (3, 10)
    assert len(Interpreter(model_path=str(run_dir / "model.tflite")).get_output_details()) == 1
    report = json.loads((run_dir / "export_report.json").read_text())
    assert report["tflite"]["none"]["passed"]
