"""Image classification: one class label per image."""

import keras
import numpy as np
from keras import ops

from kcnn._serialization import register
from kcnn._validation import check_fraction, check_loss_keys
from kcnn.data import load_classification_data, make_dataset, per_class_subset
from kcnn.export.serving import ServingSignature, classification_endpoint, uint8_image_specs
from kcnn.models.classifier import build_classifier
from kcnn.tasks.base import Task, register_task
from kcnn.viz import confusion_matrix, plot_confusion_matrix

__all__ = ["ClassificationTask", "LabelSmoothingCrossEntropy", "build_classifier"]

# `train.loss` options of a classification run.
LOSS_KEYS = ("label_smoothing",)


@register
class LabelSmoothingCrossEntropy(keras.losses.Loss):
    """Cross-entropy of integer labels against smoothed targets.

    Label smoothing (Szegedy et al. 2016, "Rethinking the Inception Architecture for Computer
    Vision", Sec. 7, arXiv:1512.00567) replaces the one-hot target of label `y` by
    `q'(k) = (1 - eps) * delta(k, y) + eps / K` over the `K` classes, so the loss is
    `-sum_k q'(k) log p(k)`: the model is no longer pushed towards probabilities of exactly 0
    and 1. Keras's `SparseCategoricalCrossentropy` has no smoothing and its
    `CategoricalCrossentropy` wants one-hot labels; this takes the integer labels a kcnn
    classification data set holds, and class probabilities (the classifier's softmax).
    With `label_smoothing=0` it is the plain sparse cross-entropy.

    Args:
        label_smoothing: float in [0, 1), the `eps` above. Defaults to 0.1 (the paper's
            value for ImageNet).
        name: str. Defaults to `"label_smoothing_crossentropy"`.

    Raises:
        ValueError: if `label_smoothing` is not a number in [0, 1).
    """

    def __init__(self, label_smoothing=0.1, name="label_smoothing_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = check_fraction(label_smoothing, "label_smoothing", low_open=False)

    def call(self, y_true, y_pred):
        y_pred = ops.convert_to_tensor(y_pred)
        labels = ops.cast(y_true, "int32")
        if len(labels.shape) == len(y_pred.shape):  # (B, 1) labels
            labels = ops.squeeze(labels, axis=-1)
        targets = ops.one_hot(labels, y_pred.shape[-1], dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(
            targets, y_pred, label_smoothing=self.label_smoothing
        )

    def get_config(self):
        config = super().get_config()
        config.update({"label_smoothing": self.label_smoothing})
        return config


@register_task("classification")
class ClassificationTask(Task):
    """Image classification: cross-entropy, top-1 accuracy, per-class recall and the
    confusion matrix; served as class probabilities with the top-k labels."""

    class_outputs = True
    # Largest top-1 accuracy drop an int8 export may have (`export.int8_tolerance`).
    int8_tolerance = 0.01

    def load_dataset(self, name, **kwargs):
        return load_classification_data(name, **kwargs)

    def select_per_class(self, dataset, count, seed):
        dataset.x_train, dataset.y_train = per_class_subset(
            dataset.x_train, dataset.y_train, count, seed=seed
        )

    def make_dataset(self, data, images, labels, batch_size, shuffle=False, seed=0, augment=None):
        return make_dataset(
            images, labels, batch_size=batch_size, shuffle=shuffle, seed=seed, augment=augment
        )

    def loss(self, train_config, model=None):
        """Sparse cross-entropy; `train.loss: {label_smoothing: 0.1}` smooths the targets
        (`LabelSmoothingCrossEntropy`).

        Raises:
            ValueError: for an unknown `train.loss` key (named), or a `label_smoothing`
                outside [0, 1).
        """
        options = check_loss_keys(train_config.loss, LOSS_KEYS, "classification")
        smoothing = check_fraction(
            options.get("label_smoothing", 0.0), "train.loss.label_smoothing", low_open=False
        )
        if smoothing:
            return LabelSmoothingCrossEntropy(smoothing)
        return keras.losses.SparseCategoricalCrossentropy()

    def metrics(self, num_classes, train_config):
        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]

    def _matrix(self, predictions, data):
        labels = np.asarray(data.y_test)
        return confusion_matrix(labels, predictions.argmax(axis=-1), len(data.class_names))

    def evaluate(self, model, data, batch_size=32, train_config=None, predictions=None):
        """Test accuracy, loss and per-class recall."""
        if predictions is None:
            predictions = self.predict(model, data, batch_size)
        labels = np.asarray(data.y_test)
        matrix = self._matrix(predictions, data)
        recall = matrix.diagonal() / np.maximum(matrix.sum(axis=1), 1)
        picked = np.clip(predictions[np.arange(labels.size), labels], 1e-7, 1.0)
        return {
            "test_accuracy": float(np.mean(predictions.argmax(axis=-1) == labels)),
            "test_loss": float(-np.mean(np.log(picked))),
            "test_samples": int(labels.size),
            "per_class_recall": {
                name: float(value) for name, value in zip(data.class_names, recall, strict=True)
            },
        }

    def plot(self, model, data, batch_size=32, train_config=None, predictions=None):
        """`confusion_matrix.png`: the row-normalised confusion matrix of the test split."""
        if predictions is None:
            predictions = self.predict(model, data, batch_size)
        figure = plot_confusion_matrix(
            self._matrix(predictions, data), data.class_names, title="test split"
        )
        return {"confusion_matrix.png": figure}

    def summary(self, metrics):
        return f"test accuracy {metrics['test_accuracy']:.4f} on {metrics['test_samples']} images"

    def serving_signature(self, model, class_names, image_size=None):
        return ServingSignature(
            classification_endpoint(model, class_names, image_size), uint8_image_specs(model)
        )

    def export_metric(self, images, labels, class_names):
        """`("accuracy", function)`: top-1 accuracy of model outputs on `labels`."""
        labels = np.asarray(labels)
        return "accuracy", lambda outputs: float(np.mean(outputs.argmax(axis=-1) == labels))
