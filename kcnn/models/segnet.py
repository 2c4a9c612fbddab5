"""SegNet (Badrinarayanan et al. 2015, arXiv:1511.00561)."""

import keras

from kcnn._serialization import register
from kcnn.layers import MaxPoolingWithArgmax2D, MaxUnpooling2D
from kcnn.models._blocks import conv_block, softmax_head
from kcnn.models._task_model import TaskModel
from kcnn.models.registry import register_model


@register
@register_model("segnet", "segmentation")
class SegNet(TaskModel):
    """SegNet: a VGG-style encoder whose max-pooling indices drive the decoder's unpooling.

    Each encoder stage is `convs` x (3x3 conv + BN + ReLU) followed by 2x2 max-pooling that
    remembers where every maximum came from (`MaxPoolingWithArgmax2D`). The decoder mirrors it:
    `MaxUnpooling2D` puts values back at those positions (restoring the stage's exact size, so
    odd sizes work), then 3x3 convs densify the sparse map. The defaults are VGG-16's 13 convs.
    Everything converts to TFLite with builtin ops only.

    Args:
        input_shape: tuple `(height, width, channels)`; height and width may be None.
        num_classes: int >= 2. Classes including background.
        filters: sequence of ints, filters per encoder stage. Defaults to VGG-16's.
        convs_per_stage: sequence of ints (same length), convs per stage. Defaults to
            `(2, 2, 3, 3, 3)`.
        name: str. Defaults to `"segnet"`.

    Output shape:
        Per-pixel class probabilities `(B, H, W, num_classes)`, float32.

    The constructor arguments are the model's config and attributes.

    Raises:
        ValueError: if `filters` and `convs_per_stage` differ in length or hold non-positive
            values.

    Example:
    >>> SegNet((32, 32, 3), num_classes=4, filters=(8, 16), convs_per_stage=(1, 1)).output_shape
    (None, 32, 32, 4)
    """

    CONFIG_KEYS = (
        "input_shape",
        "num_classes",
        "filters",
        "convs_per_stage",
    )

    def __init__(
        self,
        input_shape,
        num_classes,
        filters=(64, 128, 256, 512, 512),
        convs_per_stage=(2, 2, 3, 3, 3),
        name="segnet",
        **kwargs,
    ):
        # === Layers and functional graph ===
        inputs, outputs = _segnet_graph(input_shape, num_classes, filters, convs_per_stage)
        super().__init__(inputs, outputs, name=name, **kwargs)
        # === Config ===
        self.image_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.filters = tuple(filters)
        self.convs_per_stage = tuple(convs_per_stage)


def _segnet_graph(input_shape, num_classes, filters, convs_per_stage):
    filters, convs_per_stage = tuple(filters), tuple(convs_per_stage)
    if len(filters) != len(convs_per_stage) or not filters:
        raise ValueError(
            "`filters` and `convs_per_stage` must be non-empty and of the same length. "
            f"Received: filters={filters}, convs_per_stage={convs_per_stage}"
        )
    if not all(isinstance(v, int) and v > 0 for v in filters + convs_per_stage):
        raise ValueError(
            "`filters` and `convs_per_stage` must hold positive ints. "
            f"Received: filters={filters}, convs_per_stage={convs_per_stage}"
        )
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    switches = []
    for stage, (stage_filters, convs) in enumerate(zip(filters, convs_per_stage, strict=True)):
        x = conv_block(x, stage_filters, convs, name=f"encoder{stage}")
        pre_pool = x
        x, indices = MaxPoolingWithArgmax2D(name=f"encoder{stage}_pool")(x)
        switches.append((pre_pool, indices))
    for stage in reversed(range(len(filters))):
        pre_pool, indices = switches[stage]
        x = MaxUnpooling2D(name=f"decoder{stage}_unpool")([x, indices, pre_pool])
        out_filters = filters[stage - 1] if stage > 0 else filters[0]
        x = conv_block(x, out_filters, convs_per_stage[stage], name=f"decoder{stage}")
    outputs = softmax_head(x, num_classes)
    return inputs, outputs
