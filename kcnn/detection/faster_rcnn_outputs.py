"""What `kcnn.detection.FasterRCNN` outputs, how the detection task reads it, and the
settings of its loss.

- `decode_roi_detections` (`RoIDetections`): softmax, every class's box decoded from its
  proposal, clipping and per-class NMS: the model's final detections, packed in one tensor.
- `FasterRCNNDecoder`: unpacks them into the detection task's dict of detections.
- `FasterRCNNLoss`: the weights of the four loss terms (and their betas) that the model's
  `train_step` reads.

Everything at inference converts to TFLite with builtin ops only (SOFTMAX, GATHER,
NON_MAX_SUPPRESSION_V5 inside a WHILE over the batch); TensorFlow ops are used where Keras
has none (NMS, `map_fn`, batched gathers).
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from kcnn._serialization import register
from kcnn._validation import is_number
from kcnn.detection.decode import DetectionSettings, batched_class_nms
from kcnn.detection.two_stage import ROI_BOX_WEIGHTS, decode_boxes

# One detection row of the model's output: x_min, y_min, x_max, y_max, score, class.
DETECTION_COLUMNS = 6
# The four terms of the loss, in the order of the loss weights and of the logs after "loss".
LOSS_TERMS = ("rpn_objectness_loss", "rpn_box_loss", "roi_class_loss", "roi_box_loss")


@register
class FasterRCNNLoss(keras.losses.Loss):
    """The loss settings of a `FasterRCNN`: the weights of its four terms and their betas.

    The loss is

        rpn_objectness_weight * rpn_objectness + rpn_box_weight * rpn_box
        + roi_class_weight * roi_class + roi_box_weight * roi_box  (+ the layers' losses)

    with the terms of `kcnn.detection.rpn_loss` (smooth L1 with `rpn_box_beta`) and
    `kcnn.detection.fast_rcnn_loss` (smooth L1 with `roi_box_beta`). They need the model's
    intermediate tensors, so `FasterRCNN.train_step` computes them and reads the settings
    from this object, the `loss` the model was compiled with (`model.make_loss(...)`, as
    `kcnn.detection.detection_loss(model, **train.loss)` builds it). Calling it on
    `(y_true, y_pred)` raises.

    Args:
        rpn_objectness_weight: non-negative number. Defaults to `1.0`.
        rpn_box_weight: non-negative number. Defaults to `1.0`.
        roi_class_weight: non-negative number. Defaults to `1.0`.
        roi_box_weight: non-negative number. Defaults to `1.0`.
        rpn_box_beta: non-negative number. Defaults to `1 / 9` (Faster R-CNN's sigma 3).
        roi_box_beta: non-negative number. Defaults to `1.0` (Fast R-CNN's).
        name: str. Defaults to `"faster_rcnn_loss"`.
        **kwargs: base `keras.losses.Loss` arguments.

    Raises:
        ValueError: for a bad argument, named with the value received; when called.

    Example:
    >>> loss = FasterRCNNLoss(roi_box_weight=2.0)
    >>> loss.weights
    (1.0, 1.0, 1.0, 2.0)
    """

    def __init__(
        self,
        rpn_objectness_weight=1.0,
        rpn_box_weight=1.0,
        roi_class_weight=1.0,
        roi_box_weight=1.0,
        rpn_box_beta=1.0 / 9.0,
        roi_box_beta=1.0,
        name="faster_rcnn_loss",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.rpn_objectness_weight = _non_negative(rpn_objectness_weight, "rpn_objectness_weight")
        self.rpn_box_weight = _non_negative(rpn_box_weight, "rpn_box_weight")
        self.roi_class_weight = _non_negative(roi_class_weight, "roi_class_weight")
        self.roi_box_weight = _non_negative(roi_box_weight, "roi_box_weight")
        self.rpn_box_beta = _non_negative(rpn_box_beta, "rpn_box_beta")
        self.roi_box_beta = _non_negative(roi_box_beta, "roi_box_beta")

    @property
    def weights(self):
        """The weights of the terms, in the order of `LOSS_TERMS`."""
        return (
            self.rpn_objectness_weight,
            self.rpn_box_weight,
            self.roi_class_weight,
            self.roi_box_weight,
        )

    def call(self, y_true, y_pred):
        raise ValueError(
            "`FasterRCNNLoss` cannot be computed from (y_true, y_pred): Faster R-CNN's losses "
            "need the region proposal network's outputs and the sampled RoIs. Compile a "
            "`FasterRCNN` with it (`model.make_loss()`) and train with `fit`, whose "
            "`train_step` computes them; `model.compute_loss_terms(images, targets)` returns "
            "the four terms."
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "rpn_objectness_weight": self.rpn_objectness_weight,
                "rpn_box_weight": self.rpn_box_weight,
                "roi_class_weight": self.roi_class_weight,
                "roi_box_weight": self.roi_box_weight,
                "rpn_box_beta": self.rpn_box_beta,
                "roi_box_beta": self.roi_box_beta,
            }
        )
        return config


def decode_roi_detections(
    class_logits,
    box_deltas,
    proposals,
    proposal_valid,
    image_size,
    score_threshold=0.05,
    iou_threshold=0.5,
    max_detections=100,
):
    """The final detections of Faster R-CNN: every class's box of every proposal, per-class
    NMS.

    As Detectron2's `fast_rcnn_inference` (Faster R-CNN section 3.3, Fast R-CNN of Girshick
    2015, arXiv:1504.08083, section 3.1): the class probabilities are the softmax of the
    logits, class k (0-based) being softmax index k + 1; proposal p's box for class k is
    `decode_boxes(box_deltas[p, k], proposals[p], weights=(10, 10, 5, 5))`, clipped to the
    image. Each (proposal, class) pair scoring above `score_threshold`, with a box of
    non-zero area and a valid proposal, is a candidate; greedy NMS runs within each class
    (IoU above `iou_threshold` suppresses) by one `NonMaxSuppressionV5` per image with the
    class offset of `kcnn.detection.decode`, and the `max_detections` best are kept.

    Args:
        class_logits: float tensor `(B, P, K + 1)`.
        box_deltas: float tensor `(B, P, K, 4)`.
        proposals: float tensor `(B, P, 4)`, xyxy pixels.
        proposal_valid: bool tensor `(B, P)`.
        image_size: `(height, width)`.
        score_threshold: float in [0, 1]. Defaults to `0.05`.
        iou_threshold: float in [0, 1]. Defaults to `0.5`.
        max_detections: positive int. Defaults to 100.

    Returns:
        A tuple `(boxes (B, D, 4), scores (B, D), classes (B, D), count (B,))`, D =
        `max_detections`: float32 xyxy pixels, float32 probabilities in decreasing order,
        int32 0-based classes, int32 counts; rows past `count` are padding (0, 0, -1).
    """
    height, width = image_size
    logits = tf.cast(class_logits, tf.float32)
    num_classes = logits.shape[-1] - 1
    num_proposals = logits.shape[1]
    probabilities = tf.nn.softmax(logits, axis=-1)[..., 1:]  # class k at softmax index k + 1
    boxes = decode_boxes(
        tf.cast(box_deltas, tf.float32),
        tf.cast(proposals, tf.float32)[:, :, tf.newaxis, :],
        ROI_BOX_WEIGHTS,
    )
    image_corner = tf.constant([width, height, width, height], tf.float32)
    boxes = tf.minimum(tf.maximum(boxes, 0.0), image_corner)
    has_area = tf.logical_and(boxes[..., 2] > boxes[..., 0], boxes[..., 3] > boxes[..., 1])
    kept = tf.logical_and(has_area, tf.cast(proposal_valid, tf.bool)[..., tf.newaxis])
    candidates = num_proposals * num_classes
    # Row p * K + k is proposal p's box for class k.
    scores = tf.reshape(tf.where(kept, probabilities, 0.0), [-1, candidates])
    boxes = tf.reshape(boxes, [-1, candidates, 4])
    classes = tf.zeros_like(scores, tf.int32) + tf.tile(tf.range(num_classes), [num_proposals])
    class_span = tf.fill(tf.shape(scores)[:1], float(max(height, width) + 1))
    return batched_class_nms(
        boxes, scores, classes, class_span, score_threshold, iou_threshold, max_detections
    )


@register
class RoIDetections(DetectionSettings):
    """`decode_roi_detections` as a layer whose output is one float32 tensor
    `(batch, max_detections, 6)`: rows `(x_min, y_min, x_max, y_max, score, class)`, the
    class -1 on padding rows (`FasterRCNNDecoder` unpacks it).

    One tensor, not a dict, so that the model has a single output as kcnn's other detectors
    do (`detector_with_decoder` appends the decoder to `model.outputs[0]`). No weights; not
    XLA-compilable.

    Args:
        num_classes: positive int.
        image_size: int or `(height, width)`.
        score_threshold: float in [0, 1]. Defaults to `0.05`.
        iou_threshold: float in [0, 1]. Defaults to `0.5`.
        max_detections: positive int. Defaults to 100.
        **kwargs: base layer arguments.

    Input shape:
        `(class_logits (batch * P, K + 1), box_deltas (batch * P, K, 4), proposals
        (batch, P, 4), proposal_valid (batch, P))`.

    Output shape:
        `(batch, max_detections, 6)`.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.supports_jit = False

    def call(self, class_logits, box_deltas, proposals, proposal_valid):
        count = proposals.shape[1]
        boxes, scores, classes, _ = decode_roi_detections(
            tf.reshape(class_logits, [-1, count, self.num_classes + 1]),
            tf.reshape(box_deltas, [-1, count, self.num_classes, 4]),
            proposals,
            proposal_valid,
            self.image_size,
            self.score_threshold,
            self.iou_threshold,
            self.max_detections,
        )
        return tf.concat(
            [boxes, scores[..., tf.newaxis], tf.cast(classes, tf.float32)[..., tf.newaxis]],
            axis=-1,
        )

    def compute_output_spec(self, class_logits, box_deltas, proposals, proposal_valid):
        shape = (proposals.shape[0], self.max_detections, DETECTION_COLUMNS)
        return keras.KerasTensor(shape, "float32")


@register
class FasterRCNNDecoder(DetectionSettings):
    """Unpacks a `FasterRCNN`'s output into the detection task's dict of detections.

    The model decodes and suppresses itself (`RoIDetections`); this layer only splits its
    rows `(x_min, y_min, x_max, y_max, score, class)` into `boxes`, `scores`, `classes` and
    `count`, keeping the rows that score above `score_threshold`, at most `max_detections`.
    The rows come sorted by decreasing score, so the kept ones are a prefix: a
    `score_threshold` at or above the model's and a `max_detections` at or below it give
    exactly the detections of a model built with them (a box below the threshold only ever
    suppresses lower-scoring boxes). `iou_threshold` records the model's NMS IoU, which is
    fixed inside the model. Build it with `model.make_decoder()` (or
    `kcnn.detection.detection_decoder(model)`), which checks those settings.

    Args:
        num_classes: positive int.
        image_size: int or `(height, width)`, the model's input size.
        score_threshold: float in [0, 1]. Defaults to `0.05`.
        iou_threshold: float in [0, 1], the model's NMS IoU. Defaults to `0.5`.
        max_detections: positive int. Defaults to 100.
        **kwargs: base layer arguments.

    Input shape:
        `(batch, D, 6)` with D >= `max_detections`: the model's output.

    Output shape:
        A dict: `"boxes"` float32 `(batch, max_detections, 4)` xyxy pixels, `"scores"`
        float32 `(batch, max_detections)`, `"classes"` int32 `(batch, max_detections)` (-1 on
        padding rows), `"count"` int32 `(batch,)`.

    Raises:
        ValueError: for a bad argument or an input that is not `(batch, D, 6)` with D >=
            `max_detections`.

    Example:
    >>> import numpy as np
    >>> rows = np.array([[[0, 0, 8, 8, 0.9, 1], [4, 4, 9, 9, 0.2, 0], [0, 0, 0, 0, 0, -1]]])
    >>> outputs = FasterRCNNDecoder(2, 16, score_threshold=0.5, max_detections=3)(rows)
    >>> np.asarray(outputs["classes"]).tolist(), np.asarray(outputs["count"]).tolist()
    ([[1, -1, -1]], [1])
    """

    # The columns of a row of the model's output.
    columns = DETECTION_COLUMNS

    def build(self, input_shape):
        if (
            len(input_shape) != 3
            or input_shape[2] != self.columns
            or (input_shape[1] is not None and input_shape[1] < self.max_detections)
        ):
            raise ValueError(
                f"{type(self).__name__} expects the model's detections (batch, D, "
                f"{self.columns}) with D >= max_detections={self.max_detections}. "
                f"Received: input_shape={tuple(input_shape)}"
            )

    def call(self, inputs):
        rows = ops.cast(inputs, "float32")[:, : self.max_detections, :DETECTION_COLUMNS]
        boxes, scores, classes = rows[..., :4], rows[..., 4], ops.cast(rows[..., 5], "int32")
        valid = ops.logical_and(classes >= 0, scores > self.score_threshold)
        return {
            "boxes": ops.where(valid[..., None], boxes, 0.0),
            "scores": ops.where(valid, scores, 0.0),
            "classes": ops.where(valid, classes, -1),
            "count": ops.sum(ops.cast(valid, "int32"), axis=1),
        }

    def compute_output_spec(self, inputs):
        batch, size = inputs.shape[0], self.max_detections
        return {
            "boxes": keras.KerasTensor((batch, size, 4), "float32"),
            "scores": keras.KerasTensor((batch, size), "float32"),
            "classes": keras.KerasTensor((batch, size), "int32"),
            "count": keras.KerasTensor((batch,), "int32"),
        }


def _non_negative(value, name):
    if not is_number(value) or not np.isfinite(value) or value < 0:
        raise ValueError(f"`{name}` must be a non-negative number. Received: {name}={value!r}")
    return float(value)
