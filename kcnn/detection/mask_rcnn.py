"""Mask R-CNN: `FasterRCNN` plus a mask head on the same RoIs, trained by its own
`train_step`.

He, Gkioxari, Dollar & Girshick 2017, "Mask R-CNN" (arXiv:1703.06870), with Detectron2's
`mask_rcnn_R_50_FPN` head. The targets, loss and pasting are `kcnn.detection.masks`'.

The model's output stays one tensor, as every kcnn detector's: each detection row of
`FasterRCNN`'s output `(x_min, y_min, x_max, y_max, score, class)` is followed by its
m x m mask probabilities, flattened. `MaskRCNNDecoder` unpacks them (the detection dict
plus `"masks"`), so the detection task's decoding, evaluation and exports apply unchanged,
and the TFLite file returns each detection's m x m mask in the frame of its box (pasted
into the image by `kcnn.detection.paste_masks`).
"""

import math

import keras
from keras import ops

from kcnn._serialization import register
from kcnn._validation import check_positive_int
from kcnn.detection.faster_rcnn import FasterRCNN
from kcnn.detection.faster_rcnn_layers import RoIBoxes
from kcnn.detection.faster_rcnn_outputs import (
    DETECTION_COLUMNS,
    LOSS_TERMS,
    FasterRCNNDecoder,
    FasterRCNNLoss,
    _non_negative,
)
from kcnn.detection.masks import MASK_SIZE, mask_loss, mask_targets
from kcnn.layers import RoIAlign
from kcnn.models.registry import register_model

__all__ = ["DetectionMasks", "MaskHead", "MaskRCNN", "MaskRCNNDecoder", "MaskRCNNLoss"]

MASK_LOSS_TERMS = (*LOSS_TERMS, "mask_loss")


@register
class MaskHead(keras.layers.Layer):
    """Mask R-CNN's mask head (He et al. 2017, figure 4 right, FPN variant): `convs` 3x3
    convolutions with ReLU, a 2x2 transposed convolution of stride 2 with ReLU, and a 1x1
    convolution to one mask logit per class.

    Args:
        num_classes: positive int, K.
        filters: positive int, channels of the convolutions. Defaults to 64 (the paper's
            256 is sized for 800-pixel images).
        convs: positive int. Defaults to 4.
        **kwargs: base layer arguments.

    Input shape:
        `(N, s, s, C)`, RoIAligned features.

    Output shape:
        `(N, 2 s, 2 s, K)` mask logits.
    """

    def __init__(self, num_classes, filters=64, convs=4, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = check_positive_int(num_classes, "num_classes")
        self.filters = check_positive_int(filters, "filters")
        self.convs = check_positive_int(convs, "convs")
        self.conv_layers = [
            keras.layers.Conv2D(
                filters,
                3,
                padding="same",
                activation="relu",
                kernel_initializer="he_normal",
                dtype=self.dtype_policy,
                name=f"conv{index + 1}",
            )
            for index in range(convs)
        ]
        self.upsample = keras.layers.Conv2DTranspose(
            filters,
            2,
            strides=2,
            activation="relu",
            kernel_initializer="he_normal",
            dtype=self.dtype_policy,
            name="upsample",
        )
        # Detectron2 initialises the predictor with std 0.001: masks start near 0.5.
        self.predictor = keras.layers.Conv2D(
            num_classes,
            1,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
            dtype=self.dtype_policy,
            name="predictor",
        )

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.conv_layers:
            layer.build(shape)
            shape = (*shape[:3], self.filters)
        self.upsample.build(shape)
        self.predictor.build(self.upsample.compute_output_shape(shape))

    def call(self, pooled, training=None):
        x = pooled
        for layer in self.conv_layers:
            x = layer(x)
        return self.predictor(self.upsample(x))

    def compute_output_shape(self, input_shape):
        size = None if input_shape[1] is None else 2 * input_shape[1]
        return (input_shape[0], size, size, self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"num_classes": self.num_classes, "filters": self.filters, "convs": self.convs}
        )
        return config


