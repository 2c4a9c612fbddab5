"""The inpainting loss of Liu et al. (2018) and its terms.

Liu, Reda, Shih, Wang, Tao & Catanzaro, "Image Inpainting for Irregular Holes Using Partial
Convolutions", 2018 (arXiv:1804.07723). Conventions: see `kcnn.tasks.inpainting`.
"""

import logging

import keras
import tensorflow as tf
from keras import ops

from kcnn._serialization import register
from kcnn._validation import check_loss_keys
from kcnn.ops import gram_matrix

# Liu et al. (2018), eq. (7): L_valid + 6 L_hole + 0.05 L_perceptual + 120 L_style + 0.1 L_tv.
PAPER_LOSS_WEIGHTS = {
    "valid": 1.0,
    "hole": 6.0,
    "perceptual": 0.05,
    "style": 120.0,
    "tv": 0.1,
}
# Terms beyond the paper's, 0 unless a config weights them.
EXTRA_LOSS_WEIGHTS = {"psnr": 0.0}
LOSS_KEYS = (*PAPER_LOSS_WEIGHTS, *EXTRA_LOSS_WEIGHTS, "vgg16_weights")
# The floor of the squared error in the PSNR term: 100 dB, so an image without a hole adds a
# constant and no gradient.
PSNR_MSE_FLOOR = 1e-10
# VGG-16 layers whose outputs the perceptual and style terms compare (the paper's
# pool1, pool2, pool3), and the ImageNet BGR means the Keras VGG-16 weights expect.
VGG16_FEATURE_LAYERS = ("block1_pool", "block2_pool", "block3_pool")
VGG16_BGR_MEAN = (103.939, 116.779, 123.68)
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
                  + w_style (L_style_out + L_style_comp) + w_tv L_tv + w_psnr L_psnr

    where the means run over all H W C elements (the paper's 1 / N_Igt), I_comp is the
    output with the valid pixels set to the ground truth, Psi_p are VGG-16's pool1-pool3
    features and K_p the Gram matrix divided by C_p H_p W_p. The paper's weights are 1, 6,
    0.05, 120 and 0.1 (`PAPER_LOSS_WEIGHTS`). The perceptual and style terms need the VGG-16
    weights in a local file (`vgg16_weights`); nothing is downloaded.

    One term is not the paper's: `L_psnr = log10(mean (I_comp - I_gt)^2 + 1e-10)`, the
    composite's PSNR in bels with its sign flipped (`-PSNR / 10` for images in [0, 1]).
    The evaluation averages PSNR over images, which weighs an error on a smooth image far
    more than the same error on a textured one; the L1 terms do not, and a network trained
    on them can lower the hole L1 while the mean PSNR falls. `L_psnr` is that mean PSNR
    itself.

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
        psnr_weight: float >= 0. The weight of `L_psnr`. Defaults to 0.

    Raises:
        ValueError: if a weight is negative, or the perceptual or style weight is positive
            without `vgg16_weights`.

    Example:

    >>> import numpy as np
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
        psnr_weight=0.0,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        weights = {
            "valid_weight": valid_weight,
            "hole_weight": hole_weight,
            "tv_weight": tv_weight,
            "perceptual_weight": perceptual_weight,
            "style_weight": style_weight,
            "psnr_weight": psnr_weight,
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
        self.psnr_weight = float(psnr_weight)
        self.vgg16_weights = None if vgg16_weights is None else str(vgg16_weights)
        self._feature_extractor = None
        if self.perceptual_weight or self.style_weight:
            self._feature_extractor = vgg16_feature_extractor(self.vgg16_weights)

    def terms(self, y_true, y_pred):
        """The unweighted terms per image: a dict of `(B,)` tensors with keys `valid`,
        `hole`, `tv`, `psnr` and, with a feature extractor, `perceptual`, `style_out`,
        `style_comp`."""
        y_pred = ops.cast(y_pred, "float32")
        truth, mask = split_target(ops.cast(y_true, "float32"), y_pred.shape[-1])
        error = ops.abs(y_pred - truth)
        comp = composite(truth, y_pred, mask)
        terms = {
            "valid": _per_image_mean(mask * error),
            "hole": _per_image_mean((1.0 - mask) * error),
            "tv": hole_border_total_variation(comp, mask),
            "psnr": ops.log(_per_image_mean(ops.square(comp - truth)) + PSNR_MSE_FLOOR)
            / ops.log(10.0),
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
        if self.psnr_weight:
            loss += self.psnr_weight * terms["psnr"]
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
                "psnr_weight": self.psnr_weight,
                "vgg16_weights": self.vgg16_weights,
            }
        )
        return config


def resolve_loss_weights(weights):
    """The weights `inpainting_loss` uses for a config's `train.loss` mapping.

    Returns:
        `(weights, vgg16_weights, skipped)`: a dict with the six weights `valid`, `hole`,
        `tv`, `perceptual`, `style`, `psnr` (a missing key is 0), the VGG-16 file or None, and
        whether positive perceptual or style weights were set to 0 for want of that file.

    Raises:
        ValueError: for a key outside `LOSS_KEYS` (the message names it).
    """
    check_loss_keys(weights, LOSS_KEYS, "inpainting")
    resolved = {key: weights.get(key, 0.0) for key in (*PAPER_LOSS_WEIGHTS, *EXTRA_LOSS_WEIGHTS)}
    vgg16_weights = weights.get("vgg16_weights")
    skipped = vgg16_weights is None and bool(resolved["perceptual"] or resolved["style"])
    if skipped:
        resolved["perceptual"] = resolved["style"] = 0.0
    if not (resolved["perceptual"] or resolved["style"]):
        vgg16_weights = None
    return resolved, vgg16_weights, skipped


def inpainting_loss(weights):
    """`InpaintingLoss` from a config's `train.loss` mapping.

    Keys: `valid`, `hole`, `tv`, `perceptual`, `style`, `psnr` (weights; a missing key is 0) and
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
        psnr_weight=resolved["psnr"],
        vgg16_weights=vgg16_weights,
    )
