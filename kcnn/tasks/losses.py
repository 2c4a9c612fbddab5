"""Segmentation losses that add up like segmentation_models': `DiceLoss() + FocalLoss()`.

All take integer masks `(B, H, W)` (or `(B, H, W, 1)`) and per-pixel probabilities
`(B, H, W, K)` (softmax; `K = 1` is read as the sigmoid probability of the foreground class,
so binary segmentation works too). Pixels whose label is `ignore_index` count in no term.
Cross-entropy is Keras's own `SparseCategoricalCrossentropy(ignore_class=...)`.
"""

import keras
import tensorflow as tf
from keras import ops

from kcnn._serialization import register

SMOOTH = 1.0


def _replica_share(value):
    """A batch-level loss divided by the number of replicas in sync.

    Keras divides the mean it reduces per-pixel losses to by the replica count, so that
    the replicas' summed gradients are those of the global mean; a loss whose `call`
    returns a scalar skips that reduction, so the scalar losses here do it themselves
    (without it, 2 replicas would take twice the step of one device).
    """
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return value / replicas if replicas > 1 else value


def _prepare(y_true, y_pred, ignore_index):
    """Returns one-hot targets, class probabilities and a (B, H, W, 1) validity weight."""
    y_pred = ops.cast(y_pred, "float32")
    if y_pred.shape[-1] == 1:
        y_pred = ops.concatenate([1.0 - y_pred, y_pred], axis=-1)
    num_classes = y_pred.shape[-1]
    labels = ops.cast(y_true, "int32")
    if len(labels.shape) == len(y_pred.shape):
        labels = ops.squeeze(labels, axis=-1)
    valid = ops.ones_like(labels, dtype="float32")
    if ignore_index is not None:
        valid = ops.cast(ops.not_equal(labels, ignore_index), "float32")
        labels = ops.where(ops.equal(labels, ignore_index), 0, labels)
    one_hot = ops.one_hot(labels, num_classes)
    return one_hot, y_pred, ops.expand_dims(valid, -1)


class _SummableLoss(keras.losses.Loss):
    """A loss that can be added to another loss or scaled by a number."""

    def __add__(self, other):
        return SumLoss([self, other])

    def __radd__(self, other):
        return SumLoss([other, self])

    def __mul__(self, factor):
        return SumLoss([self], weights=[factor])

    __rmul__ = __mul__


