"""Instance masks of Mask R-CNN: the mask head's targets and loss, and masks pasted into
the image.

He, Gkioxari, Dollar & Girshick 2017, "Mask R-CNN" (arXiv:1703.06870), section 3, with
Detectron2's conventions where the paper leaves one open:

- Target (`mask_targets`): "the intersection between an RoI and its associated
  ground-truth mask", an m x m binary map. As Detectron2's `BitMasks.crop_and_resize`: the
  0/1 ground-truth mask RoIAligned over the RoI (`aligned=True`), then `>= 0.5`.
- Loss (`mask_loss`): L_mask, "the average binary cross-entropy loss" of the per-pixel
  sigmoid, "only defined on the k-th mask" for an RoI of ground-truth class k, over the
  foreground RoIs.
- Pasting (`paste_masks`): Detectron2's `paste_masks_in_image`. Image pixel (y, x), centre
  (x + 0.5, y + 0.5), reads the m x m mask of box (x0, y0, x1, y1) at
  u = (x + 0.5 - x0) / (x1 - x0) * m - 0.5 (v likewise), bilinearly with zeros outside the
  mask (`grid_sample`, `align_corners=False`), and is foreground when that is >= 0.5.
"""

import numpy as np
import tensorflow as tf
from keras import ops

from kcnn._validation import check_fraction, check_positive_int
from kcnn.detection.losses import _global_sum, sigmoid_cross_entropy
from kcnn.ops.roi_align import roi_align

__all__ = ["MASK_SIZE", "mask_loss", "mask_targets", "paste_masks"]

# Mask R-CNN's mask resolution m (section 3, "Mask Representation").
MASK_SIZE = 28


def mask_targets(gt_masks, rois, matched, output_size=MASK_SIZE, sampling_ratio=2):
    """The m x m binary target of every RoI: its ground-truth mask, RoIAligned over the RoI.

    Args:
        gt_masks: tensor `(B, M, H, W)` of 0/1 instance masks, one per padded ground-truth
            row (`kcnn.data.load_detection_data(..., masks=True)`).
        rois: float tensor `(B, R, 4)` of xyxy boxes in pixels of the masks.
        matched: int tensor `(B, R)`, the ground-truth row in `[0, M)` each RoI is
            compared with (`sample_rois`'s `"matched"`).
        output_size: positive int, m. Defaults to `MASK_SIZE` (28).
        sampling_ratio: positive int, RoIAlign's sample points per bin and axis. Defaults
            to 2.

    Returns:
        float32 tensor `(B, R, m, m)` of 0s and 1s.

    Example:
    >>> masks = np.zeros((1, 1, 8, 8), "uint8")
    >>> masks[0, 0, :, :4] = 1  # the left half
    >>> targets = mask_targets(masks, [[[0.0, 0.0, 8.0, 8.0]]], [[0]], output_size=2)
    >>> np.asarray(targets)[0, 0].tolist()
    [[1.0, 0.0], [1.0, 0.0]]
    """
    output_size = check_positive_int(output_size, "output_size")
    gt_masks = ops.cast(ops.convert_to_tensor(gt_masks), "float32")
    if len(gt_masks.shape) != 4:
        raise ValueError(
            "`gt_masks` must be instance masks (batch, max_boxes, height, width). "
            f"Received: gt_masks.shape={tuple(gt_masks.shape)}"
        )
    rois = ops.cast(ops.convert_to_tensor(rois), "float32")
    matched = ops.cast(ops.convert_to_tensor(matched), "int32")
    shape = tf.shape(gt_masks)
    batch, max_boxes = shape[0], shape[1]
    images = ops.reshape(gt_masks, (-1, gt_masks.shape[2], gt_masks.shape[3], 1))
    indices = ops.arange(batch, dtype="int32")[:, None] * max_boxes + matched
    pooled = roi_align(
        images,
        ops.reshape(rois, (-1, 4)),
        ops.reshape(indices, (-1,)),
        output_size,
        sampling_ratio=sampling_ratio,
        aligned=True,
    )
    targets = ops.cast(pooled[..., 0] >= 0.5, "float32")
    return ops.reshape(targets, (batch, -1, output_size, output_size))


