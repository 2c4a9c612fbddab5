"""The layers of `kcnn.detection.FasterRCNN` up to its RoIs: the feature pyramid, the two
heads, the proposals and the batching of boxes for RoIAlign.

- `feature_pyramid_network`: FPN over a backbone (Lin et al. 2017, arXiv:1612.03144).
- `RPNHead`: the region proposal network's head on every pyramid level (Ren et al. 2015,
  arXiv:1506.01497, section 3.1; shared across levels as in Lin et al. section 4.1).
- `RegionProposals`: `generate_proposals` at inference, with the fixed anchors of the model.
- `RoIBoxes`: a batch of per-image boxes as the `(boxes, box_indices)` pair of `RoIAlign`.
- `BoxHead`: the Fast R-CNN head on the pooled RoIs, two fully connected layers ("fc") or
  four 3x3 convolutions and one fully connected layer ("conv"), then K + 1 class logits and
  class-specific box deltas.

What the model outputs, its decoder and its loss settings are in
`kcnn.detection.faster_rcnn_outputs`.
"""

import keras
import numpy as np
from keras import ops

from kcnn._serialization import register
from kcnn._validation import check_fraction, check_positive_int, normalize_image_size
from kcnn.backbones import level_stride, pyramid_features
from kcnn.detection.two_stage import fpn_anchors, generate_proposals
from kcnn.models._blocks import match_size

BOX_HEADS = ("fc", "conv")


def feature_pyramid_network(backbone, levels, channels):
    """The feature pyramid network over a backbone: image -> FPN maps.

    Lin et al. 2017 (arXiv:1612.03144), section 3: a 1x1 lateral convolution brings each
    level to `channels`; from the coarsest level down, each map is upsampled by 2 (nearest)
    and added to the next finer lateral; a 3x3 convolution smooths every sum. A backbone
    level a pixel off its `size // stride` grid is cropped or padded onto it first.

    Args:
        backbone: a kcnn backbone (after `kcnn.backbones.pyramid_backbone`).
        levels: consecutive level names, finest first (`check_pyramid_levels`).
        channels: positive int.

    Returns:
        A functional `keras.Model` named "feature_pyramid", image -> dict of the maps keyed
        by `levels`.

    Raises:
        ValueError: for a level the backbone does not give.
    """
    inputs = keras.Input(shape=backbone.input_shape[1:], name="image")
    features = pyramid_features(backbone, inputs, levels)
    laterals = [
        keras.layers.Conv2D(channels, 1, name=f"fpn_{level}_lateral")(
            match_size(features[level], inputs, f"fpn_{level}_grid", level_stride(level))
        )
        for level in levels
    ]
    merged = [laterals[-1]]
    for index in range(len(levels) - 2, -1, -1):
        level = levels[index]
        upsampled = keras.layers.UpSampling2D(2, name=f"fpn_{level}_upsample")(merged[0])
        merged.insert(0, keras.layers.Add(name=f"fpn_{level}_add")([laterals[index], upsampled]))
    outputs = {
        level: keras.layers.Conv2D(channels, 3, padding="same", name=f"fpn_{level}_output")(x)
        for level, x in zip(levels, merged, strict=True)
    }
    return keras.Model(inputs, outputs, name="feature_pyramid")


def check_pyramid_levels(levels):
    """`(names, numbers)` of consecutive pyramid levels "Pk", sorted finest first.

    Raises:
        ValueError: naming `levels` and the value received.

    Example:
    >>> check_pyramid_levels(["P3", "P2"])
    (('P2', 'P3'), (2, 3))
    """
    names = tuple(levels) if isinstance(levels, list | tuple) else ()
    numbers = [int(n[1:]) for n in names if isinstance(n, str) and n[:1] == "P" and n[1:].isdigit()]
    numbers = sorted(numbers)
    if (
        not names
        or len(numbers) != len(names)
        or numbers != list(range(numbers[0], numbers[0] + len(numbers)))
    ):
        raise ValueError(
            '`levels` must be consecutive pyramid levels "Pk" (FPN adds each level to the '
            f'next finer one), e.g. ("P2", "P3", "P4", "P5"). Received: levels={levels!r}'
        )
    return tuple(f"P{k}" for k in numbers), tuple(numbers)


