"""Image inpainting: the loss of Liu et al. (2018), PSNR / SSIM / hole-L1 metrics, evaluation.

Conventions shared by the data, the models, the loss and the metrics:

- A mask is 1 at valid (known) pixels and 0 in holes, shape `(B, H, W, 1)`.
- A model takes `[masked_image, mask]` and returns the predicted image `(B, H, W, C)`.
- The target `y_true` is the ground-truth image with the mask as a last extra channel,
  `(B, H, W, C + 1)`, so that the loss and the metrics, which need both, get them through
  Keras's `(y_true, y_pred)` (see `kcnn.data.make_inpainting_dataset`).
- The composited result is `mask * truth + (1 - mask) * output`: the known pixels kept,
  the holes filled by the network. The metrics score it, with the output clipped to [0, 1].
"""

import logging

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from kcnn._serialization import register
from kcnn.viz import plot_inpainting_grid

# Liu et al. (2018), eq. (7): L_valid + 6 L_hole + 0.05 L_perceptual + 120 L_style + 0.1 L_tv.
PAPER_LOSS_WEIGHTS = {
    "valid": 1.0,
    "hole": 6.0,
    "perceptual": 0.05,
    "style": 120.0,
    "tv": 0.1,
}
LOSS_KEYS = (*PAPER_LOSS_WEIGHTS, "vgg16_weights")
# VGG-16 layers whose outputs the perceptual and style terms compare (the paper's
# pool1, pool2, pool3), and the ImageNet BGR means the Keras VGG-16 weights expect.
VGG16_FEATURE_LAYERS = ("block1_pool", "block2_pool", "block3_pool")
VGG16_BGR_MEAN = (103.939, 116.779, 123.68)
# PSNR of a perfect reconstruction: the mean squared error is floored at 1e-10.
MIN_SQUARED_ERROR = 1e-10

_logger = logging.getLogger(__name__)


def split_target(y_true, channels):
    """`(truth, mask)` from a target `(B, H, W, C + 1)` whose last channel is the mask."""
    return y_true[..., :channels], y_true[..., channels : channels + 1]


def composite(truth, output, mask):
    """`mask * truth + (1 - mask) * output`: the known pixels, and the output in the holes."""
    return mask * truth + (1.0 - mask) * output


def _dilate(hole):
    """The hole region grown by one pixel in all 8 directions (a 3x3 maximum)."""
    return ops.max_pool(hole, pool_size=3, strides=1, padding="same")


def _per_image_mean(values):
    return ops.mean(ops.reshape(values, (ops.shape(values)[0], -1)), axis=1)


def hole_border_total_variation(comp, mask):
    """The total-variation term of Liu et al. (2018), eq. (6), per image.

    Sums |I(i, j+1) - I(i, j)| and |I(i+1, j) - I(i, j)| of `comp` over neighbouring pairs
    whose two pixels lie in P, the 1-pixel dilation of the hole region, and divides by the
    number of elements of `comp` (H W C).

    Args:
        comp: `(B, H, W, C)` composited images.
        mask: `(B, H, W, 1)`, 1 = valid.

    Returns:
        `(B,)` values.
    """
    region = _dilate(1.0 - mask)
    horizontal = region[:, :, 1:] * region[:, :, :-1] * ops.abs(comp[:, :, 1:] - comp[:, :, :-1])
    vertical = region[:, 1:] * region[:, :-1] * ops.abs(comp[:, 1:] - comp[:, :-1])
    elements = ops.cast(ops.prod(ops.shape(comp)[1:]), comp.dtype)
    per_image = ops.sum(horizontal, axis=(1, 2, 3)) + ops.sum(vertical, axis=(1, 2, 3))
    return per_image / elements


def gram_matrix(features):
    """K_p (Psi^T Psi) of Liu et al. (2018), eq. (4): `(B, C, C)` with K_p = 1 / (C H W)."""
    shape = ops.shape(features)
    flat = ops.reshape(features, (shape[0], -1, shape[3]))
    normaliser = ops.cast(shape[1] * shape[2] * shape[3], features.dtype)
    return ops.matmul(ops.transpose(flat, (0, 2, 1)), flat) / normaliser


def perceptual_term(features_out, features_comp, features_truth):
    """Eq. (3): sum over layers p of mean |Psi_p(out) - Psi_p(gt)| + mean |Psi_p(comp) -
    Psi_p(gt)|, per image (the mean is the paper's division by N_Psi)."""
    total = 0.0
    for out, comp, truth in zip(features_out, features_comp, features_truth, strict=True):
        total += _per_image_mean(ops.abs(out - truth)) + _per_image_mean(ops.abs(comp - truth))
    return total


