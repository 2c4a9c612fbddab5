"""Raw anchor-free detector outputs -> boxes, scores and classes after per-class NMS.

Everything here converts to TFLite with builtin ops only (`TFLITE_BUILTINS`, no Flex): the
class scores go through `tf.math.reduce_max` and `tf.math.argmax` (REDUCE_MAX, ARG_MAX),
not `keras.ops.argmax`, whose TensorFlow implementation emits `Bitcast` and `BitwiseAnd`
(to order -0.0 before 0.0), ops TFLite has no builtin kernel for; suppression is one
`NonMaxSuppressionV5` per image (NON_MAX_SUPPRESSION_V5), looped over the batch by
`tf.map_fn` (WHILE).

Zero-area candidates are dropped before NMS (their score is set to 0). Besides not being
detections, they are where TensorFlow's and LiteRT's NMS kernels disagree: LiteRT's
NON_MAX_SUPPRESSION_V5 pushes each selected candidate back onto its queue and relies on
the candidate's IoU with itself (1) to suppress it on the next pop; a zero-area box has
IoU 0 with everything, itself included, so LiteRT selects it again and again until
`max_output_size`, where TensorFlow's kernel selects it once.
"""

import numbers

import keras
import tensorflow as tf

from kcnn._serialization import register
from kcnn._validation import check_fraction, check_positive_int
from kcnn.detection.boxes import anchor_points

DETECTION_OUTPUTS = ("boxes", "scores", "classes", "count")


def _check_threshold(value, name):
    return check_fraction(value, name, low_open=False, high_open=False)


def _normalize_image_size(image_size):
    if image_size is None:
        return None
    if isinstance(image_size, numbers.Integral) and not isinstance(image_size, bool):
        image_size = (image_size, image_size)
    if (
        not isinstance(image_size, (tuple, list))
        or len(image_size) != 2
        or not all(
            isinstance(side, numbers.Integral) and not isinstance(side, bool) and side > 0
            for side in image_size
        )
    ):
        raise ValueError(
            "`image_size` must be None, a positive int or a tuple of 2 positive ints "
            f"(height, width). Received: image_size={image_size!r}"
        )
    return (int(image_size[0]), int(image_size[1]))


def _nms_one_image(boxes, scores, classes, class_span, score_threshold, iou_threshold, size):
    """Per-class NMS of one image's candidates: the kept indices, padded to `size`, and
    their count."""
    # Moving each class to its own region of the plane, `class_span` pixels apart, means boxes
    # of different classes never overlap, so one class-agnostic NMS suppresses within classes
    # only (the "class offset" of torchvision's batched_nms).
    shifted = boxes + (tf.cast(classes, boxes.dtype) * class_span)[:, tf.newaxis]
    # The TF op takes (y1, x1, y2, x2); IoU is the same with x and y swapped, so xyxy boxes
    # go in as they are. The raw op is used for `pad_to_max_output_size`, which gives
    # static output shapes; `tf.image.non_max_suppression_with_scores` does not expose it.
    indices, _, count = tf.raw_ops.NonMaxSuppressionV5(
        boxes=shifted,
        scores=scores,
        max_output_size=size,
        iou_threshold=iou_threshold,
        score_threshold=score_threshold,
        soft_nms_sigma=0.0,
        pad_to_max_output_size=True,
    )
    return indices, count