@register
class RPNHead(keras.layers.Layer):
    """The region proposal network's head, shared by every pyramid level.

    Faster R-CNN section 3.1 (Ren et al. 2015, arXiv:1506.01497) on a pyramid (Lin et al.
    2017, arXiv:1612.03144, section 4.1): a 3x3 convolution with ReLU, then two sibling 1x1
    convolutions, one objectness logit per anchor and 4 deltas per anchor; the same weights
    run on every level. Weights start as Detectron2's: normal with standard deviation 0.01,
    biases 0.

    Args:
        num_anchors: positive int. Anchors per cell (the aspect ratios of a level).
        filters: positive int. Channels of the 3x3 convolution.
        **kwargs: base layer arguments.

    Input shape:
        A list of maps `(batch, H_l, W_l, C)`, one per level, with known H_l and W_l.

    Output shape:
        A tuple `(objectness, deltas)` of lists with one tensor per level:
        `(batch, H_l * W_l * num_anchors)` and `(batch, H_l * W_l * num_anchors, 4)`, the
        anchor of cell (y, x) and ratio r at row `(y * W_l + x) * num_anchors + r`, the order
        of `kcnn.detection.fpn_anchors`.

    Example:
    >>> import numpy as np
    >>> head = RPNHead(3, 8)
    >>> objectness, deltas = head([np.zeros((2, 4, 4, 8)), np.zeros((2, 2, 2, 8))])
    >>> objectness[0].shape, deltas[1].shape
    (TensorShape([2, 48]), TensorShape([2, 12, 4]))
    """

    def __init__(self, num_anchors, filters, **kwargs):
        super().__init__(**kwargs)
        self.num_anchors = check_positive_int(num_anchors, "num_anchors")
        self.filters = check_positive_int(filters, "filters")
        initializer = keras.initializers.RandomNormal(stddev=0.01)
        self.conv = keras.layers.Conv2D(
            self.filters,
            3,
            padding="same",
            activation="relu",
            kernel_initializer=initializer,
            dtype=self.dtype_policy,
            name="conv",
        )
        self.objectness = keras.layers.Conv2D(
            self.num_anchors,
            1,
            kernel_initializer=initializer,
            dtype=self.dtype_policy,
            name="objectness",
        )
        self.deltas = keras.layers.Conv2D(
            4 * self.num_anchors,
            1,
            kernel_initializer=initializer,
            dtype=self.dtype_policy,
            name="deltas",
        )

    def build(self, input_shape):
        channels = input_shape[0][-1]
        self.conv.build((None, None, None, channels))
        self.objectness.build((None, None, None, self.filters))
        self.deltas.build((None, None, None, self.filters))

    def call(self, features):
        objectness, deltas = [], []
        for feature_map in features:
            hidden = self.conv(feature_map)
            anchors = int(np.prod(feature_map.shape[1:3])) * self.num_anchors
            objectness.append(ops.reshape(self.objectness(hidden), (-1, anchors)))
            deltas.append(ops.reshape(self.deltas(hidden), (-1, anchors, 4)))
        return objectness, deltas

    def get_config(self):
        config = super().get_config()
        config.update({"num_anchors": self.num_anchors, "filters": self.filters})
        return config