def style_term(features, features_truth):
    """Eq. (4) (or (5) for the composited image): sum over layers p of the mean absolute
    difference of the Gram matrices (the paper's 1 / (C_p C_p) times the L1 norm),
    per image."""
    total = 0.0
    for feature, truth in zip(features, features_truth, strict=True):
        total += _per_image_mean(ops.abs(gram_matrix(feature) - gram_matrix(truth)))
    return total


def vgg16_feature_extractor(weights_path):
    """The pool1, pool2 and pool3 outputs of Keras's VGG-16 with weights from a local file.

    Args:
        weights_path: str. A local VGG-16 weights file loadable by
            `keras.applications.VGG16(include_top=False, weights=...)`, e.g. Keras's
            ImageNet file `vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5`. Nothing is
            downloaded.

    Returns:
        A frozen `keras.Model` mapping BGR, mean-subtracted images in [0, 255] to the list
        of the three feature maps.

    Raises:
        FileNotFoundError: if `weights_path` is not a file.
    """
    if not tf.io.gfile.exists(str(weights_path)):
        raise FileNotFoundError(f"VGG-16 weights file not found: {weights_path}")
    vgg = keras.applications.VGG16(
        include_top=False, weights=str(weights_path), input_shape=(None, None, 3)
    )
    extractor = keras.Model(
        vgg.input,
        [vgg.get_layer(name).output for name in VGG16_FEATURE_LAYERS],
        name="vgg16_features",
    )
    extractor.trainable = False
    return extractor


def _vgg_input(images):
    """[0, 1] RGB (or grey) images as Keras's VGG-16 expects them: BGR, 0-255, mean removed."""
    if images.shape[-1] == 1:
        images = ops.concatenate([images] * 3, axis=-1)
    bgr = ops.flip(images, axis=-1) * 255.0
    return bgr - ops.convert_to_tensor(VGG16_BGR_MEAN, dtype=images.dtype)


