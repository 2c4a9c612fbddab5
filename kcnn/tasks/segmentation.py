"""Semantic segmentation: losses, metrics and evaluation of per-pixel classifiers."""

import keras
import numpy as np

from kcnn.data import load_segmentation_data, make_segmentation_dataset
from kcnn.export.serving import ServingSignature, segmentation_endpoint, uint8_image_specs
from kcnn.tasks.base import Task, register_task
from kcnn.tasks.losses import segmentation_loss
from kcnn.viz import confusion_matrix, plot_segmentation_grid

DEFAULT_LOSS = {"crossentropy": 1.0, "dice": 1.0}


def segmentation_scores(matrix, class_names):
    """IoU, Dice/F1 per class, mean IoU and pixel accuracy from a confusion matrix.

    IoU_k = TP / (TP + FP + FN) and Dice_k = 2 TP / (2 TP + FP + FN) (the PASCAL VOC and
    Cityscapes definitions); the mean IoU averages the classes present in the ground truth
    or the predictions (a class absent from both has no IoU and is left out).

    Args:
        matrix: (K, K) counts, rows = true class, columns = predicted class.
        class_names: K names.

    Returns:
        dict with `mean_iou`, `pixel_accuracy`, `mean_dice`, `per_class_iou`,
        `per_class_dice`.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    true_positive = np.diag(matrix)
    false_positive = matrix.sum(axis=0) - true_positive
    false_negative = matrix.sum(axis=1) - true_positive
    union = true_positive + false_positive + false_negative
    present = union > 0
    iou = np.where(present, true_positive / np.maximum(union, 1), np.nan)
    dice = np.where(
        present,
        2 * true_positive / np.maximum(2 * true_positive + false_positive + false_negative, 1),
        np.nan,
    )
    return {
        "mean_iou": float(np.nanmean(iou)),
        "pixel_accuracy": float(true_positive.sum() / max(matrix.sum(), 1)),
        "mean_dice": float(np.nanmean(dice)),
        "per_class_iou": {n: float(v) for n, v in zip(class_names, iou, strict=True)},
        "per_class_dice": {n: float(v) for n, v in zip(class_names, dice, strict=True)},
    }


@register_task("segmentation")
class SegmentationTask(Task):
    """Semantic segmentation: per-pixel class maps scored by mean IoU and Dice, served as a
    class map at the input's size."""

    class_outputs = True
    # Largest mean-IoU drop an int8 export may have (`export.int8_tolerance`).
    int8_tolerance = 0.02

    def load_dataset(self, name, **kwargs):
        return load_segmentation_data(name, **kwargs)

    def make_dataset(self, data, images, masks, batch_size, shuffle=False, seed=0, augment=None):
        return make_segmentation_dataset(
            images, masks, batch_size=batch_size, shuffle=shuffle, seed=seed, augment=augment
        )

    def loss(self, train_config, model=None):
        return segmentation_loss(train_config.loss or DEFAULT_LOSS, train_config.ignore_index)

    def metrics(self, num_classes, train_config):
        return [
            keras.metrics.SparseCategoricalAccuracy(name="pixel_accuracy"),
            keras.metrics.MeanIoU(
                num_classes,
                name="mean_iou",
                sparse_y_pred=False,
                ignore_class=train_config.ignore_index,
            ),
        ]

    def predict(self, model, data, batch_size=32):
        """The class map of each test image, `(N, H, W)`."""
        return super().predict(model, data, batch_size).argmax(axis=-1)

    def evaluate(self, model, data, batch_size=32, train_config=None, predictions=None):
        """Mean IoU, pixel accuracy, mean Dice, per-class IoU and Dice on the test split;
        pixels labelled `train.ignore_index` are left out."""
        if predictions is None:
            predictions = self.predict(model, data, batch_size)
        labels = np.asarray(data.y_test, dtype=np.int64)
        keep = np.ones_like(labels, dtype=bool)
        ignore_index = None if train_config is None else train_config.ignore_index
        if ignore_index is not None:
            keep = labels != ignore_index
        matrix = confusion_matrix(labels[keep], predictions[keep], len(data.class_names))
        metrics = segmentation_scores(matrix, data.class_names)
        metrics["test_images"] = int(labels.shape[0])
        return metrics

    def plot(self, model, data, batch_size=32, train_config=None, predictions=None):
        """`predictions.png`: six test images with ground truth and prediction."""
        if predictions is None:
            predictions = self.predict(model, data, batch_size)
        figure = plot_segmentation_grid(
            data.x_test[:6],
            np.asarray(data.y_test[:6], dtype=np.int64),
            predictions[:6],
            data.class_names,
            title="held-out images: ground truth and prediction",
        )
        return {"predictions.png": figure}

    def summary(self, metrics):
        return (
            f"test mean IoU {metrics['mean_iou']:.4f}, pixel accuracy "
            f"{metrics['pixel_accuracy']:.4f} on {metrics['test_images']} images"
        )

    def serving_signature(self, model, class_names, image_size=None):
        return ServingSignature(segmentation_endpoint(model, image_size), uint8_image_specs(model))

    def export_metric(self, images, masks, class_names):
        """`("mean_iou", function)`: mean IoU of model outputs against `masks`."""
        labels = np.asarray(masks, dtype=np.int64).ravel()
        keep = (labels >= 0) & (labels < len(class_names))  # drops an ignore_index label

        def mean_iou(outputs):
            predictions = outputs.argmax(axis=-1).ravel()
            matrix = confusion_matrix(labels[keep], predictions[keep], len(class_names))
            return segmentation_scores(matrix, class_names)["mean_iou"]

        return "mean_iou", mean_iou
