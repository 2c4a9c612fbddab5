"""Faster R-CNN with a feature pyramid on any kcnn backbone, trained by its own `train_step`.

Ren, He, Girshick & Sun 2015, "Faster R-CNN: Towards Real-Time Object Detection with Region
Proposal Networks" (arXiv:1506.01497), on the pyramid of Lin, Dollar, Girshick, He,
Hariharan & Belongie 2017, "Feature Pyramid Networks for Object Detection"
(arXiv:1612.03144), with Detectron2's choices where the papers leave one open. The
anchors, targets, proposals and losses are `kcnn.detection.two_stage`'s, the sampling
`kcnn.detection.sampling`'s; the feature pyramid, heads and proposals are
`kcnn.detection.faster_rcnn_layers`'; the detections, their decoder and the loss settings
are `kcnn.detection.faster_rcnn_outputs`'.

A two-stage detector's loss is not a function of `(y_true, y_pred)`: it needs the region
proposal network's outputs, the proposals and the RoIs sampled from them. So `FasterRCNN`
overrides `train_step` and `test_step`, while its functional graph (what `predict`,
`.keras` files and the exports hold) is the inference path, image to final detections.
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from kcnn._serialization import register
from kcnn._validation import (
    check_fraction,
    check_positive_int,
    check_positive_numbers,
    is_number,
)
from kcnn.backbones import level_stride, pyramid_backbone
from kcnn.detection.detector import DetectionModel
from kcnn.detection.faster_rcnn_layers import (
    BOX_HEADS,
    BoxHead,
    RegionProposals,
    RoIBoxes,
    RPNHead,
    check_pyramid_levels,
    feature_pyramid_network,
)
from kcnn.detection.faster_rcnn_outputs import (
    LOSS_TERMS,
    FasterRCNNDecoder,
    FasterRCNNLoss,
    RoIDetections,
)
from kcnn.detection.sampling import sample_balanced, sample_rois
from kcnn.detection.two_stage import (
    encode_boxes,
    fast_rcnn_loss,
    generate_proposals,
    match_anchors,
    rpn_loss,
)
from kcnn.layers import RoIAlign
from kcnn.models.registry import register_model
from kcnn.ops.roi_align import check_positive_number


@register
@register_model("faster_rcnn", "detection", uses_backbone=True)
class FasterRCNN(DetectionModel):
    """Faster R-CNN with FPN: region proposals, RoIAlign, a box head, per-class NMS.

    Ren et al. 2015 (arXiv:1506.01497) with the feature pyramid of Lin et al. 2017
    (arXiv:1612.03144), as Detectron2's `faster_rcnn_R_50_FPN`:

    - FPN (Lin et al. section 3): a 1x1 lateral convolution brings each of `levels` to
      `fpn_channels`; from the coarsest, each map is upsampled by 2 (nearest) and added to
      the next finer lateral; a 3x3 convolution smooths every sum.
    - Region proposal network (Ren et al. section 3.1, Lin et al. section 4.1): `RPNHead`
      on every level, `len(aspect_ratios)` anchors per cell of one size per level
      (`kcnn.detection.fpn_anchors`); proposals by `generate_proposals` (`RegionProposals`).
    - Fast R-CNN head (Lin et al. section 4.2): `RoIAlign` (He et al. 2017,
      arXiv:1703.06870) of `pool_size` bins from the level of FPN eq. 1, then `BoxHead`
      ("fc": two fully connected layers; "conv": four 3x3 convolutions and one fully
      connected layer), K + 1 class logits (0 background) and class-specific deltas.
    - Inference: softmax, every class's box decoded from its proposal with weights
      (10, 10, 5, 5), clipped to the image, per-class NMS (`RoIDetections`).

    Departures, for kcnn's small images: Detectron2 gives the RPN a P6 level (P5
    max-pooled) for 512-pixel anchors and maps RoIs to levels with FPN's canonical 224
    pixels; here the RPN runs on `levels` only, the default anchor sizes are 2 * stride
    (8 to 64 pixels on P2-P5, Detectron2's are 8 * stride) and RoIs map with
    `roi_canonical_size=56` (224 / 4: with 224, every box under 112 pixels reads P2).

    Output: the model's output is its final detections, one float32 tensor
    `(B, max_detections, 6)` of rows `(x_min, y_min, x_max, y_max, score, class)` in input
    pixels, sorted by decreasing score, class 0-based and -1 on padding rows.
    `make_decoder()` (`kcnn.detection.detection_decoder(model)`) unpacks it into the
    detection task's dict of `boxes`, `scores`, `classes` and `count`, so the task, its
    evaluation and its exports use this model as any kcnn detector.

    Training: `train_step` computes, on a batch `(images, targets)` of kcnn's padded
    targets `(B, max_boxes, 5)`, the region proposal network's targets (`match_anchors`,
    `sample_balanced` of `rpn_batch_size` anchors, `encode_boxes`) and `rpn_loss`; the
    training proposals (`generate_proposals` on the stopped outputs, the `*_train` top-k);
    `sample_rois` (`roi_batch_size` RoIs, ground truth added); RoIAlign, the box head and
    `fast_rcnn_loss`. The loss is the weighted sum of the four terms (weights from the
    compiled `FasterRCNNLoss`, `make_loss(...)`) plus the layers' losses, computed in
    float32 under mixed precision; the logs are `loss` and the four terms (`LOSS_TERMS`).
    The sampling is stateless, seeded by `sampling_seed` and the optimizer's iteration
    counter (`sampling_seeds`), with the random numbers of each image's row in the global
    batch (`batch_rows`): a resumed run samples as an uninterrupted one, and replicas
    sample as one device. Under a `tf.distribute` strategy each replica's terms are its
    share of the global loss (the two-stage losses normalise by counts summed over the
    replicas), and Keras sums the replicas' gradients: a step equals one device's on the
    whole batch (without batch norm, whose statistics are per replica). Sample weights are
    ignored. Neither step compiles under XLA (NMS has no XLA kernel): keep `jit_compile`
    False or "auto".

    Args:
        backbone: a kcnn backbone with a fixed input size and `levels` among its
            `pyramid_outputs`, or a keras-hub `Backbone` or other functional image model
            (adapted by `kcnn.backbones.pyramid_backbone`).
        num_classes: positive int. Object classes (no background class).
        levels: consecutive pyramid levels. Defaults to `("P2", "P3", "P4", "P5")`.
        fpn_channels: positive int. Channels of the FPN maps and the RPN convolution.
            Defaults to 64.
        anchor_sizes: None or one positive number per level, in pixels. Defaults to None
            (2 * stride: 8, 16, 32, 64 on P2-P5); the config holds the sizes used.
        aspect_ratios: positive numbers, height over width. Defaults to `(0.5, 1.0, 2.0)`.
        rpn_pre_nms_top_k_train, rpn_post_nms_top_k_train: positive ints, the proposals'
            candidates per level and proposals per image in training. Default to 1000
            and 500.
        rpn_pre_nms_top_k_test, rpn_post_nms_top_k_test: the same at inference. Default to
            500 and 100.
        rpn_nms_iou: float in [0, 1]. Defaults to `0.7`.
        rpn_batch_size: positive int, anchors sampled per image. Defaults to 256.
        rpn_positive_fraction: float in [0, 1]. Defaults to `0.5`.
        roi_batch_size: positive int, RoIs sampled per image. Defaults to 512.
        roi_positive_fraction: float in [0, 1]. Defaults to `0.25`.
        box_head: `"fc"` or `"conv"`. Defaults to `"fc"`.
        box_head_units: positive int, width of the fully connected layers. Defaults to 256.
        box_head_filters: positive int, channels of the `"conv"` head. Defaults to 64.
        pool_size: positive int, RoIAlign bins per side. Defaults to 7.
        roi_canonical_size: positive number, the box size FPN eq. 1 maps to P4. Defaults
            to `56.0`.
        score_threshold: float in [0, 1]; detections score above it. Defaults to `0.05`.
        nms_iou: float in [0, 1], the final per-class NMS. Defaults to `0.5`.
        max_detections: positive int, detections per image. Defaults to 100.
        sampling_seed: int, the seed of the anchor and RoI sampling. Defaults to 0.
        name: str. Defaults to `"faster_rcnn"`.

    Output shape:
        `(B, max_detections, 6)`, see above.

    The constructor arguments are the model's config and attributes; its `.keras` file
    reloads with no `custom_objects` once `kcnn` is imported.

    Raises:
        ValueError: for a bad argument (named, with the value received), a level the
            backbone does not give, or an input size that is not fixed or not divisible by
            the coarsest stride.

    Example:
    >>> from kcnn.backbones import build_backbone
    >>> backbone = build_backbone(
    ...     "plain_cnn", input_shape=(64, 64, 3), filters=(4, 4, 4, 4, 4, 4))
    >>> model = FasterRCNN(backbone, num_classes=2, fpn_channels=8, box_head_units=16)
    >>> model.output_shape, len(model.anchors)
    ((None, 100, 6), 1020)
    """

    CONFIG_KEYS = (
        "backbone",
        "num_classes",
        "levels",
        "fpn_channels",
        "anchor_sizes",
        "aspect_ratios",
        "rpn_pre_nms_top_k_train",
        "rpn_post_nms_top_k_train",
        "rpn_pre_nms_top_k_test",
        "rpn_post_nms_top_k_test",
        "rpn_nms_iou",
        "rpn_batch_size",
        "rpn_positive_fraction",
        "roi_batch_size",
        "roi_positive_fraction",
        "box_head",
        "box_head_units",
        "box_head_filters",
        "pool_size",
        "roi_canonical_size",
        "score_threshold",
        "nms_iou",
        "max_detections",
        "sampling_seed",
    )
    LOSS_CLASS = FasterRCNNLoss
    DECODER_CLASS = FasterRCNNDecoder
    # The loss terms, in the order of the loss weights and of the logs after "loss".
    LOSS_TERMS = LOSS_TERMS

    def __init__(
        self,
        backbone,
        num_classes,
        levels=("P2", "P3", "P4", "P5"),
        fpn_channels=64,
        anchor_sizes=None,
        aspect_ratios=(0.5, 1.0, 2.0),
        rpn_pre_nms_top_k_train=1000,
        rpn_post_nms_top_k_train=500,
        rpn_pre_nms_top_k_test=500,
        rpn_post_nms_top_k_test=100,
        rpn_nms_iou=0.7,
        rpn_batch_size=256,
        rpn_positive_fraction=0.5,
        roi_batch_size=512,
        roi_positive_fraction=0.25,
        box_head="fc",
        box_head_units=256,
        box_head_filters=64,
        pool_size=7,
        roi_canonical_size=56.0,
        score_threshold=0.05,
        nms_iou=0.5,
        max_detections=100,
        sampling_seed=0,
        name="faster_rcnn",
        **kwargs,
    ):
        backbone = pyramid_backbone(backbone)
        num_classes = check_positive_int(num_classes, "num_classes")
        levels, numbers = check_pyramid_levels(levels)
        image_size = _check_image_size(backbone, levels)
        if anchor_sizes is None:
            anchor_sizes = tuple(2.0 * level_stride(level) for level in levels)
        anchor_sizes = check_positive_numbers(anchor_sizes, "anchor_sizes", len(levels))
        aspect_ratios = check_positive_numbers(aspect_ratios, "aspect_ratios")
        for argument, value in (
            ("fpn_channels", fpn_channels),
            ("rpn_pre_nms_top_k_train", rpn_pre_nms_top_k_train),
            ("rpn_post_nms_top_k_train", rpn_post_nms_top_k_train),
            ("rpn_pre_nms_top_k_test", rpn_pre_nms_top_k_test),
            ("rpn_post_nms_top_k_test", rpn_post_nms_top_k_test),
            ("rpn_batch_size", rpn_batch_size),
            ("roi_batch_size", roi_batch_size),
            ("box_head_units", box_head_units),
            ("box_head_filters", box_head_filters),
            ("pool_size", pool_size),
            ("max_detections", max_detections),
        ):
            check_positive_int(value, argument)
        for argument, value in (
            ("rpn_nms_iou", rpn_nms_iou),
            ("rpn_positive_fraction", rpn_positive_fraction),
            ("roi_positive_fraction", roi_positive_fraction),
            ("score_threshold", score_threshold),
            ("nms_iou", nms_iou),
        ):
            check_fraction(value, argument, low_open=False, high_open=False)
        check_positive_number(roi_canonical_size, "roi_canonical_size")
        if box_head not in BOX_HEADS:
            raise ValueError(
                f"`box_head` must be one of {BOX_HEADS}. Received: box_head={box_head!r}"
            )
        if not isinstance(sampling_seed, int) or isinstance(sampling_seed, bool):
            raise ValueError(
                f"`sampling_seed` must be an int. Received: sampling_seed={sampling_seed!r}"
            )

        # === Layers ===
        feature_pyramid = feature_pyramid_network(backbone, levels, fpn_channels)
        rpn_head = RPNHead(len(aspect_ratios), fpn_channels, name="rpn_head")
        region_proposals = RegionProposals(
            image_size,
            numbers,
            anchor_sizes,
            aspect_ratios,
            rpn_pre_nms_top_k_test,
            rpn_post_nms_top_k_test,
            rpn_nms_iou,
            dtype="float32",
            name="region_proposals",
        )
        roi_boxes = RoIBoxes(dtype="float32", name="roi_boxes")
        roi_align = RoIAlign(
            pool_size,
            levels=numbers,
            canonical_size=roi_canonical_size,
            name="roi_align",
        )
        roi_head = BoxHead(num_classes, box_head, box_head_units, box_head_filters, name="box_head")
        detections = RoIDetections(
            num_classes,
            image_size,
            score_threshold,
            nms_iou,
            max_detections,
            dtype="float32",
            name="detections",
        )

        # === Functional graph ===
        inputs = keras.Input(shape=backbone.input_shape[1:], name="image")
        features = feature_pyramid(inputs)
        objectness, deltas = rpn_head([features[level] for level in levels])
        proposals, proposal_valid = region_proposals(objectness, deltas)
        boxes, box_indices = roi_boxes(proposals)
        pooled = roi_align([features, boxes, box_indices])
        class_logits, box_deltas = roi_head(pooled)
        outputs = detections(class_logits, box_deltas, proposals, proposal_valid)
        outputs = self._extend_outputs(features, outputs, roi_align, num_classes)
        super().__init__(inputs, outputs, name=name, **kwargs)
        self.feature_pyramid = feature_pyramid
        self.rpn_head = rpn_head
        self.region_proposals = region_proposals
        self.roi_boxes = roi_boxes
        self.roi_align = roi_align
        self.roi_head = roi_head
        self.detections = detections
        self.loss_trackers = [keras.metrics.Mean(name=term) for term in ("loss", *self.LOSS_TERMS)]

        # === Config ===
        self.backbone = backbone
        self.num_classes = num_classes
        self.levels = levels
        self.fpn_channels = fpn_channels
        self.anchor_sizes = anchor_sizes
        self.aspect_ratios = aspect_ratios
        self.rpn_pre_nms_top_k_train = rpn_pre_nms_top_k_train
        self.rpn_post_nms_top_k_train = rpn_post_nms_top_k_train
        self.rpn_pre_nms_top_k_test = rpn_pre_nms_top_k_test
        self.rpn_post_nms_top_k_test = rpn_post_nms_top_k_test
        self.rpn_nms_iou = float(rpn_nms_iou)
        self.rpn_batch_size = rpn_batch_size
        self.rpn_positive_fraction = float(rpn_positive_fraction)
        self.roi_batch_size = roi_batch_size
        self.roi_positive_fraction = float(roi_positive_fraction)
        self.box_head = box_head
        self.box_head_units = box_head_units
        self.box_head_filters = box_head_filters
        self.pool_size = pool_size
        self.roi_canonical_size = float(roi_canonical_size)
        self.score_threshold = float(score_threshold)
        self.nms_iou = float(nms_iou)
        self.max_detections = max_detections
        self.sampling_seed = sampling_seed

    @property
    def anchors(self):
        """The anchors `(A, 4)`, xyxy pixels, every level's in the order of the region
        proposal network's outputs, finest level first."""
        return np.concatenate(self.region_proposals.anchors)

    def _extend_outputs(self, features, detections, roi_align, num_classes):
        """The model's output from its detections: the detections themselves. A subclass
        appends a branch (Mask R-CNN's masks) here, with the FPN `features` (a dict by
        level), the box head's `roi_align` layer and the checked `num_classes`; it runs
        inside `__init__`, before the functional model exists, and may set attributes."""
        return detections

    def decoder_arguments(self):
        """The decoder's arguments besides the detection settings: none."""
        return {}

    @property
    def metrics(self):
        """The means of `loss` and the terms of `LOSS_TERMS`, as `fit` logs them."""
        return list(self.loss_trackers)

    # --- loss and decoder ---

    def make_loss(self, **options):
        """A `FasterRCNNLoss` with `options` (its weights and betas), which `train_step`
        reads from the compiled model."""
        return self.LOSS_CLASS(**options)

    def make_decoder(
        self, score_threshold=None, iou_threshold=None, max_detections=None, name=None
    ):
        """The `FasterRCNNDecoder` of the model's output: the model's own settings, or a
        higher `score_threshold` or a lower `max_detections` (both exact, see
        `FasterRCNNDecoder`).

        Raises:
            ValueError: for a `score_threshold` below the model's, an `iou_threshold` other
                than the model's `nms_iou` (the model suppresses itself), or a
                `max_detections` above the model's.
        """
        score_threshold = self.score_threshold if score_threshold is None else score_threshold
        iou_threshold = self.nms_iou if iou_threshold is None else iou_threshold
        max_detections = self.max_detections if max_detections is None else max_detections
        if is_number(score_threshold) and score_threshold < self.score_threshold:
            raise ValueError(
                "`score_threshold` cannot be below the model's, which dropped those "
                f"detections. Received: score_threshold={score_threshold} < "
                f"{self.score_threshold}; build the model with a lower `score_threshold`."
            )
        if iou_threshold != self.nms_iou:
            raise ValueError(
                "`iou_threshold` is the model's NMS IoU, applied inside the model. Received: "
                f"iou_threshold={iou_threshold}, the model's nms_iou={self.nms_iou}; build "
                "the model with another `nms_iou`."
            )
        if isinstance(max_detections, int) and max_detections > self.max_detections:
            raise ValueError(
                "`max_detections` cannot exceed the model's. Received: "
                f"max_detections={max_detections} > {self.max_detections}"
            )
        return self.DECODER_CLASS(
            self.num_classes,
            self.image_size,
            score_threshold=score_threshold,
            iou_threshold=iou_threshold,
            max_detections=max_detections,
            name=name,
            **self.decoder_arguments(),
        )

    # --- training ---

    def sampling_seeds(self, step):
        """The stateless seeds `(rpn_seed, roi_seed)`, int64 `(2,)`, of training step `step`:
        `(sampling_seed, 2 * step)` and `(sampling_seed, 2 * step + 1)`."""
        seed = tf.constant(self.sampling_seed, tf.int64)
        key = 2 * tf.cast(step, tf.int64)
        return tf.stack([seed, key]), tf.stack([seed, key + 1])

    @staticmethod
    def batch_rows(batch_size):
        """`(first, total)`: the current replica's images are rows `first` to
        `first + batch_size - 1` of the global batch of `total` (replicas take consecutive
        slices of it); `(0, batch_size)` without a strategy. The sampling draws its random
        numbers for the global batch and keeps these rows (`sample_balanced`)."""
        context = tf.distribute.get_replica_context()
        replicas, replica = 1, 0
        if context is not None:
            replicas, replica = context.num_replicas_in_sync, context.replica_id_in_sync_group
        return replica * batch_size, replicas * batch_size

    def compute_loss_terms(self, images, targets, step=0, training=False):
        """The unweighted loss terms of a batch, float32 scalars keyed by `LOSS_TERMS`.

        What `train_step` (with `training=True`) and `test_step` compute: see the class
        docstring. `step` picks the sampling seeds (`sampling_seeds`). Under a distribution
        strategy, each term is the replica's share of the global term.

        Args:
            images: float tensor `(B, H, W, C)`, the model's input.
            targets: kcnn's padded targets `(B, max_boxes, 5)`.
            step: int or int tensor. Defaults to 0.
            training: bool, whether layers run in training mode. Defaults to False.
        """
        return self._two_stage_terms(images, targets, step, training)[0]

    def _two_stage_terms(self, images, targets, step, training):
        """`(terms, features, rois)`: the four terms of `LOSS_TERMS`, the FPN features and
        `sample_rois`' dict, which a subclass's branch (Mask R-CNN's masks) trains on."""
        rpn_seed, roi_seed = self.sampling_seeds(step)
        batch_rows = self.batch_rows(tf.shape(images)[0])
        betas = self._compiled_loss()
        targets = ops.cast(targets, "float32")
        features = self.feature_pyramid(images, training=training)
        objectness, deltas = self.rpn_head(
            [features[level] for level in self.levels], training=training
        )
        anchors = self.anchors
        labels, matched = match_anchors(anchors, targets)
        positive, negative = sample_balanced(
            labels, self.rpn_batch_size, self.rpn_positive_fraction, rpn_seed, batch_rows
        )
        matched_boxes = tf.gather(targets[..., :4], matched, batch_dims=1)
        rpn_objectness, rpn_box = rpn_loss(
            ops.concatenate(objectness, axis=1),
            ops.concatenate(deltas, axis=1),
            labels,
            encode_boxes(matched_boxes, anchors),
            ops.logical_or(positive, negative),
            beta=betas.rpn_box_beta,
        )

        # The second stage trains on proposals, not through them (as Detectron2).
        proposals, _, proposal_valid = generate_proposals(
            [ops.stop_gradient(x) for x in objectness],
            [ops.stop_gradient(x) for x in deltas],
            self.region_proposals.anchors,
            self.image_size,
            self.rpn_pre_nms_top_k_train,
            self.rpn_post_nms_top_k_train,
            self.rpn_nms_iou,
        )
        rois = sample_rois(
            proposals,
            proposal_valid,
            targets,
            self.roi_batch_size,
            self.roi_positive_fraction,
            seed=roi_seed,
            batch_rows=batch_rows,
        )
        boxes, box_indices = self.roi_boxes(rois["rois"])
        pooled = self.roi_align([features, boxes, box_indices])
        class_logits, box_deltas = self.roi_head(pooled, training=training)
        roi_class, roi_box = fast_rcnn_loss(
            ops.reshape(class_logits, (-1, self.roi_batch_size, self.num_classes + 1)),
            ops.reshape(box_deltas, (-1, self.roi_batch_size, self.num_classes, 4)),
            rois["classes"],
            rois["box_targets"],
            rois["valid"],
            beta=betas.roi_box_beta,
        )
        terms = dict(zip(LOSS_TERMS, (rpn_objectness, rpn_box, roi_class, roi_box), strict=True))
        return terms, features, rois

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Zero: a Faster R-CNN's loss is no function of `(y, y_pred)`.

        Keras calls this on symbolic tensors when `fit` and `evaluate` start, to build a
        compiled loss; `train_step` and `test_step` compute the real one
        (`compute_loss_terms`).
        """
        return ops.zeros((), "float32")

    def train_step(self, data):
        images, targets, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            terms = self.compute_loss_terms(
                images, targets, self.optimizer.iterations, training=True
            )
            total = self._total_loss(terms)
            scaled = self.optimizer.scale_loss(total)
        gradients = tape.gradient(scaled, self.trainable_weights)
        self.optimizer.apply(gradients, self.trainable_weights)
        return self._log(terms, total)

    def test_step(self, data):
        images, targets, _ = keras.utils.unpack_x_y_sample_weight(data)
        step = 0 if self.optimizer is None else self.optimizer.iterations
        terms = self.compute_loss_terms(images, targets, step, training=False)
        return self._log(terms, self._total_loss(terms))

    def _compiled_loss(self):
        if self.loss is None:
            return self.LOSS_CLASS()
        if not isinstance(self.loss, self.LOSS_CLASS):
            raise ValueError(
                f"A {type(self).__name__} must be compiled with its own loss settings, "
                f"`loss=model.make_loss(...)` (a `{self.LOSS_CLASS.__name__}`), or none. "
                f"Received: loss={self.loss!r}"
            )
        return self.loss

    def _total_loss(self, terms):
        weights = self._compiled_loss().weights
        total = sum(
            weight * terms[name] for weight, name in zip(weights, self.LOSS_TERMS, strict=True)
        )
        if self.losses:
            # The terms are each replica's share of the global loss, the layers' losses
            # are whole on every replica: they are divided so that the replicas' summed
            # gradients count them once.
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            total += ops.cast(ops.sum([ops.sum(x) for x in self.losses]), "float32") / replicas
        return total

    def _log(self, terms, total):
        # Each replica holds a share of the global values: times the replica count, their
        # mean over the replicas is the global value (Keras's `unscale_loss_for_distribution`).
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        values = {"loss": total, **terms}
        for tracker in self.loss_trackers:
            tracker.update_state(values[tracker.name] * replicas)
        return {tracker.name: tracker.result() for tracker in self.loss_trackers}


def _check_image_size(backbone, levels):
    image_shape = tuple(backbone.input_shape[1:])
    coarsest = level_stride(levels[-1])
    for axis, size in zip(("height", "width"), image_shape[:2], strict=True):
        if size is None or size % coarsest:
            raise ValueError(
                f"FasterRCNN needs a fixed input {axis} divisible by the coarsest stride "
                f"{coarsest} (its anchors depend on it). Received: input_shape={image_shape}"
            )
    return int(image_shape[0]), int(image_shape[1])