@register
class DetectionMasks(keras.layers.Layer):
    """Appends each detection's mask to its row: `(B, D, 6 + m * m)`.

    The mask of a detection of class k is `sigmoid` of logit channel k, flattened row by
    row; padding rows (class -1) get zeros.

    Input shape:
        `(detections (B, D, 6), mask_logits (B * D, m, m, K))`.

    Output shape:
        `(B, D, 6 + m * m)` float32.
    """

    def call(self, detections, mask_logits):
        count = detections.shape[1]
        size, num_classes = mask_logits.shape[1], mask_logits.shape[-1]
        classes = ops.cast(detections[..., 5], "int32")
        one_hot = ops.one_hot(ops.maximum(classes, 0), num_classes, dtype="float32")
        logits = ops.reshape(
            ops.cast(mask_logits, "float32"), (-1, count, size * size, num_classes)
        )
        masks = ops.sigmoid(ops.sum(logits * one_hot[:, :, None, :], axis=-1))
        masks = ops.where((classes >= 0)[..., None], masks, 0.0)
        return ops.concatenate([ops.cast(detections, "float32"), masks], axis=-1)

    def compute_output_spec(self, detections, mask_logits):
        size = mask_logits.shape[1]
        shape = (detections.shape[0], detections.shape[1], DETECTION_COLUMNS + size * size)
        return keras.KerasTensor(shape, "float32")


@register
class MaskRCNNLoss(FasterRCNNLoss):
    """The loss settings of a `MaskRCNN`: `FasterRCNNLoss`'s plus `mask_weight`, the weight
    of L_mask (`kcnn.detection.mask_loss`). The paper's multi-task loss is
    L = L_cls + L_box + L_mask (weight 1).

    Args:
        rpn_objectness_weight, rpn_box_weight, roi_class_weight, roi_box_weight,
        rpn_box_beta, roi_box_beta: see `FasterRCNNLoss`.
        mask_weight: non-negative number. Defaults to `1.0`.
        name: str. Defaults to `"mask_rcnn_loss"`.
        **kwargs: base `keras.losses.Loss` arguments.

    Example:
    >>> MaskRCNNLoss(mask_weight=2.0).weights
    (1.0, 1.0, 1.0, 1.0, 2.0)
    """

    def __init__(
        self,
        rpn_objectness_weight=1.0,
        rpn_box_weight=1.0,
        roi_class_weight=1.0,
        roi_box_weight=1.0,
        mask_weight=1.0,
        rpn_box_beta=1.0 / 9.0,
        roi_box_beta=1.0,
        name="mask_rcnn_loss",
        **kwargs,
    ):
        super().__init__(
            rpn_objectness_weight,
            rpn_box_weight,
            roi_class_weight,
            roi_box_weight,
            rpn_box_beta,
            roi_box_beta,
            name=name,
            **kwargs,
        )
        self.mask_weight = _non_negative(mask_weight, "mask_weight")

    @property
    def weights(self):
        """The weights of the terms, in the order of `MASK_LOSS_TERMS`."""
        return (*super().weights, self.mask_weight)

    def get_config(self):
        return {**super().get_config(), "mask_weight": self.mask_weight}