def decode_detections(
    points,
    strides,
    raw,
    num_classes,
    score_threshold=0.05,
    iou_threshold=0.5,
    max_detections=100,
    image_size=None,
):
    """Decodes raw anchor-free detector outputs into boxes, then applies per-class NMS.

    For each anchor point `(x, y)` with stride `s`, the first 4 channels are the
    distances `(left, top, right, bottom)` to the box sides in stride units (as in FCOS,
    Tian et al. 2019, arXiv:1904.01355, and YOLOv8), giving the box
    `(x - left * s, y - top * s, x + right * s, y + bottom * s)` in pixels, clipped to
    the image. The remaining `num_classes` channels are class logits: each point keeps
    its best class, with score `sigmoid(max logit)`.

    Candidates with a score above `score_threshold` then go through greedy
    non-maximum suppression within each class: a box is dropped when its IoU with a
    higher-scoring kept box of the same class exceeds `iou_threshold`. Boxes of
    different classes never suppress each other. At most `max_detections` boxes per
    image are kept, best first. A box with zero width or height after clipping (one
    wholly outside the image, say) is never kept.

    Uses TensorFlow ops directly (Keras has no NMS op) and converts to TFLite with
    builtin ops only; see the module docstring.

    Args:
        points: array `(N, 2)` of anchor points `(x, y)` in pixels
            (`kcnn.detection.boxes.anchor_points`).
        strides: array `(N,)`, the stride of each point.
        raw: tensor `(B, N, 4 + num_classes)`: distances, then class logits.
        num_classes: int. Number of classes.
        score_threshold: float in [0, 1]. Defaults to `0.05`.
        iou_threshold: float in [0, 1]. Defaults to `0.5`.
        max_detections: int. Detections kept per image. Defaults to `100`.
        image_size: None, int, or `(height, width)`. Boxes are clipped to
            `[0, width] x [0, height]`. None clips at 0 only. Defaults to `None`.

    Returns:
        A tuple `(boxes, scores, classes, count)`: float32 `boxes`
        `(B, max_detections, 4)` `(x_min, y_min, x_max, y_max)` pixels, float32
        `scores` `(B, max_detections)`, int32 `classes` `(B, max_detections)` 0-based,
        and int32 `count` `(B,)`. Image `b` has `count[b]` detections, sorted by
        decreasing score; the rows after them are padding (boxes and scores 0,
        classes -1).

    Raises:
        ValueError: if an argument has the wrong shape or is out of range; the message
            names it.

    Example:
    >>> import numpy as np
    >>> points, strides = np.array([[4.0, 4.0], [12.0, 4.0]]), np.array([8.0, 8.0])
    >>> raw = np.array([[[0.5, 0.5, 0.5, 0.5, 3.0, -3.0], [1, 1, 1, 1, -5.0, -5.0]]])
    >>> boxes, scores, classes, count = decode_detections(
    ...     points, strides, raw, num_classes=2, max_detections=3, image_size=16)
    >>> np.asarray(boxes)[0, 0].tolist(), np.asarray(classes)[0].tolist(), int(count[0])
    ([0.0, 0.0, 8.0, 8.0], [0, -1, -1], 1)
    """
    num_classes = check_positive_int(num_classes, "num_classes")
    score_threshold = _check_threshold(score_threshold, "score_threshold")
    iou_threshold = _check_threshold(iou_threshold, "iou_threshold")
    max_detections = check_positive_int(max_detections, "max_detections")
    image_size = _normalize_image_size(image_size)
    points = tf.cast(points, tf.float32)
    strides = tf.cast(strides, tf.float32)
    raw = tf.cast(raw, tf.float32)
    if points.shape.rank != 2 or points.shape[1] != 2:
        raise ValueError(f"`points` must have shape (N, 2). Received: points.shape={points.shape}")
    num_points = points.shape[0]
    if strides.shape != (num_points,):
        raise ValueError(
            f"`strides` must have shape (N,) with N={num_points} points. "
            f"Received: strides.shape={strides.shape}"
        )
    if (
        raw.shape.rank != 3
        or raw.shape[-1] != 4 + num_classes
        or raw.shape[1]
        not in (
            None,
            num_points,
        )
    ):
        raise ValueError(
            f"`raw` must have shape (batch, N={num_points}, 4 + num_classes={4 + num_classes})."
            f" Received: raw.shape={raw.shape}"
        )

    pixels = raw[..., :4] * strides[:, tf.newaxis]
    x, y = points[:, 0], points[:, 1]
    boxes = tf.stack(
        [x - pixels[..., 0], y - pixels[..., 1], x + pixels[..., 2], y + pixels[..., 3]], axis=-1
    )
    return suppress_detections(
        boxes, raw[..., 4:], score_threshold, iou_threshold, max_detections, image_size
    )


