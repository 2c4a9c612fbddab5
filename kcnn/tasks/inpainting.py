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

import numpy as np

from kcnn.data import load_inpainting_data, make_inpainting_dataset
from kcnn.export.serving import ServingSignature, inpainting_endpoint, uint8_image_specs
from kcnn.tasks.base import Task, register_task
from kcnn.tasks.inpainting_loss import (
    LOSS_KEYS,
    PAPER_LOSS_WEIGHTS,
    InpaintingLoss,
    composite,
    gram_matrix,
    hole_border_total_variation,
    inpainting_loss,
    perceptual_term,
    resolve_loss_weights,
    split_target,
    style_term,
    vgg16_feature_extractor,
)
from kcnn.tasks.inpainting_metrics import (
    HoleL1,
    PeakSignalToNoiseRatio,
    StructuralSimilarity,
    area_bucket_names,
    bucket_means,
    hole_l1_per_image,
    inpainting_scores,
    psnr_per_image,
    ssim_per_image,
)
from kcnn.viz import plot_inpainting_grid

__all__ = [
    "LOSS_KEYS",
    "PAPER_LOSS_WEIGHTS",
    "HoleL1",
    "InpaintingLoss",
    "InpaintingTask",
    "PeakSignalToNoiseRatio",
    "StructuralSimilarity",
    "area_bucket_names",
    "bucket_means",
    "composite",
    "gram_matrix",
    "hole_border_total_variation",
    "hole_l1_per_image",
    "inpainting_loss",
    "inpainting_scores",
    "perceptual_term",
    "psnr_per_image",
    "resolve_loss_weights",
    "split_target",
    "ssim_per_image",
    "style_term",
    "vgg16_feature_extractor",
]


def _spread_examples(buckets, count=6):
    """Indices of up to `count` test images, spread over the set and over the buckets."""
    order = sorted(set(buckets), key=lambda name: int(name.split("-")[0]))
    picked = []
    for position, bucket in enumerate(order[:count]):
        members = [i for i, name in enumerate(buckets) if name == bucket]
        picked.append(members[min(len(members) - 1, position * len(members) // count)])
    return picked


@register_task("inpainting")
class InpaintingTask(Task):
    """Image inpainting: the partial-convolution paper's loss, PSNR / SSIM / hole L1 of the
    composited results per hole-area bucket; served as the inpainted uint8 image."""

    # Largest PSNR drop (dB) an int8 export may have (`export.int8_tolerance`).
    int8_tolerance = 0.5

    def load_dataset(self, name, **kwargs):
        return load_inpainting_data(name, **kwargs)

    def make_dataset(self, data, images, masks, batch_size, shuffle=False, seed=0, augment=None):
        """Training batches (`shuffle=True`) pair each image with a fresh mask from
        `data.mask_pool` every epoch; otherwise each image keeps its own mask."""
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
        if train_config is None or train_config.loss is None:
            return PAPER_LOSS_WEIGHTS
        return train_config.loss

    def loss(self, train_config, model=None):
        return inpainting_loss(self._loss_config(train_config))

    def metrics(self, num_classes, train_config):
        return [PeakSignalToNoiseRatio(), StructuralSimilarity(), HoleL1()]

    def predict(self, model, data, batch_size=32):
        """The test images' network outputs clipped to [0, 1], `(N, H, W, C)`."""
        inputs = self.model_inputs(data.x_test, data.y_test)
        return np.clip(model.predict(inputs, batch_size=batch_size, verbose=0), 0.0, 1.0)

    def _results(self, data, output):
        truth = data.x_test.astype(np.float32) / 255.0
        mask = np.asarray(data.y_test, dtype=np.float32)
        return truth, mask, np.asarray(composite(truth, output, mask))

    def evaluate(self, model, data, batch_size=32, train_config=None, predictions=None):
        """PSNR, SSIM and hole-L1 of the composited test results, overall and per hole-area
        bucket, with the loss weights used."""
        output = self.predict(model, data, batch_size) if predictions is None else predictions
        truth, mask, result = self._results(data, output)
        scores = inpainting_scores(truth, result, mask)
        metrics = {key: float(np.mean(values)) for key, values in scores.items()}
        metrics["per_bucket"] = bucket_means(scores, area_bucket_names(data.y_test))
        metrics["test_images"] = int(len(truth))
        metrics["loss_weights"], _, _ = resolve_loss_weights(self._loss_config(train_config))
        return metrics

    def plot(self, model, data, batch_size=32, train_config=None, predictions=None):
        """`predictions.png`: one test image per hole-area bucket, masked input, output,
        composited result and truth."""
        output = self.predict(model, data, batch_size) if predictions is None else predictions
        truth, mask, result = self._results(data, output)
        buckets = area_bucket_names(data.y_test)
        shown = _spread_examples(buckets)
        figure = plot_inpainting_grid(
            (truth * mask)[shown],
            output[shown],
            result[shown],
            truth[shown],
            title="held-out photos, one per hole-area bucket: "
            + ", ".join(buckets[i] for i in shown),
        )
        return {"predictions.png": figure}

    def summary(self, metrics):
        return (
            f"test PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.4f}, hole L1 "
            f"{metrics['hole_l1']:.4f} on {metrics['test_images']} images"
        )

    def serving_signature(self, model, class_names, image_size=None):
        return ServingSignature(
            inpainting_endpoint(model, image_size), uint8_image_specs(model, masks=True)
        )

    def export_metric(self, images, masks, class_names):
        """`("psnr", function)`: mean PSNR of the composited results of model outputs on
        uint8 `images` with `masks` (1 = known)."""
        truth = np.asarray(images, dtype=np.float32) / 255.0
        mask = np.asarray(masks, dtype=np.float32)

        def psnr(outputs):
            result = composite(truth, np.clip(outputs, 0.0, 1.0).astype(np.float32), mask)
            return float(np.mean(inpainting_scores(truth, result, mask)["psnr"]))

        return "psnr", psnr