@register
class MaskRCNNDecoder(FasterRCNNDecoder):
    """`FasterRCNNDecoder` of a `MaskRCNN`'s output: the detection dict plus `"masks"`,
    float32 `(batch, max_detections, m, m)` probabilities in the frame of each box (zeros on
    padding rows); `kcnn.detection.paste_masks` pastes them into the image.

    Args:
        num_classes, image_size, score_threshold, iou_threshold, max_detections: see
            `FasterRCNNDecoder`.
        mask_size: positive int, m. Defaults to 28.
        **kwargs: base layer arguments.

    Input shape:
        `(batch, D, 6 + m * m)`.
    """

    def __init__(self, *args, mask_size=MASK_SIZE, **kwargs):
        super().__init__(*args, **kwargs)
        self.mask_size = check_positive_int(mask_size, "mask_size")

    @property
    def columns(self):
        """The columns of a row of the model's output: 6 + m * m."""
        return DETECTION_COLUMNS + self.mask_size**2

    def call(self, inputs):
        outputs = super().call(inputs)
        size = self.mask_size
        masks = ops.cast(inputs, "float32")[:, : self.max_detections, DETECTION_COLUMNS:]
        masks = ops.where((outputs["classes"] >= 0)[..., None], masks, 0.0)
        return {**outputs, "masks": ops.reshape(masks, (-1, self.max_detections, size, size))}

    def compute_output_spec(self, inputs):
        spec = super().compute_output_spec(inputs)
        shape = (inputs.shape[0], self.max_detections, self.mask_size, self.mask_size)
        return {**spec, "masks": keras.KerasTensor(shape, "float32")}

    def get_config(self):
        return {**super().get_config(), "mask_size": self.mask_size}