@register
class BoxHead(keras.layers.Layer):
    """The Fast R-CNN box head: class logits and class-specific deltas of pooled RoIs.

    Fast R-CNN (Girshick 2015, arXiv:1504.08083, section 2) as Detectron2 builds it on FPN
    (Lin et al. 2017, arXiv:1612.03144, section 4.2): `kind="fc"` flattens the pooled map and
    runs two fully connected layers of `units` with ReLU ("2fc", the paper's head);
    `kind="conv"` runs four 3x3 convolutions of `filters` with ReLU and one fully connected
    layer ("4conv1fc"). Then `num_classes + 1` class logits (index 0 background) and 4 deltas
    for each of the `num_classes` classes. The output layers start as Detectron2's: normal
    weights with standard deviation 0.01 (logits) and 0.001 (deltas), biases 0.

    Args:
        num_classes: positive int. Object classes, background not counted.
        kind: `"fc"` or `"conv"`. Defaults to `"fc"`.
        units: positive int. Width of the fully connected layers. Defaults to 256.
        filters: positive int. Channels of the convolutions of `kind="conv"`. Defaults to 64.
        **kwargs: base layer arguments.

    Input shape:
        `(num_rois, pool_h, pool_w, channels)`, all but `num_rois` known.

    Output shape:
        A tuple `(class_logits (num_rois, num_classes + 1), deltas (num_rois, num_classes,
        4))`; `deltas[:, k]` are the `encode_boxes(..., weights=(10, 10, 5, 5))` deltas of
        class k + 1 (0-based class k).

    Raises:
        ValueError: for a bad argument, named with the value received.

    Example:
    >>> import numpy as np
    >>> logits, deltas = BoxHead(2, units=16)(np.zeros((5, 7, 7, 8), "float32"))
    >>> logits.shape, deltas.shape
    (TensorShape([5, 3]), TensorShape([5, 2, 4]))
    """

    def __init__(self, num_classes, kind="fc", units=256, filters=64, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = check_positive_int(num_classes, "num_classes")
        if kind not in BOX_HEADS:
            raise ValueError(f"`kind` must be one of {BOX_HEADS}. Received: kind={kind!r}")
        self.kind = kind
        self.units = check_positive_int(units, "units")
        self.filters = check_positive_int(filters, "filters")
        policy = self.dtype_policy
        self.convs = []
        if kind == "conv":
            self.convs = [
                keras.layers.Conv2D(
                    self.filters,
                    3,
                    padding="same",
                    activation="relu",
                    dtype=policy,
                    name=f"conv{index + 1}",
                )
                for index in range(4)
            ]
        self.dense = [
            keras.layers.Dense(self.units, activation="relu", dtype=policy, name=f"fc{index + 1}")
            for index in range(2 if kind == "fc" else 1)
        ]
        self.class_logits = keras.layers.Dense(
            self.num_classes + 1,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
            dtype=policy,
            name="class_logits",
        )
        self.box_deltas = keras.layers.Dense(
            4 * self.num_classes,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
            dtype=policy,
            name="box_deltas",
        )

    def build(self, input_shape):
        height, width, channels = input_shape[1:]
        for conv in self.convs:
            conv.build((None, height, width, channels))
            channels = self.filters
        features = height * width * channels
        for dense in self.dense:
            dense.build((None, features))
            features = self.units
        self.class_logits.build((None, self.units))
        self.box_deltas.build((None, self.units))

    def call(self, pooled):
        x = pooled
        for conv in self.convs:
            x = conv(x)
        x = ops.reshape(x, (-1, int(np.prod(x.shape[1:]))))
        for dense in self.dense:
            x = dense(x)
        deltas = ops.reshape(self.box_deltas(x), (-1, self.num_classes, 4))
        return self.class_logits(x), deltas

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "kind": self.kind,
                "units": self.units,
                "filters": self.filters,
            }
        )
        return config