@register
class DiceLoss(_SummableLoss):
    """1 − mean over classes of the soft Dice coefficient (Milletari et al. 2016, V-Net,
    arXiv:1606.04797): Dice_k = (2 Σ p·g + s) / (Σ p + Σ g + s) over the batch's valid
    pixels, with smoothing s = 1 so empty classes score 1.

    Args:
        ignore_index: int or None. Label of pixels to leave out. Defaults to None.
        class_weights: None or a sequence of K weights for the class mean. Defaults to None.
        name: str. Defaults to `"dice_loss"`.

    Example:
    >>> import numpy as np
    >>> y_true = np.array([[[0, 1]]])
    >>> y_pred = np.array([[[[1.0, 0.0], [0.0, 1.0]]]])
    >>> float(DiceLoss()(y_true, y_pred))
    0.0
    """

    def __init__(self, ignore_index=None, class_weights=None, name="dice_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.ignore_index = ignore_index
        self.class_weights = None if class_weights is None else list(class_weights)

    def call(self, y_true, y_pred):
        one_hot, y_pred, valid = _prepare(y_true, y_pred, self.ignore_index)
        axes = tuple(range(len(y_pred.shape) - 1))
        intersection = ops.sum(one_hot * y_pred * valid, axis=axes)
        total = ops.sum((one_hot + y_pred) * valid, axis=axes)
        dice = (2.0 * intersection + SMOOTH) / (total + SMOOTH)
        if self.class_weights is None:
            return _replica_share(1.0 - ops.mean(dice))
        weights = ops.convert_to_tensor(self.class_weights, "float32")
        return _replica_share(1.0 - ops.sum(dice * weights) / ops.sum(weights))

    def get_config(self):
        config = super().get_config()
        config.update({"ignore_index": self.ignore_index, "class_weights": self.class_weights})
        return config


@register
class JaccardLoss(DiceLoss):
    """1 − mean soft IoU (Jaccard index): (Σ p·g + s) / (Σ p + Σ g − Σ p·g + s).

    Args: as `DiceLoss`; name defaults to `"jaccard_loss"`.
    """

    def __init__(self, ignore_index=None, class_weights=None, name="jaccard_loss", **kwargs):
        super().__init__(ignore_index, class_weights, name=name, **kwargs)

    def call(self, y_true, y_pred):
        one_hot, y_pred, valid = _prepare(y_true, y_pred, self.ignore_index)
        axes = tuple(range(len(y_pred.shape) - 1))
        intersection = ops.sum(one_hot * y_pred * valid, axis=axes)
        union = ops.sum((one_hot + y_pred) * valid, axis=axes) - intersection
        iou = (intersection + SMOOTH) / (union + SMOOTH)
        if self.class_weights is None:
            return _replica_share(1.0 - ops.mean(iou))
        weights = ops.convert_to_tensor(self.class_weights, "float32")
        return _replica_share(1.0 - ops.sum(iou * weights) / ops.sum(weights))


@register
class FocalLoss(_SummableLoss):
    """Focal loss (Lin et al. 2017, arXiv:1708.02002): −α (1 − p_t)^γ log p_t per pixel,
    averaged over valid pixels.

    Args:
        gamma: float >= 0. Focusing parameter. Defaults to 2.0.
        alpha: float. Weight of every term. Defaults to 1.0 (0.25 in the paper's detector).
        ignore_index: int or None. Defaults to None.
        name: str. Defaults to `"focal_loss"`.
    """

    def __init__(self, gamma=2.0, alpha=1.0, ignore_index=None, name="focal_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        if gamma < 0:
            raise ValueError(f"`gamma` must be >= 0. Received: gamma={gamma}")
        self.gamma, self.alpha, self.ignore_index = float(gamma), float(alpha), ignore_index

    def call(self, y_true, y_pred):
        one_hot, y_pred, valid = _prepare(y_true, y_pred, self.ignore_index)
        p_true = ops.clip(ops.sum(one_hot * y_pred, axis=-1, keepdims=True), 1e-7, 1.0)
        terms = -self.alpha * ops.power(1.0 - p_true, self.gamma) * ops.log(p_true) * valid
        return _replica_share(ops.sum(terms) / ops.maximum(ops.sum(valid), 1.0))

    def get_config(self):
        config = super().get_config()
        config.update({"gamma": self.gamma, "alpha": self.alpha, "ignore_index": self.ignore_index})
        return config


@register
class CrossEntropyLoss(_SummableLoss):
    """Pixel-wise cross-entropy averaged over valid pixels: Keras's
    `SparseCategoricalCrossentropy(ignore_class=ignore_index)`, made summable.

    Args:
        ignore_index: int or None. Defaults to None.
        name: str. Defaults to `"crossentropy_loss"`.
    """

    def __init__(self, ignore_index=None, name="crossentropy_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.ignore_index = ignore_index
        self._keras_loss = keras.losses.SparseCategoricalCrossentropy(ignore_class=ignore_index)

    def call(self, y_true, y_pred):
        if y_pred.shape[-1] == 1:
            y_pred = ops.concatenate([1.0 - y_pred, y_pred], axis=-1)
        return self._keras_loss(y_true, y_pred)

    def get_config(self):
        config = super().get_config()
        config.update({"ignore_index": self.ignore_index})
        return config


@register
class SumLoss(_SummableLoss):
    """A weighted sum of losses: what `loss_a + loss_b` and `2.0 * loss` build.

    Args:
        losses: list of Keras losses.
        weights: list of floats (same length) or None for all ones.
        name: str. Defaults to `"sum_loss"`.
    """

    def __init__(self, losses, weights=None, name="sum_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        losses = [keras.losses.deserialize(lo) if isinstance(lo, dict) else lo for lo in losses]
        weights = [1.0] * len(losses) if weights is None else [float(w) for w in weights]
        if len(weights) != len(losses):
            raise ValueError(
                f"`weights` must have one entry per loss. Received {len(weights)} weights for "
                f"{len(losses)} losses."
            )
        flat_losses, flat_weights = [], []
        for loss, weight in zip(losses, weights, strict=True):
            if isinstance(loss, SumLoss):  # keep sums flat: a + b + c is one sum of three
                flat_losses += loss.losses
                flat_weights += [weight * inner for inner in loss.weights]
            else:
                flat_losses.append(loss)
                flat_weights.append(weight)
        self.losses, self.weights = flat_losses, flat_weights

    def call(self, y_true, y_pred):
        total = 0.0
        for loss, weight in zip(self.losses, self.weights, strict=True):
            total = total + weight * loss(y_true, y_pred)
        return total

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "losses": [keras.losses.serialize(loss) for loss in self.losses],
                "weights": self.weights,
            }
        )
        return config


LOSSES = {
    "crossentropy": CrossEntropyLoss,
    "dice": DiceLoss,
    "jaccard": JaccardLoss,
    "focal": FocalLoss,
}


def segmentation_loss(terms, ignore_index=None):
    """Builds the sum of named losses, e.g. `{"crossentropy": 1.0, "dice": 1.0}`.

    Raises:
        ValueError: naming an unknown loss and listing the known ones.
    """
    losses, weights = [], []
    for name, weight in terms.items():
        if name not in LOSSES:
            raise ValueError(f"Unknown loss {name!r} in `train.loss`. Known: {sorted(LOSSES)}")
        losses.append(LOSSES[name](ignore_index=ignore_index))
        weights.append(weight)
    return SumLoss(losses, weights)