def suppress_detections(
    boxes, logits, score_threshold=0.05, iou_threshold=0.5, max_detections=100, image_size=None
):
    """Clips decoded boxes, scores each by its best class and applies per-class NMS.

    The part of decoding every box parametrisation shares (`decode_detections` for
    distances to anchor points, `kcnn.detection.retinanet.RetinaNetDecoder` for anchor-box
    deltas): each candidate keeps its best class with score `sigmoid(max logit)`, those
    above `score_threshold` go through greedy NMS within their class, and the best
    `max_detections` per image are kept. Boxes left with zero width or height after
    clipping score 0 and are never kept. TFLite builtins only (see the module docstring).

    Args:
        boxes: float32 tensor `(B, N, 4)`, candidate boxes `(x_min, y_min, x_max, y_max)`
            in pixels.
        logits: float32 tensor `(B, N, num_classes)`, class logits.
        score_threshold, iou_threshold, max_detections, image_size: see
            `decode_detections` (checked by the caller).

    Returns:
        `(boxes, scores, classes, count)` as `decode_detections` returns them.
    """
    boxes = tf.maximum(boxes, 0.0)
    if image_size is not None:
        height, width = image_size
        boxes = tf.minimum(boxes, tf.constant([width, height, width, height], tf.float32))
        class_span = tf.fill(tf.shape(boxes)[:1], float(max(height, width) + 1))
    else:
        class_span = tf.math.reduce_max(boxes, axis=[1, 2]) + 1.0
    scores = tf.math.sigmoid(tf.math.reduce_max(logits, axis=-1))
    classes = tf.math.argmax(logits, axis=-1, output_type=tf.int32)
    # A box clipped to nothing (or predicted empty) is no detection; dropping it also
    # keeps LiteRT's NMS from selecting it up to `max_detections` times (module docstring).
    has_area = tf.math.logical_and(boxes[..., 2] > boxes[..., 0], boxes[..., 3] > boxes[..., 1])
    scores = tf.where(has_area, scores, tf.zeros_like(scores))
    return batched_class_nms(
        boxes, scores, classes, class_span, score_threshold, iou_threshold, max_detections
    )


def batched_class_nms(
    boxes, scores, classes, class_span, score_threshold, iou_threshold, max_detections
):
    """Per-class NMS of every image of a batch, padded to `max_detections` rows.

    Args:
        boxes: float32 `(B, N, 4)` xyxy candidates (zero-area ones scored 0 by the caller).
        scores: float32 `(B, N)`.
        classes: int32 `(B, N)`.
        class_span: float32 `(B,)`, more than any box coordinate of the image: how far
            apart the classes are moved (see `_nms_one_image`).
        score_threshold, iou_threshold: floats; `max_detections`: int.

    Returns:
        `(boxes (B, D, 4), scores (B, D), classes (B, D), count (B,))`, best first, padding
        rows zero with class -1.
    """

    def suppress(image):
        return _nms_one_image(*image, score_threshold, iou_threshold, max_detections)

    # Only indices and counts come out of the loop over images: the boxes, scores and
    # classes are gathered after it, so that an int8 TFLite file quantizes them with the
    # ranges calibration saw (it records none for tensors inside a WHILE body).
    indices, count = tf.map_fn(
        suppress,
        (boxes, scores, classes, class_span),
        fn_output_signature=(
            tf.TensorSpec([max_detections], tf.int32),
            tf.TensorSpec([], tf.int32),
        ),
    )
    valid = tf.range(max_detections)[tf.newaxis, :] < count[:, tf.newaxis]
    return (
        tf.where(valid[..., tf.newaxis], tf.gather(boxes, indices, batch_dims=1), 0.0),
        tf.where(valid, tf.gather(scores, indices, batch_dims=1), 0.0),
        tf.where(valid, tf.gather(classes, indices, batch_dims=1), -1),
        count,
    )


class DetectionSettings(keras.layers.Layer):
    """The settings every detection decoder layer has, checked and in its config:
    `num_classes`, `image_size`, `score_threshold`, `iou_threshold`, `max_detections`.

    The base of `DetectionDecoder` and of the Faster R-CNN decoders
    (`kcnn.detection.faster_rcnn_outputs`); not a layer on its own.

    Raises:
        ValueError: naming the argument, for a non-positive `num_classes` or
            `max_detections`, a threshold outside [0, 1] or a missing or malformed
            `image_size`.
    """

    def __init__(
        self,
        num_classes,
        image_size,
        score_threshold=0.05,
        iou_threshold=0.5,
        max_detections=100,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_classes = check_positive_int(num_classes, "num_classes")
        if image_size is None:
            raise ValueError("`image_size` is required. Received: image_size=None")
        self.image_size = _normalize_image_size(image_size)
        self.score_threshold = _check_threshold(score_threshold, "score_threshold")
        self.iou_threshold = _check_threshold(iou_threshold, "iou_threshold")
        self.max_detections = check_positive_int(max_detections, "max_detections")

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "image_size": self.image_size,
                "score_threshold": self.score_threshold,
                "iou_threshold": self.iou_threshold,
                "max_detections": self.max_detections,
            }
        )
        return config