@register
class RegionProposals(keras.layers.Layer):
    """`generate_proposals` with the anchors of `fpn_anchors(image_size, levels,
    anchor_sizes, aspect_ratios)`: the proposals of the region proposal network's outputs.

    See `kcnn.detection.generate_proposals` (per-level top-k, decoding, clipping, NMS within
    each level, the best over all levels; Faster R-CNN section 3.3 as Detectron2 runs it on
    FPN). No weights; not XLA-compilable (NMS has no XLA kernel).

    Args:
        image_size: int or `(height, width)`.
        levels: tuple of ints k, the levels P_k of the inputs.
        anchor_sizes: tuple of positive numbers, one per level.
        aspect_ratios: tuple of positive numbers.
        pre_nms_top_k: positive int, candidates per level and image.
        post_nms_top_k: positive int, proposals per image.
        nms_iou: float in [0, 1]. Defaults to `0.7`.
        **kwargs: base layer arguments.

    Input shape:
        `(objectness, deltas)`: the lists of `RPNHead`.

    Output shape:
        A tuple `(boxes (batch, post_nms_top_k, 4), valid (batch, post_nms_top_k))`, float32
        xyxy pixels and bool; rows past an image's proposals are padding (valid False).
    """

    def __init__(
        self,
        image_size,
        levels,
        anchor_sizes,
        aspect_ratios,
        pre_nms_top_k,
        post_nms_top_k,
        nms_iou=0.7,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.image_size = normalize_image_size(image_size)
        self.levels = tuple(levels)
        self.anchor_sizes = tuple(anchor_sizes)
        self.aspect_ratios = tuple(aspect_ratios)
        self.anchors = fpn_anchors(
            self.image_size, self.levels, self.anchor_sizes, self.aspect_ratios
        )
        self.pre_nms_top_k = check_positive_int(pre_nms_top_k, "pre_nms_top_k")
        self.post_nms_top_k = check_positive_int(post_nms_top_k, "post_nms_top_k")
        self.nms_iou = check_fraction(nms_iou, "nms_iou", low_open=False, high_open=False)
        self.supports_jit = False

    def call(self, objectness, deltas):
        boxes, _, valid = generate_proposals(
            list(objectness),
            list(deltas),
            self.anchors,
            self.image_size,
            self.pre_nms_top_k,
            self.post_nms_top_k,
            self.nms_iou,
        )
        return boxes, valid

    def compute_output_spec(self, objectness, deltas):
        batch = objectness[0].shape[0]
        return (
            keras.KerasTensor((batch, self.post_nms_top_k, 4), "float32"),
            keras.KerasTensor((batch, self.post_nms_top_k), "bool"),
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "image_size": self.image_size,
                "levels": self.levels,
                "anchor_sizes": self.anchor_sizes,
                "aspect_ratios": self.aspect_ratios,
                "pre_nms_top_k": self.pre_nms_top_k,
                "post_nms_top_k": self.post_nms_top_k,
                "nms_iou": self.nms_iou,
            }
        )
        return config


@register
class RoIBoxes(keras.layers.Layer):
    """Per-image boxes `(batch, R, 4)` as `RoIAlign`'s `boxes (batch * R, 4)` and
    `box_indices (batch * R,)` (image b's boxes are rows `b * R` to `b * R + R - 1`).

    Example:
    >>> import numpy as np
    >>> boxes, indices = RoIBoxes()(np.zeros((2, 3, 4), "float32"))
    >>> boxes.shape, np.asarray(indices).tolist()
    (TensorShape([6, 4]), [0, 0, 0, 1, 1, 1])
    """

    def call(self, boxes):
        count = boxes.shape[1]
        images = ops.arange(ops.shape(boxes)[0], dtype="int32")
        indices = ops.reshape(ops.repeat(ops.expand_dims(images, 1), count, axis=1), (-1,))
        return ops.reshape(boxes, (-1, 4)), indices

    def compute_output_spec(self, boxes):
        rows = None if boxes.shape[0] is None else boxes.shape[0] * boxes.shape[1]
        return keras.KerasTensor((rows, 4), boxes.dtype), keras.KerasTensor((rows,), "int32")
