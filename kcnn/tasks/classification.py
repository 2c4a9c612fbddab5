"""Image classification: one class label per image."""

import keras
import numpy as np

from kcnn.data import load_classification_data, make_dataset, per_class_subset
from kcnn.export.serving import ServingSignature, classification_endpoint, uint8_image_specs
from kcnn.models.classifier import build_classifier
from kcnn.tasks.base import Task, register_task
from kcnn.viz import confusion_matrix, plot_confusion_matrix

__all__ = ["ClassificationTask", "build_classifier"]


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