@register
class InpaintingLoss(keras.losses.Loss):
    """The loss of Liu et al. (2018) for inpainting with partial convolutions.

    Liu, Reda, Shih, Wang, Tao & Catanzaro, "Image Inpainting for Irregular Holes Using
    Partial Convolutions", 2018 (arXiv:1804.07723), eqs. (1)-(7), per image:

        L_valid = mean |M (I_out - I_gt)|          L_hole = mean |(1 - M)(I_out - I_gt)|
        L_tv    = total variation of I_comp on the 1-pixel dilation of the hole
        L_perc  = sum_p mean |Psi_p(I_out) - Psi_p(I_gt)| + mean |Psi_p(I_comp) - Psi_p(I_gt)|
        L_style = sum_p mean |K_p(Psi_p(I_out)) - K_p(Psi_p(I_gt))| (+ the same for I_comp)
        L       = w_valid L_valid + w_hole L_hole + w_perc L_perc
                  + w_style (L_style_out + L_style_comp) + w_tv L_tv

    where the means run over all H W C elements (the paper's 1 / N_Igt), I_comp is the
    output with the valid pixels set to the ground truth, Psi_p are VGG-16's pool1-pool3
    features and K_p the Gram matrix divided by C_p H_p W_p. The paper's weights are 1, 6,
    0.05, 120 and 0.1 (`PAPER_LOSS_WEIGHTS`). The perceptual and style terms need the VGG-16
    weights in a local file (`vgg16_weights`); nothing is downloaded.

    `call` returns one value per image, which Keras averages over the batch (and divides by
    the number of replicas under a distribution strategy).

    Args:
        valid_weight: float >= 0. Defaults to 1.
        hole_weight: float >= 0. Defaults to 6.
        tv_weight: float >= 0. Defaults to 0.1.
        perceptual_weight: float >= 0. Needs `vgg16_weights` when > 0. Defaults to 0.
        style_weight: float >= 0. Needs `vgg16_weights` when > 0. Defaults to 0.
        vgg16_weights: str or None. Local VGG-16 weights file for the perceptual and style
            terms (see `vgg16_feature_extractor`). Defaults to None.
        name: str. Defaults to `"inpainting_loss"`.
        reduction, dtype: as for any `keras.losses.Loss`.

    Raises:
        ValueError: if a weight is negative, or the perceptual or style weight is positive
            without `vgg16_weights`.

    Example:

    >>> truth = np.zeros((1, 4, 4, 3), "float32")
    >>> mask = np.ones((1, 4, 4, 1), "float32")
    >>> mask[:, 1:3, 1:3] = 0.0
    >>> y_true = np.concatenate([truth, mask], axis=-1)
    >>> output = np.full((1, 4, 4, 3), 0.5, "float32")
    >>> # 0.5 * 12/16 on the valid pixels + 6 * 0.5 * 4/16 in the hole
    >>> round(float(InpaintingLoss(tv_weight=0.0)(y_true, output)), 4)
    1.125
    """

    def __init__(
        self,
        valid_weight=1.0,
        hole_weight=6.0,
        tv_weight=0.1,
        perceptual_weight=0.0,
        style_weight=0.0,
        vgg16_weights=None,
        name="inpainting_loss",
        reduction="sum_over_batch_size",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        weights = {
            "valid_weight": valid_weight,
            "hole_weight": hole_weight,
            "tv_weight": tv_weight,
            "perceptual_weight": perceptual_weight,
            "style_weight": style_weight,
        }
        for key, value in weights.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"`{key}` must be a number >= 0. Received: {key}={value!r}")
        if (perceptual_weight or style_weight) and vgg16_weights is None:
            raise ValueError(
                "The perceptual and style terms need a local VGG-16 weights file "
                "`vgg16_weights`. Received: vgg16_weights=None with "
                f"perceptual_weight={perceptual_weight}, style_weight={style_weight}"
            )
        self.valid_weight = float(valid_weight)
        self.hole_weight = float(hole_weight)
        self.tv_weight = float(tv_weight)
        self.perceptual_weight = float(perceptual_weight)
        self.style_weight = float(style_weight)
        self.vgg16_weights = None if vgg16_weights is None else str(vgg16_weights)
        self._feature_extractor = None
        if self.perceptual_weight or self.style_weight:
            self._feature_extractor = vgg16_feature_extractor(self.vgg16_weights)

    def terms(self, y_true, y_pred):
        """The unweighted terms per image: a dict of `(B,)` tensors with keys `valid`,
        `hole`, `tv` and, with a feature extractor, `perceptual`, `style_out`,
        `style_comp`."""
        y_pred = ops.cast(y_pred, "float32")
        truth, mask = split_target(ops.cast(y_true, "float32"), y_pred.shape[-1])
        error = ops.abs(y_pred - truth)
        comp = composite(truth, y_pred, mask)
        terms = {
            "valid": _per_image_mean(mask * error),
            "hole": _per_image_mean((1.0 - mask) * error),
            "tv": hole_border_total_variation(comp, mask),
        }
        if self._feature_extractor is not None:
            batch = ops.shape(y_pred)[0]
            features = self._feature_extractor(
                _vgg_input(ops.concatenate([y_pred, comp, truth], axis=0))
            )
            out, comp_features, truth_features = zip(
                *[(f[:batch], f[batch : 2 * batch], f[2 * batch :]) for f in features],
                strict=True,
            )
            terms["perceptual"] = perceptual_term(out, comp_features, truth_features)
            terms["style_out"] = style_term(out, truth_features)
            terms["style_comp"] = style_term(comp_features, truth_features)
        return terms

    def call(self, y_true, y_pred):
        terms = self.terms(y_true, y_pred)
        loss = (
            self.valid_weight * terms["valid"]
            + self.hole_weight * terms["hole"]
            + self.tv_weight * terms["tv"]
        )
        if self._feature_extractor is not None:
            loss += self.perceptual_weight * terms["perceptual"]
            loss += self.style_weight * (terms["style_out"] + terms["style_comp"])
        return loss

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "valid_weight": self.valid_weight,
                "hole_weight": self.hole_weight,
                "tv_weight": self.tv_weight,
                "perceptual_weight": self.perceptual_weight,
                "style_weight": self.style_weight,
                "vgg16_weights": self.vgg16_weights,
            }
        )
        return config


def resolve_loss_weights(weights):
    """The weights `inpainting_loss` uses for a config's `train.loss` mapping.

    Returns:
        `(weights, vgg16_weights, skipped)`: a dict with the five weights `valid`, `hole`,
        `tv`, `perceptual`, `style` (a missing key is 0), the VGG-16 file or None, and
        whether positive perceptual or style weights were set to 0 for want of that file.

    Raises:
        ValueError: for a key outside `LOSS_KEYS` (the message names it).
    """
    unknown = sorted(set(weights) - set(LOSS_KEYS))
    if unknown:
        raise ValueError(
            f"Unknown inpainting loss key(s) {unknown} in `train.loss`. Known: {list(LOSS_KEYS)}"
        )
    resolved = {key: weights.get(key, 0.0) for key in PAPER_LOSS_WEIGHTS}
    vgg16_weights = weights.get("vgg16_weights")
    skipped = vgg16_weights is None and bool(resolved["perceptual"] or resolved["style"])
    if skipped:
        resolved["perceptual"] = resolved["style"] = 0.0
    if not (resolved["perceptual"] or resolved["style"]):
        vgg16_weights = None
    return resolved, vgg16_weights, skipped