def mask_loss(mask_logits, classes, targets, foreground):
    """Mask R-CNN's L_mask: the mean binary cross-entropy of the ground-truth class's mask.

    Per foreground RoI of class k (1-based in `classes`), the sigmoid cross-entropy of mask
    channel k - 1 against its target, averaged over the m x m pixels; summed over the
    foreground RoIs and divided by their number (at least 1) summed over the replicas in
    sync, so each replica returns its share of the global loss. On one device this is
    Detectron2's `mask_rcnn_loss` (the mean over every foreground RoI's pixels).

    Args:
        mask_logits: float tensor `(B, R, m, m, K)`, one mask logit per class.
        classes: int tensor `(B, R)`: 0 for background, k + 1 for class k.
        targets: float tensor `(B, R, m, m)` of 0s and 1s (`mask_targets`).
        foreground: bool tensor `(B, R)`, the RoIs the loss is taken over.

    Returns:
        float32 scalar.

    Example:
    >>> logits = np.zeros((1, 1, 2, 2, 3), "float32")
    >>> round(float(mask_loss(logits, [[2]], np.ones((1, 1, 2, 2)), [[True]])), 4)  # log 2
    0.6931
    """
    mask_logits = ops.cast(mask_logits, "float32")
    num_classes = mask_logits.shape[-1]
    classes = ops.cast(classes, "int32")
    one_hot = ops.one_hot(ops.maximum(classes - 1, 0), num_classes, dtype="float32")
    logits = ops.sum(mask_logits * one_hot[:, :, None, None, :], axis=-1)
    cross_entropy = sigmoid_cross_entropy(logits, ops.cast(targets, "float32"))
    per_roi = ops.mean(cross_entropy, axis=(2, 3))
    foreground = ops.logical_and(ops.cast(foreground, "bool"), classes > 0)
    count = ops.maximum(_global_sum(ops.sum(ops.cast(foreground, "float32"))), 1.0)
    return ops.sum(ops.where(foreground, per_roi, 0.0)) / count


def paste_masks(masks, boxes, image_size, threshold=0.5):
    """Pastes m x m box-frame masks into the image: `(..., D, H, W)` bool masks.

    Detectron2's `paste_masks_in_image` (see the module docstring): bilinear with zeros
    outside the mask, exactly `Wy @ mask @ Wx.T` with the triangle weights
    `Wx[x, j] = max(0, 1 - |u_x - j|)`, then `>= threshold`.

    Args:
        masks: array `(..., D, m, m)` of mask probabilities (or 0/1), each in the frame of
            its box.
        boxes: array `(..., D, 4)` of xyxy boxes in image pixels.
        image_size: `(height, width)` of the image.
        threshold: float in (0, 1]. Defaults to `0.5`.

    Returns:
        bool array `(..., D, height, width)`. Degenerate boxes (zero width or height) give
        empty masks.

    Example:
    >>> pasted = paste_masks(np.ones((1, 28, 28)), np.array([[1.0, 2.0, 4.0, 3.0]]), (4, 6))
    >>> pasted[0].astype(int).tolist()
    [[0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [0, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0]]
    """
    masks = np.asarray(masks, dtype=np.float64)
    boxes = np.asarray(boxes, dtype=np.float64)
    if masks.ndim < 3 or masks.shape[-1] != masks.shape[-2]:
        raise ValueError(
            f"`masks` must be square masks (..., D, m, m). Received: masks.shape={masks.shape}"
        )
    if boxes.shape != (*masks.shape[:-2], 4):
        raise ValueError(
            "`boxes` must have shape (..., D, 4), one box per mask of `masks`. Received: "
            f"boxes.shape={boxes.shape}, masks.shape={masks.shape}"
        )
    if len(image_size) != 2:
        raise ValueError(f"`image_size` must be (height, width). Received: {image_size!r}")
    height, width = (check_positive_int(int(size), "image_size") for size in image_size)
    threshold = check_fraction(threshold, "threshold", low_open=True, high_open=False)
    size = masks.shape[-1]
    flat_masks = masks.reshape(-1, size, size)
    flat_boxes = boxes.reshape(-1, 4)
    pasted = np.zeros((len(flat_masks), height, width), bool)
    for index, (mask, (x0, y0, x1, y1)) in enumerate(zip(flat_masks, flat_boxes, strict=True)):
        if not (x1 > x0 and y1 > y0):
            continue
        rows = _triangle_weights(np.arange(height) + 0.5, y0, y1, size)
        columns = _triangle_weights(np.arange(width) + 0.5, x0, x1, size)
        pasted[index] = rows @ mask @ columns.T >= threshold
    return pasted.reshape(*masks.shape[:-2], height, width)


def _triangle_weights(centres, start, end, size):
    """Bilinear weights `(len(centres), size)` of pixel centres read in a box's m-cell frame,
    zero beyond the mask's cells."""
    position = (centres - start) / (end - start) * size - 0.5
    return np.maximum(0.0, 1.0 - np.abs(position[:, None] - np.arange(size)[None, :]))
