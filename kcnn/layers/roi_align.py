"""`RoIAlign`: fixed-size features of boxes (He et al. 2017), on one map or on an FPN pyramid."""

from keras import layers, ops

from kcnn._serialization import register
from kcnn._validation import is_int, normalize_tuple
from kcnn.ops.roi_align import (
    check_levels,
    check_positive_number,
    check_sampling_ratio,
    multilevel_roi_align,
    roi_align,
)


@register
class RoIAlign(layers.Layer):
    """Pools a fixed-size `(out_h, out_w)` feature map for every box by bilinear sampling.

    Implements RoIAlign of He, Gkioxari, Dollar & Girshick, "Mask R-CNN", ICCV 2017
    (arXiv:1703.06870): each box is split into `out_h x out_w` bins without rounding, each
    bin averages `sampling_ratio**2` bilinearly interpolated samples. Boxes are
    `(x1, y1, x2, y2)` in input-image pixels with `box_indices` naming their image, and the
    half-pixel offset (`aligned=True`) and the boundary rules are those of
    `torchvision.ops.roi_align`, whose outputs it matches with the channels last. See
    `kcnn.ops.roi_align` for the formula, the boundary rules and the gradients (exact for
    the features; the piecewise derivative of the sampling formula for the boxes).

    With `levels`, the layer reads a feature pyramid (Lin et al., "Feature Pyramid Networks
    for Object Detection", CVPR 2017, arXiv:1612.03144): a box of size w x h (image pixels)
    is pooled from level `k = floor(canonical_level + log2(sqrt(w * h) / canonical_size))`,
    clamped to `levels`, whose stride is 2**k (eq. 1). Every level goes into one table and
    each box is gathered from its own level only, so the cost is that of one single-level
    RoIAlign on all boxes (computing every level for every box and selecting would cost
    `len(levels)` times as much); the price is the table, four copies of every level.

    The layer has no weights, converts to TFLite with builtin ops only (no
    `tf.image.crop_and_resize`, which is a Flex op) and compiles under XLA. The number of
    boxes may differ from the batch of images, and may be unknown until run time. Under
    mixed precision the features are pooled in float16 while the sample positions stay in
    float32: the boxes are not cast to float16, which would move them by up to half a pixel
    at 1024.

    Args:
        output_size: int or tuple of 2 ints `(out_h, out_w)`. Bins per box, e.g. 7 for the
            box head, 14 for the mask head of Mask R-CNN.
        spatial_scale: positive float. Single level only: the feature map's size over the
            input image's (1 / stride). Defaults to `1.0`.
        sampling_ratio: positive int. Sample points per bin along each axis. torchvision's
            adaptive `sampling_ratio <= 0` has no static shape and is refused. Defaults to
            `2`.
        aligned: bool. Half-pixel offset of Detectron2 / torchvision `aligned=True`; `False`
            is the original Mask R-CNN. Defaults to `True`.
        levels: None, or tuple of consecutive increasing ints such as `(2, 3, 4, 5)`: the
            pyramid levels P2..P5 (stride 2**k) read by the layer. Defaults to None (one map).
        canonical_size: positive float. FPN's 224 (eq. 1). Defaults to `224`.
        canonical_level: int. FPN's k0 (eq. 1). Defaults to `4`.
        **kwargs: base layer arguments such as `name` and `dtype`.

    Input shape:
        A list `[features, boxes, box_indices]`: `boxes` float `(num_boxes, 4)`,
        `box_indices` int `(num_boxes,)` in `[0, batch)`. `features` is
        `(batch, height, width, channels)`; with `levels`, a dict with a key `"P{k}"` for
        every level k (a backbone's `pyramid_outputs`; other keys are ignored) or a list of
        maps in the order of `levels`, all with the same batch and channels.

    Output shape:
        `(num_boxes, out_h, out_w, channels)`, in the order of the boxes.

    Raises:
        ValueError: for a bad argument (named, with the value received), `spatial_scale`
            given together with `levels`, a call that is not on
            `[features, boxes, box_indices]`, a pyramid without one of the levels, or
            tensors of the wrong rank (see `kcnn.ops.roi_align`).

    Example:
    >>> import numpy as np
    >>> features = np.ones((2, 16, 16, 8), "float32")  # stride 4 on a 64 x 64 image
    >>> boxes = np.array([[4.0, 4.0, 36.0, 20.0], [0.0, 0.0, 64.0, 64.0]], "float32")
    >>> pooled = RoIAlign(7, spatial_scale=0.25)([features, boxes, np.array([0, 1])])
    >>> pooled.shape
    TensorShape([2, 7, 7, 8])
    >>> pyramid = {"P2": features, "P3": np.ones((2, 8, 8, 8), "float32")}
    >>> RoIAlign((7, 5), levels=(2, 3))([pyramid, boxes, np.array([0, 1])]).shape
    TensorShape([2, 7, 5, 8])
    """

    def __init__(
        self,
        output_size,
        spatial_scale=1.0,
        sampling_ratio=2,
        aligned=True,
        levels=None,
        canonical_size=224,
        canonical_level=4,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.output_size = normalize_tuple(output_size, 2, "output_size")
        self.spatial_scale = check_positive_number(spatial_scale, "spatial_scale")
        self.sampling_ratio = check_sampling_ratio(sampling_ratio)
        if not isinstance(aligned, bool):
            raise ValueError(f"`aligned` must be a bool. Received: aligned={aligned!r}")
        self.aligned = aligned
        self.levels = None if levels is None else check_levels(levels)
        if self.levels is not None and self.spatial_scale != 1.0:
            raise ValueError(
                "`spatial_scale` is for a single feature map; with `levels`, level k has "
                f"scale 1 / 2**k. Received: spatial_scale={spatial_scale!r}, levels={levels!r}"
            )
        self.canonical_size = check_positive_number(canonical_size, "canonical_size")
        if not is_int(canonical_level):
            raise ValueError(
                f"`canonical_level` must be an int. Received: canonical_level={canonical_level!r}"
            )
        self.canonical_level = int(canonical_level)
        # Keep float32 boxes under mixed precision: only the features are cast, in `call`.
        self.autocast = False

    def call(self, inputs):
        feature_maps, boxes, box_indices = self._split(inputs)
        feature_maps = [ops.cast(f, self.compute_dtype) for f in feature_maps]
        if self.levels is None:
            return roi_align(
                feature_maps[0],
                boxes,
                box_indices,
                self.output_size,
                spatial_scale=self.spatial_scale,
                sampling_ratio=self.sampling_ratio,
                aligned=self.aligned,
            )
        return multilevel_roi_align(
            feature_maps,
            boxes,
            box_indices,
            self.output_size,
            self.levels,
            sampling_ratio=self.sampling_ratio,
            aligned=self.aligned,
            canonical_size=self.canonical_size,
            canonical_level=self.canonical_level,
        )

    def compute_output_shape(self, input_shape):
        feature_shapes, boxes_shape, _ = self._split(input_shape, shapes=True)
        return (boxes_shape[0], *self.output_size, feature_shapes[0][-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "output_size": self.output_size,
                "spatial_scale": self.spatial_scale,
                "sampling_ratio": self.sampling_ratio,
                "aligned": self.aligned,
                "levels": self.levels,
                "canonical_size": self.canonical_size,
                "canonical_level": self.canonical_level,
            }
        )
        return config

    def _split(self, inputs, shapes=False):
        """`[features, boxes, box_indices]` -> (list of feature maps in level order, ...)."""
        if not isinstance(inputs, list | tuple) or len(inputs) != 3 or _is_shape(inputs):
            raise ValueError(
                "`RoIAlign` must be called on a list [features, boxes, box_indices]. "
                f"Received: {_describe(inputs)}"
            )
        features, boxes, box_indices = inputs
        if self.levels is None:
            if isinstance(features, dict) or (shapes and not _is_shape(features)):
                raise ValueError(
                    "`features` must be one tensor (batch, height, width, channels) when "
                    f"`levels` is None. Received: features={_describe(features)}"
                )
            return [features], boxes, box_indices
        names = [f"P{k}" for k in self.levels]
        if isinstance(features, dict):
            missing = [name for name in names if name not in features]
            if missing:
                raise ValueError(
                    f"`features` must have a map for every level of levels={self.levels}: "
                    f"keys {names}. Missing {missing}. Received keys: {sorted(features)}"
                )
            return [features[name] for name in names], boxes, box_indices
        if not isinstance(features, list | tuple) or (shapes and _is_shape(features)):
            features = [features]
        if len(features) != len(self.levels):
            raise ValueError(
                f"`features` must be a dict keyed {names} or a list of {len(self.levels)} "
                f"maps in the order of levels={self.levels}. Received: {len(features)} map(s)"
            )
        return list(features), boxes, box_indices


def _is_shape(value):
    return isinstance(value, list | tuple) and all(d is None or is_int(d) for d in value)


def _describe(value):
    if isinstance(value, dict):
        return f"a dict with keys {sorted(value)}"
    if isinstance(value, list | tuple) and not _is_shape(value):
        return f"a {type(value).__name__} of {len(value)}"
    return repr(getattr(value, "shape", value))