@register
class DetectionDecoder(DetectionSettings):
    """Turns raw anchor-free detector outputs into final detections (boxes after NMS).

    Wraps `decode_detections` with the anchor points of `kcnn.detection.boxes.anchor_points(
    image_size, strides)` (cell centres, row-major, finest level first), so a model
    `image -> raw -> DetectionDecoder` outputs detections and exports to SavedModel and to
    TFLite with builtin ops only (NON_MAX_SUPPRESSION_V5 inside a WHILE loop over the
    batch). Not XLA-compilable (`supports_jit = False`): the NMS op has no XLA kernel.

    Args:
        num_classes: int. Number of classes.
        image_size: int or `(height, width)`, the model input size; each side divisible by
            every stride.
        strides: tuple of ints, the stride of each pyramid level, finest first. Defaults
            to `(8, 16, 32)`.
        score_threshold: float in [0, 1]. Defaults to `0.05`.
        iou_threshold: float in [0, 1]. Defaults to `0.5`.
        max_detections: int. Detections kept per image. Defaults to `100`.
        **kwargs: base `keras.layers.Layer` arguments.

    Input shape:
        `(batch, N, 4 + num_classes)`: distances `(left, top, right, bottom)` in stride
        units, then class logits, at the N anchor points.

    Output shape:
        A dict: `"boxes"` float32 `(batch, max_detections, 4)` xyxy pixels, `"scores"`
        float32 `(batch, max_detections)`, `"classes"` int32 `(batch, max_detections)`,
        `"count"` int32 `(batch,)`; see `decode_detections`.

    Raises:
        ValueError: if an argument is invalid, or the input does not have N points and
            `4 + num_classes` channels.

    Example:
    >>> import numpy as np
    >>> decoder = DetectionDecoder(num_classes=2, image_size=16, strides=(8,), max_detections=5)
    >>> raw = np.full((1, 4, 6), -9.0, "float32")  # 4 points; only the first scores high
    >>> raw[0, 0] = [0.5, 0.5, 0.5, 0.5, 2.0, -2.0]
    >>> outputs = decoder(raw)
    >>> np.asarray(outputs["boxes"])[0, 0].tolist(), np.asarray(outputs["count"]).tolist()
    ([0.0, 0.0, 8.0, 8.0], [1])
    """

    def __init__(
        self,
        num_classes,
        image_size,
        strides=(8, 16, 32),
        score_threshold=0.05,
        iou_threshold=0.5,
        max_detections=100,
        **kwargs,
    ):
        super().__init__(
            num_classes, image_size, score_threshold, iou_threshold, max_detections, **kwargs
        )
        self.strides = tuple(strides)
        self._points, self._point_strides = anchor_points(self.image_size, self.strides)
        self.supports_jit = False

    def build(self, input_shape):
        expected = (self._candidate_count(), 4 + self.num_classes)
        if len(input_shape) != 3 or any(
            size is not None and size != want
            for size, want in zip(input_shape[1:], expected, strict=True)
        ):
            raise ValueError(
                f"DetectionDecoder expects inputs of shape (batch, {expected[0]}, {expected[1]})"
                f" for image_size={self.image_size}, strides={self.strides} and "
                f"num_classes={self.num_classes}. Received: input_shape={tuple(input_shape)}"
            )

    def _candidate_count(self):
        """How many candidates (rows of the input) one image has: its anchor points."""
        return len(self._points)

    def call(self, inputs):
        boxes, scores, classes, count = decode_detections(
            self._points,
            self._point_strides,
            inputs,
            self.num_classes,
            self.score_threshold,
            self.iou_threshold,
            self.max_detections,
            self.image_size,
        )
        return {"boxes": boxes, "scores": scores, "classes": classes, "count": count}

    def compute_output_shape(self, input_shape):
        batch, size = input_shape[0], self.max_detections
        return {
            "boxes": (batch, size, 4),
            "scores": (batch, size),
            "classes": (batch, size),
            "count": (batch,),
        }

    def compute_output_spec(self, inputs):
        shapes = self.compute_output_shape(inputs.shape)
        dtypes = {"boxes": "float32", "scores": "float32", "classes": "int32", "count": "int32"}
        return {name: keras.KerasTensor(shapes[name], dtypes[name]) for name in shapes}

    def get_config(self):
        config = super().get_config()
        config["strides"] = self.strides
        return config
