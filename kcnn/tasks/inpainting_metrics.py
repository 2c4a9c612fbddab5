"""Inpainting scores: PSNR, SSIM and hole L1 of composited results, as Keras metrics and
in NumPy, and their means per hole-area bucket. Conventions: see `kcnn.tasks.inpainting`."""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from kcnn._serialization import register
from kcnn.tasks.inpainting_loss import _per_image_mean, composite, split_target

# PSNR of a perfect reconstruction: the mean squared error is floored at 1e-10.
MIN_SQUARED_ERROR = 1e-10


def _clipped_composite(y_true, y_pred):
    y_pred = ops.cast(y_pred, "float32")
    truth, mask = split_target(ops.cast(y_true, "float32"), y_pred.shape[-1])
    return truth, composite(truth, ops.clip(y_pred, 0.0, 1.0), mask), mask


def psnr_per_image(truth, result):
    """10 log10(1 / MSE) per image for images in [0, 1], the MSE floored at 1e-10 (so a
    perfect result scores 100 dB, not infinity). Otherwise `tf.image.psnr(max_val=1)`."""
    squared_error = _per_image_mean(ops.square(result - truth))
    return -10.0 * ops.log10(ops.maximum(squared_error, MIN_SQUARED_ERROR))


def ssim_per_image(truth, result):
    """TensorFlow's SSIM (`tf.image.ssim`, 11x11 Gaussian window, sigma 1.5, max_val 1) per
    image. Keras has no SSIM op, hence `tf`. Images must be at least 11x11."""
    return tf.image.ssim(result, truth, max_val=1.0)


def hole_l1_per_image(truth, result, mask):
    """Mean absolute error over the hole pixels (all channels) of each image; 0 for an
    image without a hole."""
    channels = ops.cast(ops.shape(truth)[-1], truth.dtype)
    hole = 1.0 - mask
    error = ops.sum(hole * ops.abs(result - truth), axis=(1, 2, 3))
    return error / ops.maximum(channels * ops.sum(hole, axis=(1, 2, 3)), 1.0)


class _PerImageMetric(keras.metrics.Mean):
    """Mean over images of a score of the composited result (output clipped to [0, 1])."""

    def score(self, truth, result, mask):
        raise NotImplementedError

    def update_state(self, y_true, y_pred, sample_weight=None):
        truth, result, mask = _clipped_composite(y_true, y_pred)
        return super().update_state(self.score(truth, result, mask), sample_weight)


@register
class PeakSignalToNoiseRatio(_PerImageMetric):
    """Mean PSNR (dB) of the composited results (see `psnr_per_image`).

    `y_true` is the ground truth with the mask as last channel; `y_pred` the model output.

    Example:

    >>> y_true = np.concatenate([np.zeros((1, 4, 4, 3)), np.zeros((1, 4, 4, 1))], axis=-1)
    >>> metric = PeakSignalToNoiseRatio()
    >>> _ = metric.update_state(y_true, np.full((1, 4, 4, 3), 0.1))
    >>> round(float(metric.result()), 3)
    20.0
    """

    def __init__(self, name="psnr", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def score(self, truth, result, mask):
        return psnr_per_image(truth, result)


@register
class StructuralSimilarity(_PerImageMetric):
    """Mean SSIM of the composited results (TensorFlow's `tf.image.ssim`)."""

    def __init__(self, name="ssim", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def score(self, truth, result, mask):
        return ssim_per_image(truth, result)


@register
class HoleL1(_PerImageMetric):
    """Mean over images of the mean absolute error in the holes (see `hole_l1_per_image`)."""

    def __init__(self, name="hole_l1", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def score(self, truth, result, mask):
        return hole_l1_per_image(truth, result, mask)


def inpainting_scores(truth, result, masks, batch_size=64):
    """PSNR, SSIM and hole-L1 of each image: the scores of the metrics above, in NumPy.

    Args:
        truth: `(N, H, W, C)` ground truth, uint8 or float in [0, 1].
        result: `(N, H, W, C)` inpainted images, uint8 or float (clipped to [0, 1]). Pass
            composited results: pixels outside the holes count in PSNR and SSIM.
        masks: `(N, H, W, 1)`, 1 = valid.
        batch_size: int. Images per TensorFlow call. Defaults to 64.

    Returns:
        dict of float64 `(N,)` arrays: `psnr`, `ssim`, `hole_l1`.
    """

    def unit(images):
        images = np.asarray(images)
        scale = 255.0 if images.dtype == np.uint8 else 1.0
        return np.clip(images.astype(np.float32) / scale, 0.0, 1.0)

    truth, result = unit(truth), unit(result)
    masks = np.asarray(masks, dtype=np.float32)
    scores = {"psnr": [], "ssim": [], "hole_l1": []}
    for start in range(0, len(truth), batch_size):
        part = slice(start, start + batch_size)
        t, r, m = (tf.constant(a[part]) for a in (truth, result, masks))
        scores["psnr"].append(np.asarray(psnr_per_image(t, r)))
        scores["ssim"].append(np.asarray(ssim_per_image(t, r)))
        scores["hole_l1"].append(np.asarray(hole_l1_per_image(t, r, m)))
    return {key: np.concatenate(values).astype(np.float64) for key, values in scores.items()}


def area_bucket_names(masks, bucket_width=0.1):
    """The hole-area bucket of each mask, as `"10-20%"`: the ratio's 10% step, from 0.

    Masks whose hole ratio is 60% or more share the bucket `"60-100%"`.
    """
    masks = np.asarray(masks)
    ratios = 1.0 - masks.reshape(len(masks), -1).mean(axis=1, dtype=np.float64)
    steps = np.minimum(np.floor(ratios / bucket_width + 1e-9).astype(int), 6)
    return [f"{10 * s}-{10 * s + 10}%" if s < 6 else "60-100%" for s in steps]


def bucket_means(scores, buckets):
    """{bucket: {score: mean, "images": n}} in bucket order."""
    buckets = np.asarray(buckets)
    summary = {}
    for bucket in sorted(set(buckets.tolist()), key=lambda name: int(name.split("-")[0])):
        members = buckets == bucket
        summary[bucket] = {key: float(np.mean(values[members])) for key, values in scores.items()}
        summary[bucket]["images"] = int(members.sum())
    return summary
