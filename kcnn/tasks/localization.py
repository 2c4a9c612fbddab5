"""Classification with localization: one object per image, its class and its box.

Conventions shared by the data, the model, the loss and the metrics:

- Targets are `(B, 5)` rows: the box `(x_min, y_min, x_max, y_max)` as fractions of the
  image width and height, then the 0-based class (`kcnn.data.make_localization_dataset`
  divides the data's pixel rows by the image size).
- The model returns `(B, 4 + num_classes)`: the box in the same fractions, then the class
  probabilities (`kcnn.models.build_localizer`).
- A prediction is *correct* when its class is right and its box overlaps the true one with
  IoU >= 0.5 (the PASCAL VOC criterion, used by OverFeat and ILSVRC's localization task
  with the error counted the other way).
"""

import keras
import numpy as np

from kcnn._serialization import register
from kcnn._validation import check_loss_keys
from kcnn.data import load_localization_data, make_localization_dataset
from kcnn.data.localization import normalize_rows
from kcnn.detection import box_giou, box_iou
from kcnn.export.serving import ServingSignature, localization_endpoint, uint8_image_specs
from kcnn.tasks.base import Task, register_task
from kcnn.viz import plot_detection_grid

__all__ = [
    "BOX_LOSSES",
    "CORRECT_IOU",
    "LOSS_KEYS",
    "LocalizationLoss",
    "LocalizationTask",
    "localization_scores",
]

BOX_LOSSES = ("smooth_l1", "giou")
LOSS_KEYS = ("box_loss", "box_weight", "beta")
CORRECT_IOU = 0.5
PLOT_IMAGES = 6


def _split(y_true, y_pred):
    classes = keras.ops.cast(y_true[:, 4], "int32")
    return y_true[:, :4], classes, y_pred[:, :4], y_pred[:, 4:]


@register
class LocalizationLoss(keras.losses.Loss):
    """Cross-entropy of the class plus `box_weight` times a box regression loss.

    The two-head objective of OverFeat (Sermanet et al. 2014, arXiv:1312.6229) and of the
    Fast R-CNN multi-task loss (Girshick 2015, arXiv:1504.08083, eq. 1) for one object:

        L = -log p[class] + box_weight * L_box

    with `L_box` either the smooth L1 of Fast R-CNN (eq. 3) summed over the four box
    coordinates, `0.5 d**2 / beta` where `|d| < beta`, else `|d| - 0.5 beta`, on coordinates
    that are fractions of the image; or `1 - GIoU` (Rezatofighi et al. 2019,
    arXiv:1902.09630), which still pulls a box that does not overlap its target.

    Args:
        box_loss: `"smooth_l1"` or `"giou"`. Defaults to `"smooth_l1"`.
        box_weight: float >= 0. Weight of the box loss. Defaults to `2.0`.
        beta: float > 0. Where smooth L1 turns from quadratic to linear, as a fraction of
            the image side. Defaults to `0.05`.
        name: str. Defaults to `"localization_loss"`.

    Raises:
        ValueError: for a `box_loss` not in `BOX_LOSSES` or a weight out of range (named).

    Example:

    >>> y_true = np.array([[0.1, 0.1, 0.5, 0.5, 1.0]], "float32")
    >>> y_pred = np.array([[0.1, 0.1, 0.5, 0.5, 0.5, 0.5]], "float32")
    >>> round(float(LocalizationLoss()(y_true, y_pred)), 4)  # -log 0.5, a perfect box
    0.6931
    """

    def __init__(
        self,
        box_loss="smooth_l1",
        box_weight=2.0,
        beta=0.05,
        reduction="sum_over_batch_size",
        name="localization_loss",
        dtype=None,
    ):
        if box_loss not in BOX_LOSSES:
            raise ValueError(f"`box_loss` must be one of {BOX_LOSSES}. Received: {box_loss!r}")
        if not isinstance(box_weight, int | float) or box_weight < 0:
            raise ValueError(f"`box_weight` must be a number >= 0. Received: {box_weight!r}")
        if not isinstance(beta, int | float) or beta <= 0:
            raise ValueError(f"`beta` must be a number > 0. Received: beta={beta!r}")
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.box_loss = box_loss
        self.box_weight = float(box_weight)
        self.beta = float(beta)

    def call(self, y_true, y_pred):
        box_true, classes, box_pred, probabilities = _split(
            keras.ops.cast(y_true, "float32"), keras.ops.cast(y_pred, "float32")
        )
        class_loss = keras.losses.sparse_categorical_crossentropy(classes, probabilities)
        if self.box_loss == "giou":
            box = 1.0 - box_giou(box_pred, box_true)
        else:
            difference = keras.ops.abs(box_pred - box_true)
            box = keras.ops.sum(
                keras.ops.where(
                    difference < self.beta,
                    0.5 * difference**2 / self.beta,
                    difference - 0.5 * self.beta,
                ),
                axis=-1,
            )
        return class_loss + self.box_weight * box

    def get_config(self):
        config = super().get_config()
        config.update(box_loss=self.box_loss, box_weight=self.box_weight, beta=self.beta)
        return config


