"""The MAC and geometry rules of `analyze`, one per layer class, and
`register_layer_analyzer` to add a rule for another layer (see `kcnn.analysis.analyze`)."""

import math
from collections.abc import Callable

import keras
from keras import layers

# `keras.ops` operation classes are public only through this module.
from keras.src.ops import numpy as numpy_ops

# keras-hub exports no HGNetV2 layer; its affine block needs the rule below.
from keras_hub.src.models.hgnetv2.hgnetv2_layers import HGNetV2LearnableAffineBlock

from kcnn._validation import same_padding
from kcnn.analysis.geometry import LayerGeometry, per_axis

# Input pixels read per output pixel along one axis by each interpolation.
_INTERPOLATION_TAPS = {"nearest": 1, "bilinear": 2, "bicubic": 4, "lanczos3": 6, "lanczos5": 10}


_ANALYZERS: dict[type, Callable] = {}


def register_layer_analyzer(layer_class, analyzer=None):
    """Registers how `analyze` counts the MACs and geometry of a layer class.

    The rule is called as `analyzer(layer, input_shapes, output_shapes)` with the
    lists of the shapes (tuples, batch dimension first) of the tensors the layer
    call received and returned, and returns `(macs, geometry)`: an int of
    multiply-accumulates for one input example and a `LayerGeometry`. It also
    serves subclasses of `layer_class` that have no rule of their own, and
    replaces any earlier rule for the same class.

    Args:
        layer_class: type. The layer (or `keras.Operation`) class.
        analyzer: callable or None. The rule. When `None`, returns a decorator.

    Returns:
        `analyzer`, or a decorator that registers and returns the function it
        decorates.

    Raises:
        TypeError: if `layer_class` is not a class or `analyzer` is not callable.

    Example:

    ```python
    @register_layer_analyzer(MyConv2D)
    def _my_conv2d(layer, input_shapes, output_shapes):
        height, width, filters = output_shapes[0][1:]
        macs = height * width * 9 * input_shapes[0][-1] * filters
        return macs, LayerGeometry.sliding(3, layer.strides)
    ```
    """
    if not isinstance(layer_class, type):
        raise TypeError(f"`layer_class` must be a class. Received: layer_class={layer_class!r}")

    def decorator(function):
        if not callable(function):
            raise TypeError(f"`analyzer` must be callable. Received: analyzer={function!r}")
        _ANALYZERS[layer_class] = function
        return function

    if analyzer is None:
        return decorator
    return decorator(analyzer)


def find_analyzer(operation):
    for cls in type(operation).__mro__:
        if cls in _ANALYZERS:
            return _ANALYZERS[cls]
    return None


def channels_and_spatial(shape, data_format):
    if data_format == "channels_first":
        return shape[1], tuple(shape[2:])
    return shape[-1], tuple(shape[1:-1])


def spatial_dims(shape, data_format):
    if len(shape) < 3:
        return ()
    return channels_and_spatial(shape, data_format)[1]