@register
@register_model("mask_rcnn", "instance_segmentation", uses_backbone=True)
class MaskRCNN(FasterRCNN):
    """Mask R-CNN with FPN: `FasterRCNN` and a mask head on RoIAligned features.

    He et al. 2017 (arXiv:1703.06870) as Detectron2's `mask_rcnn_R_50_FPN`: the mask branch
    RoIAligns `mask_pool_size` bins (14) from the level of FPN eq. 1, runs `MaskHead`
    (`mask_head_convs` 3x3 convolutions, a 2x transposed convolution, one m x m logit map
    per class, m = 2 * `mask_pool_size` = 28) and, at inference, reads the map of each
    detection's class at its box (the detections of `FasterRCNN`, section 3.1 "Inference").

    Training (section 3): the targets are the matched ground-truth masks RoIAligned over
    the foreground RoIs that `sample_rois` drew (`kcnn.detection.mask_targets`), the loss
    the mean binary cross-entropy of the class's map (`kcnn.detection.mask_loss`), added
    to `FasterRCNN`'s four terms with `MaskRCNNLoss`'s `mask_weight`. The mask branch runs
    on the first `mask_rois_per_image` sampled RoIs of each image (they come foreground
    first, so these are its foreground RoIs up to that number).

    Targets: a dict `{"boxes": (B, max_boxes, 5), "masks": (B, max_boxes, H, W)}`, the
    padded boxes and their 0/1 instance masks
    (`kcnn.data.make_detection_dataset(..., masks=...)`).

    Output: `(B, max_detections, 6 + m * m)`, `FasterRCNN`'s detection rows followed by
    their flattened mask probabilities; `make_decoder()` (`MaskRCNNDecoder`) unpacks them.

    Args:
        backbone, num_classes, **kwargs: see `FasterRCNN`.
        mask_pool_size: positive int, RoIAlign bins per side of the mask branch. Defaults
            to 14.
        mask_head_filters: positive int. Defaults to 64.
        mask_head_convs: positive int. Defaults to 4.
        mask_rois_per_image: None or positive int, the RoIs per image the mask branch
            trains on. Defaults to None: `ceil(roi_batch_size * roi_positive_fraction)`,
            every foreground RoI.
        name: str. Defaults to `"mask_rcnn"`.

    Example:
    >>> from kcnn.backbones import build_backbone
    >>> backbone = build_backbone(
    ...     "plain_cnn", input_shape=(64, 64, 3), filters=(4, 4, 4, 4, 4, 4))
    >>> model = MaskRCNN(backbone, num_classes=2, fpn_channels=8, box_head_units=16,
    ...                  mask_head_filters=8, max_detections=10)
    >>> model.output_shape
    (None, 10, 790)
    """

    CONFIG_KEYS = (
        *FasterRCNN.CONFIG_KEYS,
        "mask_pool_size",
        "mask_head_filters",
        "mask_head_convs",
        "mask_rois_per_image",
    )
    LOSS_CLASS = MaskRCNNLoss
    DECODER_CLASS = MaskRCNNDecoder
    LOSS_TERMS = MASK_LOSS_TERMS

    def __init__(
        self,
        backbone,
        num_classes,
        mask_pool_size=14,
        mask_head_filters=64,
        mask_head_convs=4,
        mask_rois_per_image=None,
        name="mask_rcnn",
        **kwargs,
    ):
        # Read by `_extend_outputs`, which `FasterRCNN.__init__` calls.
        self.mask_pool_size = check_positive_int(mask_pool_size, "mask_pool_size")
        self.mask_head_filters = check_positive_int(mask_head_filters, "mask_head_filters")
        self.mask_head_convs = check_positive_int(mask_head_convs, "mask_head_convs")
        if mask_rois_per_image is not None:
            check_positive_int(mask_rois_per_image, "mask_rois_per_image")
        self.mask_rois_per_image = mask_rois_per_image
        super().__init__(backbone, num_classes, name=name, **kwargs)

    @property
    def mask_size(self):
        """m, the side of the predicted masks: 2 * `mask_pool_size`."""
        return 2 * self.mask_pool_size

    @property
    def mask_rois(self):
        """The RoIs per image the mask branch trains on."""
        if self.mask_rois_per_image is not None:
            return min(self.mask_rois_per_image, self.roi_batch_size)
        return max(1, math.ceil(self.roi_batch_size * self.roi_positive_fraction))

    def _extend_outputs(self, features, detections, roi_align, num_classes):
        self.mask_roi_boxes = RoIBoxes(dtype="float32", name="mask_roi_boxes")
        self.mask_roi_align = RoIAlign(
            self.mask_pool_size,
            levels=roi_align.levels,
            canonical_size=roi_align.canonical_size,
            name="mask_roi_align",
        )
        self.mask_head = MaskHead(
            num_classes,
            self.mask_head_filters,
            self.mask_head_convs,
            name="mask_head",
        )
        self.detection_masks = DetectionMasks(dtype="float32", name="detection_masks")
        boxes, box_indices = self.mask_roi_boxes(detections[..., :4])
        pooled = self.mask_roi_align([features, boxes, box_indices])
        return self.detection_masks(detections, self.mask_head(pooled))

    def decoder_arguments(self):
        """`MaskRCNNDecoder`'s `mask_size`: the model's."""
        return {"mask_size": self.mask_size}

    def compute_loss_terms(self, images, targets, step=0, training=False):
        """`FasterRCNN`'s four terms and `mask_loss`, keyed by `MASK_LOSS_TERMS`.

        Args:
            images: float tensor `(B, H, W, C)`.
            targets: a dict of `"boxes"` `(B, max_boxes, 5)` and `"masks"`
                `(B, max_boxes, H, W)` (see the class docstring).
            step, training: see `FasterRCNN.compute_loss_terms`.

        Raises:
            ValueError: if `targets` is not such a dict.
        """
        if not isinstance(targets, dict) or set(targets) != {"boxes", "masks"}:
            raise ValueError(
                "A MaskRCNN trains on targets {'boxes': (B, max_boxes, 5), 'masks': "
                "(B, max_boxes, H, W)} (`make_detection_dataset(..., masks=...)`). Received: "
                f"{type(targets).__name__}"
                + (f" with keys {sorted(targets)}" if isinstance(targets, dict) else "")
            )
        terms, features, rois = self._two_stage_terms(images, targets["boxes"], step, training)
        count = self.mask_rois
        classes = rois["classes"][:, :count]
        roi_boxes = ops.stop_gradient(rois["rois"][:, :count])
        mask_target = mask_targets(
            targets["masks"], roi_boxes, rois["matched"][:, :count], self.mask_size
        )
        boxes, box_indices = self.mask_roi_boxes(roi_boxes)
        pooled = self.mask_roi_align([features, boxes, box_indices])
        logits = self.mask_head(pooled, training=training)
        size = self.mask_size
        logits = ops.reshape(logits, (-1, count, size, size, self.num_classes))
        terms["mask_loss"] = mask_loss(logits, classes, mask_target, classes > 0)
        return terms