def inpainting_loss(weights):
    """`InpaintingLoss` from a config's `train.loss` mapping.

    Keys: `valid`, `hole`, `tv`, `perceptual`, `style` (weights; a missing key is 0) and
    `vgg16_weights` (a local VGG-16 weights file). Without `vgg16_weights` the perceptual
    and style terms are left out and a note says so: their weights would be downloaded.

    Raises:
        ValueError: for a key outside the list above (the message names it).
    """
    resolved, vgg16_weights, skipped = resolve_loss_weights(weights)
    if skipped:
        _logger.warning(
            "inpainting loss: the perceptual (%s) and style (%s) terms are skipped: they need "
            "VGG-16 weights, and none were given (train.loss.vgg16_weights: a local file; "
            "nothing is downloaded)",
            weights.get("perceptual", 0.0),
            weights.get("style", 0.0),
        )
    return InpaintingLoss(
        valid_weight=resolved["valid"],
        hole_weight=resolved["hole"],
        tv_weight=resolved["tv"],
        perceptual_weight=resolved["perceptual"],
        style_weight=resolved["style"],
        vgg16_weights=vgg16_weights,
    )


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


def _spread_examples(buckets, count=6):
    """Indices of up to `count` test images, spread over the set and over the buckets."""
    order = sorted(set(buckets), key=lambda name: int(name.split("-")[0]))
    picked = []
    for position, bucket in enumerate(order[:count]):
        members = [i for i, name in enumerate(buckets) if name == bucket]
        picked.append(members[min(len(members) - 1, position * len(members) // count)])
    return picked


class InpaintingTask:
    """What the training loop needs to know about inpainting."""

    name = "inpainting"
    plots = ("predictions.png",)
    class_outputs = False
    # Largest PSNR drop (dB) an int8 export may have (`export.int8_tolerance`).
    int8_tolerance = 0.5

    def export_metric(self, images, masks, class_names):
        """`("psnr", function)`: mean PSNR of the composited results of model outputs on
        uint8 `images` with `masks` (1 = known), the task metric an export's parity report
        compares."""
        truth = np.asarray(images, dtype=np.float32) / 255.0
        mask = np.asarray(masks, dtype=np.float32)

        def psnr(outputs):
            result = composite(truth, np.clip(outputs, 0.0, 1.0).astype(np.float32), mask)
            return float(np.mean(inpainting_scores(truth, result, mask)["psnr"]))

        return "psnr", psnr

    def load_data(self, name, **kwargs):
        from kcnn.data import load_inpainting_data

        return load_inpainting_data(name, **kwargs)

    def make_dataset(self, data, images, masks, batch_size, shuffle=False, seed=0, augment=None):
        """Training batches (`shuffle=True`) pair each image with a fresh mask from
        `data.mask_pool` every epoch; otherwise each image keeps its own mask."""
        from kcnn.data import make_inpainting_dataset

        return make_inpainting_dataset(
            images,
            masks,
            batch_size=batch_size,
            shuffle=shuffle,
            seed=seed,
            augment=augment,
            mask_pool=data.mask_pool if shuffle else None,
        )

    def model_inputs(self, images, masks):
        """`[masked_image, mask]` float32 model inputs from uint8 images and masks."""
        mask = np.asarray(masks, dtype=np.float32)
        return [np.asarray(images, dtype=np.float32) / 255.0 * mask, mask]

    def _loss_config(self, train_config):
        return PAPER_LOSS_WEIGHTS if train_config.loss is None else train_config.loss

    def loss(self, train_config):
        return inpainting_loss(self._loss_config(train_config))

    def metrics(self, num_classes, train_config):
        return [PeakSignalToNoiseRatio(), StructuralSimilarity(), HoleL1()]

    def evaluate(self, model, data, batch_size, train_config):
        """PSNR, SSIM and hole-L1 of the composited test results, overall and per hole-area
        bucket, and the `predictions.png` grid."""
        inputs = self.model_inputs(data.x_test, data.y_test)
        output = np.clip(model.predict(inputs, batch_size=batch_size, verbose=0), 0.0, 1.0)
        truth = data.x_test.astype(np.float32) / 255.0
        result = np.asarray(composite(truth, output, inputs[1]))
        scores = inpainting_scores(truth, result, inputs[1])
        buckets = area_bucket_names(data.y_test)
        metrics = {key: float(np.mean(values)) for key, values in scores.items()}
        metrics["per_bucket"] = bucket_means(scores, buckets)
        metrics["test_images"] = int(len(truth))
        metrics["loss_weights"], _, _ = resolve_loss_weights(self._loss_config(train_config))
        shown = _spread_examples(buckets)
        figures = {
            "predictions.png": plot_inpainting_grid(
                inputs[0][shown],
                output[shown],
                result[shown],
                truth[shown],
                title="held-out photos, one per hole-area bucket: "
                + ", ".join(buckets[i] for i in shown),
            )
        }
        return metrics, figures

    def summary(self, metrics):
        return (
            f"test PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.4f}, hole L1 "
            f"{metrics['hole_l1']:.4f} on {metrics['test_images']} images"
        )