def localization_scores(y_true, y_pred):
    """Per-image `(class right, box IoU, correct)` of predictions `(N, 4 + K)` against
    targets `(N, 5)` (see the module docstring), as float tensors `(N,)`."""
    box_true, classes, box_pred, probabilities = _split(
        keras.ops.cast(y_true, "float32"), keras.ops.cast(y_pred, "float32")
    )
    right = keras.ops.cast(keras.ops.argmax(probabilities, axis=-1), "int32") == classes
    iou = box_iou(box_pred, box_true)
    correct = keras.ops.logical_and(right, iou >= CORRECT_IOU)
    return keras.ops.cast(right, "float32"), iou, keras.ops.cast(correct, "float32")


def _unit_rows(rows, images):
    """Pixel rows `(N, 5)` of `images` as the model's targets: boxes as fractions."""
    height, width = np.asarray(images).shape[1:3]
    return keras.ops.convert_to_numpy(normalize_rows(rows, height, width))


# One registered function per Keras metric, so a saved, compiled model reloads.
@register
def class_right(y_true, y_pred):
    """1.0 where the class is right (see `localization_scores`)."""
    return localization_scores(y_true, y_pred)[0]


@register
def box_overlap(y_true, y_pred):
    """The IoU of the predicted and the true box (see `localization_scores`)."""
    return localization_scores(y_true, y_pred)[1]


@register
def localized_correctly(y_true, y_pred):
    """1.0 where the class is right and the box IoU >= 0.5 (see `localization_scores`)."""
    return localization_scores(y_true, y_pred)[2]


@register_task("localization")
class LocalizationTask(Task):
    """Classification with localization: class accuracy, mean box IoU and the fraction
    correct (right class and IoU >= 0.5); served as label, score and box in input pixels."""

    # Largest drop of the fraction correct an int8 export may have.
    int8_tolerance = 0.02
    tflite_outputs = (
        "(B, 4 + K): the box (x_min, y_min, x_max, y_max) as fractions of the image width "
        "and height, then the class probabilities"
    )

    def load_dataset(self, name, **kwargs):
        return load_localization_data(name, **kwargs)

    def make_dataset(self, data, images, rows, batch_size, shuffle=False, seed=0, augment=None):
        return make_localization_dataset(
            images, rows, batch_size=batch_size, shuffle=shuffle, seed=seed, augment=augment
        )

    def loss(self, train_config, model=None):
        """`LocalizationLoss` with the `train.loss` options (`LOSS_KEYS`).

        Raises:
            ValueError: for an unknown `train.loss` key (named).
        """
        return LocalizationLoss(**check_loss_keys(train_config.loss, LOSS_KEYS, "localization"))

    def metrics(self, num_classes, train_config):
        return [
            keras.metrics.MeanMetricWrapper(function, name=name)
            for function, name in (
                (class_right, "accuracy"),
                (box_overlap, "mean_iou"),
                (localized_correctly, "correct"),
            )
        ]

    def evaluate(self, model, data, batch_size=32, train_config=None, predictions=None):
        """Test accuracy, mean IoU, fraction correct, and the fraction correct per class."""
        if predictions is None:
            predictions = self.predict(model, data, batch_size)
        right, iou, correct = (
            keras.ops.convert_to_numpy(score)
            for score in localization_scores(_unit_rows(data.y_test, data.x_test), predictions)
        )
        classes = np.asarray(data.y_test)[:, 4].astype(int)
        return {
            "test_accuracy": float(right.mean()),
            "test_mean_iou": float(iou.mean()),
            "test_correct": float(correct.mean()),
            "test_samples": int(len(classes)),
            "per_class_correct": {
                name: float(correct[classes == index].mean()) if np.any(classes == index) else None
                for index, name in enumerate(data.class_names)
            },
        }

    def plot(self, model, data, batch_size=32, train_config=None, predictions=None):
        """`predictions.png`: true boxes and labels beside the predicted box, label and
        score on the first test images."""
        if predictions is None:
            predictions = self.predict(model, data, batch_size)
        count = min(PLOT_IMAGES, len(data.x_test))
        height, width = data.x_test.shape[1:3]
        scale = np.array([width, height, width, height], np.float32)
        rows = np.asarray(data.y_test)[:count]
        truth = [(row[None, :4], row[None, 4].astype(int)) for row in rows]
        predicted = [
            (
                output[None, :4] * scale,
                output[None, 4:].argmax(-1),
                output[None, 4:].max(-1),
            )
            for output in np.asarray(predictions)[:count]
        ]
        figure = plot_detection_grid(
            data.x_test[:count],
            truth,
            predicted,
            data.class_names,
            title="test split",
            column_titles=("ground truth", "prediction"),
        )
        return {"predictions.png": figure}

    def summary(self, metrics):
        return (
            f"test accuracy {metrics['test_accuracy']:.4f}, mean IoU "
            f"{metrics['test_mean_iou']:.4f}, correct {metrics['test_correct']:.4f} on "
            f"{metrics['test_samples']} images"
        )

    def serving_signature(self, model, class_names, image_size=None):
        return ServingSignature(
            localization_endpoint(model, class_names, image_size), uint8_image_specs(model)
        )

    def export_metric(self, images, rows, class_names):
        """`("correct", function)`: the fraction of outputs with the right class and a box of
        IoU >= 0.5 on `rows` (pixels of `images`)."""
        targets = _unit_rows(rows, images)
        return "correct", lambda outputs: float(
            np.mean(keras.ops.convert_to_numpy(localization_scores(targets, outputs)[2]))
        )