def padding_before(layer, input_shapes, kernel_size, strides=1, dilation_rate=1):
    """Pixels a sliding-window layer pads before its input on each spatial axis.

    `layer.padding` decides: `"valid"` pads nothing, `"causal"` pads `(k - 1) * d`, and
    `"same"` pads TensorFlow's `floor(total / 2)` (`kcnn._validation.same_padding`).

    Returns:
        A tuple with one int per spatial axis, or None when the padding is another kind or
        a "same" padding meets an input of unknown size.
    """
    padding = str(getattr(layer, "padding", "valid")).lower()
    data_format = getattr(layer, "data_format", None) or keras.config.image_data_format()
    _, sizes = channels_and_spatial(input_shapes[0], data_format)
    num_axes = len(sizes)
    pads = []
    for size, kernel, stride, dilation in zip(
        sizes,
        per_axis(kernel_size, num_axes),
        per_axis(strides, num_axes),
        per_axis(dilation_rate, num_axes),
        strict=True,
    ):
        if padding == "valid":
            pads.append(0)
        elif padding == "causal":
            pads.append((kernel - 1) * dilation)
        elif padding == "same" and size is not None:
            pads.append(same_padding(size, kernel, stride, dilation)[1] // 2)
        else:
            return None
    return tuple(pads)


def sliding_geometry(layer, input_shapes, output_shapes):
    """`LayerGeometry.sliding` of a convolution or pooling layer, read from its attributes:
    `kernel_size` (or `pool_size`), `strides`, `dilation_rate` (1 when it has none) and
    `padding` (see `padding_before`)."""
    kernel_size = getattr(layer, "kernel_size", None) or layer.pool_size
    strides, dilation_rate = layer.strides, getattr(layer, "dilation_rate", 1)
    pads = padding_before(layer, input_shapes, kernel_size, strides, dilation_rate)
    return LayerGeometry.sliding(kernel_size, strides, dilation_rate, pads)


def _positions(dims, layer, shape):
    if any(dim is None for dim in dims):
        raise ValueError(
            f"Cannot count the MACs of layer '{layer.name}': shape {tuple(shape)} has unknown "
            "spatial dimensions. Pass `input_shape` to `analyze`, e.g. "
            "input_shape=(224, 224, 3)."
        )
    return math.prod(dims)


def _conv_analyzer(layer, input_shapes, output_shapes):
    channels_in, _ = channels_and_spatial(input_shapes[0], layer.data_format)
    channels_out, out_spatial = channels_and_spatial(output_shapes[0], layer.data_format)
    positions = _positions(out_spatial, layer, output_shapes[0])
    macs = positions * math.prod(layer.kernel_size) * (channels_in // layer.groups) * channels_out
    geometry = sliding_geometry(layer, input_shapes, output_shapes)
    return macs, geometry


def _depthwise_conv_analyzer(layer, input_shapes, output_shapes):
    channels_in, _ = channels_and_spatial(input_shapes[0], layer.data_format)
    _, out_spatial = channels_and_spatial(output_shapes[0], layer.data_format)
    positions = _positions(out_spatial, layer, output_shapes[0])
    macs = positions * math.prod(layer.kernel_size) * channels_in * layer.depth_multiplier
    geometry = sliding_geometry(layer, input_shapes, output_shapes)
    return macs, geometry


def _separable_conv_analyzer(layer, input_shapes, output_shapes):
    channels_in, _ = channels_and_spatial(input_shapes[0], layer.data_format)
    channels_out, out_spatial = channels_and_spatial(output_shapes[0], layer.data_format)
    positions = _positions(out_spatial, layer, output_shapes[0])
    depthwise_channels = channels_in * layer.depth_multiplier
    depthwise = positions * math.prod(layer.kernel_size) * depthwise_channels
    pointwise = positions * depthwise_channels * channels_out
    return (
        depthwise + pointwise,
        sliding_geometry(layer, input_shapes, output_shapes),
    )


def _conv_transpose_analyzer(layer, input_shapes, output_shapes):
    channels_in, in_spatial = channels_and_spatial(input_shapes[0], layer.data_format)
    channels_out, _ = channels_and_spatial(output_shapes[0], layer.data_format)
    positions = _positions(in_spatial, layer, input_shapes[0])
    macs = positions * math.prod(layer.kernel_size) * channels_in * channels_out
    return macs, LayerGeometry.transpose(layer.kernel_size, layer.strides, layer.dilation_rate)


def _dense_analyzer(layer, input_shapes, output_shapes):
    shape = input_shapes[0]
    positions = _positions(shape[1:-1], layer, shape)
    return positions * shape[-1] * layer.units, LayerGeometry.identity()


def _pooling_analyzer(layer, input_shapes, output_shapes):
    return 0, sliding_geometry(layer, input_shapes, output_shapes)


def _upsampling_analyzer(layer, input_shapes, output_shapes):
    factors = layer.size if isinstance(layer.size, tuple | list) else (layer.size,)
    taps = _INTERPOLATION_TAPS.get(getattr(layer, "interpolation", "nearest"), 2)
    kernel_size = tuple((taps - 1) * factor + 1 for factor in factors)
    return 0, LayerGeometry.transpose(kernel_size, tuple(factors))


def _whole_input_analyzer(layer, input_shapes, output_shapes):
    return 0, LayerGeometry.whole_input()


def _reshape_analyzer(layer, input_shapes, output_shapes):
    data_format = keras.config.image_data_format()
    if spatial_dims(input_shapes[0], data_format) == spatial_dims(output_shapes[0], data_format):
        return 0, LayerGeometry.identity()
    return 0, LayerGeometry.whole_input()


def _free_analyzer(layer, input_shapes, output_shapes):
    return 0, LayerGeometry.identity()


def _before(pairs):
    """The "before" amount of each axis from Keras's `((before, after), ...)`, or from a
    1-D layer's `(before, after)`."""
    pairs = tuple(pairs)
    if all(isinstance(pair, int) for pair in pairs):
        return (pairs[0],)
    return tuple(pair[0] for pair in pairs)


def _padding_analyzer(layer, input_shapes, output_shapes):
    return 0, LayerGeometry.identity(_before(layer.padding))


def _cropping_analyzer(layer, input_shapes, output_shapes):
    return 0, LayerGeometry.identity(tuple(-crop for crop in _before(layer.cropping)))


def _pad_op_analyzer(operation, input_shapes, output_shapes):
    pad_width = tuple(tuple(pair) for pair in operation.pad_width)
    if len(pad_width) != len(input_shapes[0]):
        return 0, LayerGeometry.identity(None)
    _, spatial = channels_and_spatial(pad_width, keras.config.image_data_format())
    return 0, LayerGeometry.identity(tuple(pair[0] for pair in spatial))


for _cls in (layers.Conv1D, layers.Conv2D, layers.Conv3D):
    register_layer_analyzer(_cls, _conv_analyzer)
for _cls in (layers.DepthwiseConv1D, layers.DepthwiseConv2D):
    register_layer_analyzer(_cls, _depthwise_conv_analyzer)
for _cls in (layers.SeparableConv1D, layers.SeparableConv2D):
    register_layer_analyzer(_cls, _separable_conv_analyzer)
for _cls in (layers.Conv1DTranspose, layers.Conv2DTranspose, layers.Conv3DTranspose):
    register_layer_analyzer(_cls, _conv_transpose_analyzer)
for _cls in (
    layers.MaxPooling1D,
    layers.MaxPooling2D,
    layers.MaxPooling3D,
    layers.AveragePooling1D,
    layers.AveragePooling2D,
    layers.AveragePooling3D,
):
    register_layer_analyzer(_cls, _pooling_analyzer)
for _cls in (layers.UpSampling1D, layers.UpSampling2D, layers.UpSampling3D):
    register_layer_analyzer(_cls, _upsampling_analyzer)
for _cls in (
    layers.GlobalAveragePooling1D,
    layers.GlobalAveragePooling2D,
    layers.GlobalAveragePooling3D,
    layers.GlobalMaxPooling1D,
    layers.GlobalMaxPooling2D,
    layers.GlobalMaxPooling3D,
    layers.Flatten,
):
    register_layer_analyzer(_cls, _whole_input_analyzer)
register_layer_analyzer(layers.Dense, _dense_analyzer)
register_layer_analyzer(layers.Reshape, _reshape_analyzer)
# Padding and cropping move the window centres (the start) but change neither the
# receptive field size nor the jump.
for _cls in (layers.ZeroPadding1D, layers.ZeroPadding2D, layers.ZeroPadding3D):
    register_layer_analyzer(_cls, _padding_analyzer)
for _cls in (layers.Cropping1D, layers.Cropping2D, layers.Cropping3D):
    register_layer_analyzer(_cls, _cropping_analyzer)
register_layer_analyzer(numpy_ops.Pad, _pad_op_analyzer)
# Normalization layers and PReLU own weights but only scale and shift, which the MAC
# convention leaves out.
for _cls in (
    layers.BatchNormalization,
    layers.LayerNormalization,
    layers.GroupNormalization,
    layers.Normalization,
    layers.PReLU,
    layers.Embedding,
):
    register_layer_analyzer(_cls, _free_analyzer)

# keras-hub's HGNetV2 scales and shifts each map by two learned scalars after its
# activations (PP-HGNetV2's learnable affine block): no MACs under the convention above.
register_layer_analyzer(HGNetV2LearnableAffineBlock, _free_analyzer)
