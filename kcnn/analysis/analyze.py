"""Per-layer parameters, MACs, receptive field and jump of a Keras model.

`analyze(model)` walks the layer graph of a functional or Sequential Keras model,
descending into nested functional and Sequential models (for example a keras-hub
backbone inside a classifier), and returns a `ModelAnalysis` with one
`LayerRecord` per layer call.

Conventions:

- **Parameters** are the sizes of the layer's weights (trainable and not, as in
  `model.count_params()`). A weight shared by several layers or calls is counted
  at its first use only, so the total always equals `model.count_params()`.
  Weights a model owns that no layer of its graph uses get one extra record,
  named after the model.
- **MACs** are multiply-accumulates for one input example (batch size 1),
  multiplications of the weights only: biases, batch normalization, activations,
  pooling, interpolation and element-wise merges count 0. Convolutions:
  `Conv` = `out_positions * prod(kernel_size) * (C_in / groups) * C_out`;
  `DepthwiseConv` = `out_positions * prod(kernel_size) * C_in * depth_multiplier`;
  `SeparableConv` = the depthwise part `+ out_positions * C_in * depth_multiplier * C_out`;
  `ConvTranspose` = `in_positions * prod(kernel_size) * C_in * C_out` (every input
  pixel scatters a whole kernel); `Dense` = `positions * in_features * units`.
- **Receptive field and jump** (Araujo, Norris & Sim, "Computing Receptive Fields
  of Convolutional Neural Networks", Distill 2019; Dumoulin & Visin 2016,
  arXiv:1603.07285) are tracked per spatial axis of the model input, in model
  input pixels, starting from `r = 1`, `j = 1` at the input:

  - sliding windows (all convolutions, max and average pooling):
    `r_out = r_in + (k - 1) * d * j_in`, `j_out = j_in * s`;
  - transposed convolutions: `j_out = j_in / s` (kept as a float when it is not
    whole) and `r_out = r_in + (k - 1) * d * j_out`; `UpSampling` uses the same
    rule with `k = 1` for nearest-neighbour interpolation (`r_out = r_in`) and
    `k = (taps - 1) * s + 1` otherwise, so that `r_out = r_in + (taps - 1) * j_in`
    (`taps` = 2 for bilinear, 4 for bicubic);
  - layers that keep the geometry (activations, normalization, dropout, padding,
    cropping, `Dense` applied per position, merges): `r` is the largest over the
    inputs and `j` the largest over the inputs that still have one;
  - global pooling, `Flatten` and a `Reshape` that changes the spatial
    dimensions make every output depend on the whole input: `r` is reported as
    the model input size (`None` when that size is unknown) and `j` as `None`.
    Later layers keep this.

  `LayerRecord.receptive_field` and `LayerRecord.jump` are a single number when
  all axes agree (the usual square case) and a tuple `(r_h, r_w)` otherwise.
  Receptive fields are not clipped to the input size: a field larger than the
  input is what the formula gives and what Araujo et al. report.

Extending to new layers: `register_layer_analyzer(layer_class)` registers a rule
`rule(layer, input_shapes, output_shapes) -> (macs, LayerGeometry)`, looked up
along the layer's class hierarchy (the rule of `Conv2D` also serves its
subclasses unless they register their own). A rule also takes precedence over
descending into a nested functional model. A layer with no rule is analysed as
follows, and when the result cannot be trusted its record name is added to
`ModelAnalysis.unknown_layers` instead of passing silently:

- no weights, no sub-layers, spatial dimensions unchanged: 0 MACs, geometry
  kept (covers activations, dropout, merges, `x + y` and other element-wise ops);
- weights or sub-layers (a subclassed block, a wrapper): parameters counted,
  0 MACs, geometry kept if the spatial dimensions are — reported as unknown;
- spatial dimensions changed in an unregistered way: receptive field and jump
  become `None` from there on — reported as unknown;
- `keras.ops` products of tensors (`matmul`, `einsum`, `ops.conv`...): 0 MACs —
  reported as unknown.

Subclassed models have no layer graph to walk: `analyze` raises `TypeError` for
them (wrapping one in a functional model would only show it as one opaque layer).
"""

import dataclasses
import math
import numbers
from collections.abc import Callable
from typing import NamedTuple

import keras
from keras import layers

# Keras 3 exposes the layer graph of a functional model (nodes, depths and the
# operation classes of `keras.ops`) only through these modules; there is no public
# equivalent.
from keras.src.models.functional import Functional
from keras.src.ops import nn as nn_ops
from keras.src.ops import numpy as numpy_ops

_KINDS = ("identity", "sliding", "transpose", "whole_input", "unknown")

# `keras.ops` operations that multiply by tensors received as inputs; they have no
# rule because the operand roles are not known from the shapes alone.
_OPS_WITH_UNCOUNTED_MACS = (
    numpy_ops.Matmul,
    numpy_ops.Einsum,
    numpy_ops.Tensordot,
    numpy_ops.Dot,
    nn_ops.Conv,
    nn_ops.DepthwiseConv,
    nn_ops.SeparableConv,
    nn_ops.ConvTranspose,
)

# Input pixels read per output pixel along one axis by each interpolation.
_INTERPOLATION_TAPS = {"nearest": 1, "bilinear": 2, "bicubic": 4, "lanczos3": 6, "lanczos5": 10}


@dataclasses.dataclass(frozen=True)
class LayerGeometry:
    """How a layer maps the receptive field and jump of its inputs to its outputs.

    Use the constructors rather than the fields: `LayerGeometry.identity()`,
    `LayerGeometry.sliding(kernel_size, strides, dilation_rate)`,
    `LayerGeometry.transpose(kernel_size, strides, dilation_rate)`,
    `LayerGeometry.whole_input()` and `LayerGeometry.unknown()`. The module
    docstring gives the formula of each kind.

    Args:
        kind: str. One of `"identity"`, `"sliding"`, `"transpose"`,
            `"whole_input"` or `"unknown"`. Defaults to `"identity"`.
        kernel_size: int or tuple of ints, one per spatial axis. Defaults to `1`.
        strides: int or tuple of ints. Defaults to `1`.
        dilation_rate: int or tuple of ints. Defaults to `1`.

    Raises:
        ValueError: if `kind` is not one of the kinds above.
    """

    kind: str = "identity"
    kernel_size: int | tuple[int, ...] = 1
    strides: int | tuple[int, ...] = 1
    dilation_rate: int | tuple[int, ...] = 1

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ValueError(f"`kind` must be one of {_KINDS}. Received: kind={self.kind!r}")

    @classmethod
    def identity(cls):
        """Receptive field and jump pass through (largest over the inputs)."""
        return cls("identity")

    @classmethod
    def sliding(cls, kernel_size, strides=1, dilation_rate=1):
        """A window slid over the input: convolution or pooling."""
        return cls("sliding", kernel_size, strides, dilation_rate)

    @classmethod
    def transpose(cls, kernel_size, strides=1, dilation_rate=1):
        """A transposed convolution or upsampling by `strides`."""
        return cls("transpose", kernel_size, strides, dilation_rate)

    @classmethod
    def whole_input(cls):
        """Every output depends on the whole input (global pooling, flatten)."""
        return cls("whole_input")

    @classmethod
    def unknown(cls):
        """The geometry cannot be derived; later receptive fields become `None`."""
        return cls("unknown")


@dataclasses.dataclass
class LayerRecord:
    """What `analyze` found about one call of one layer.

    Args:
        name: str. The layer name, prefixed `"outer/inner"` for layers of nested
            models; a second call of a shared layer is suffixed `"@1"`, and so on.
        class_name: str. The layer class name, e.g. `"Conv2D"`.
        output_shape: tuple. The output shape with the batch dimension `None`; a
            tuple of such shapes for a layer with several outputs.
        params: int. Weights first used by this call.
        macs: int. Multiply-accumulates for one input example.
        receptive_field: number, tuple or None. Receptive field in model input
            pixels: one number when all spatial axes agree, else `(r_h, r_w)`.
        jump: number, tuple or None. Distance in model input pixels between two
            adjacent output positions, with the same convention.
    """

    name: str
    class_name: str
    output_shape: tuple
    params: int
    macs: int
    receptive_field: float | tuple | None
    jump: float | tuple | None


@dataclasses.dataclass
class ModelAnalysis:
    """Per-layer records and totals returned by `analyze`.

    Args:
        layers: list of `LayerRecord`, in execution order.
        total_params: int. Sum of the records' parameters; equals
            `model.count_params()`.
        total_macs: int. Sum of the records' MACs for one input example.
        unknown_layers: list of str. Names of the records whose MACs or geometry
            `analyze` could not derive (see the module docstring).
    """

    layers: list[LayerRecord]
    total_params: int
    total_macs: int
    unknown_layers: list[str] = dataclasses.field(default_factory=list)

    def to_table(self):
        """Returns an aligned text table with one row per record and a totals row."""
        header = ("Layer", "Type", "Output shape", "Params", "MACs", "RF", "Jump")
        right_aligned = (False, False, False, True, True, True, True)
        rows = [
            (
                record.name,
                record.class_name,
                _format_shape(record.output_shape),
                f"{record.params:,}",
                f"{record.macs:,}",
                _format_number(record.receptive_field),
                _format_number(record.jump),
            )
            for record in self.layers
        ]
        totals = ("Total", "", "", f"{self.total_params:,}", f"{self.total_macs:,}", "", "")
        widths = [max(len(row[i]) for row in [header, *rows, totals]) for i in range(len(header))]

        def line(cells):
            padded = [
                cell.rjust(width) if right else cell.ljust(width)
                for cell, width, right in zip(cells, widths, right_aligned, strict=True)
            ]
            return "  ".join(padded).rstrip()

        rule_width = sum(widths) + 2 * (len(widths) - 1)
        lines = [line(header), "=" * rule_width, *(line(row) for row in rows)]
        lines += ["=" * rule_width, line(totals)]
        if self.unknown_layers:
            lines.append(
                "Not fully analysed (MACs counted as 0 or geometry unknown): "
                + ", ".join(self.unknown_layers)
            )
        return "\n".join(lines)

    def to_dict(self):
        """Returns the analysis as JSON-serialisable dicts, lists, numbers and strings."""
        return {
            "layers": [
                {field: _to_json(value) for field, value in dataclasses.asdict(record).items()}
                for record in self.layers
            ],
            "total_params": self.total_params,
            "total_macs": self.total_macs,
            "unknown_layers": list(self.unknown_layers),
        }

    def __str__(self):
        return self.to_table()


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


def _find_analyzer(operation):
    for cls in type(operation).__mro__:
        if cls in _ANALYZERS:
            return _ANALYZERS[cls]
    return None


def _channels_and_spatial(shape, data_format):
    if data_format == "channels_first":
        return shape[1], tuple(shape[2:])
    return shape[-1], tuple(shape[1:-1])


def _spatial(shape, data_format):
    if len(shape) < 3:
        return ()
    return _channels_and_spatial(shape, data_format)[1]


def _positions(dims, layer, shape):
    if any(dim is None for dim in dims):
        raise ValueError(
            f"Cannot count the MACs of layer '{layer.name}': shape {tuple(shape)} has unknown "
            "spatial dimensions. Pass `input_shape` to `analyze`, e.g. "
            "input_shape=(224, 224, 3)."
        )
    return math.prod(dims)


def _conv_analyzer(layer, input_shapes, output_shapes):
    channels_in, _ = _channels_and_spatial(input_shapes[0], layer.data_format)
    channels_out, out_spatial = _channels_and_spatial(output_shapes[0], layer.data_format)
    positions = _positions(out_spatial, layer, output_shapes[0])
    macs = positions * math.prod(layer.kernel_size) * (channels_in // layer.groups) * channels_out
    return macs, LayerGeometry.sliding(layer.kernel_size, layer.strides, layer.dilation_rate)


def _depthwise_conv_analyzer(layer, input_shapes, output_shapes):
    channels_in, _ = _channels_and_spatial(input_shapes[0], layer.data_format)
    _, out_spatial = _channels_and_spatial(output_shapes[0], layer.data_format)
    positions = _positions(out_spatial, layer, output_shapes[0])
    macs = positions * math.prod(layer.kernel_size) * channels_in * layer.depth_multiplier
    return macs, LayerGeometry.sliding(layer.kernel_size, layer.strides, layer.dilation_rate)


def _separable_conv_analyzer(layer, input_shapes, output_shapes):
    channels_in, _ = _channels_and_spatial(input_shapes[0], layer.data_format)
    channels_out, out_spatial = _channels_and_spatial(output_shapes[0], layer.data_format)
    positions = _positions(out_spatial, layer, output_shapes[0])
    depthwise_channels = channels_in * layer.depth_multiplier
    depthwise = positions * math.prod(layer.kernel_size) * depthwise_channels
    pointwise = positions * depthwise_channels * channels_out
    return (
        depthwise + pointwise,
        LayerGeometry.sliding(layer.kernel_size, layer.strides, layer.dilation_rate),
    )


def _conv_transpose_analyzer(layer, input_shapes, output_shapes):
    channels_in, in_spatial = _channels_and_spatial(input_shapes[0], layer.data_format)
    channels_out, _ = _channels_and_spatial(output_shapes[0], layer.data_format)
    positions = _positions(in_spatial, layer, input_shapes[0])
    macs = positions * math.prod(layer.kernel_size) * channels_in * channels_out
    return macs, LayerGeometry.transpose(layer.kernel_size, layer.strides, layer.dilation_rate)


def _dense_analyzer(layer, input_shapes, output_shapes):
    shape = input_shapes[0]
    positions = _positions(shape[1:-1], layer, shape)
    return positions * shape[-1] * layer.units, LayerGeometry.identity()


def _pooling_analyzer(layer, input_shapes, output_shapes):
    return 0, LayerGeometry.sliding(layer.pool_size, layer.strides)


def _upsampling_analyzer(layer, input_shapes, output_shapes):
    factors = layer.size if isinstance(layer.size, tuple | list) else (layer.size,)
    taps = _INTERPOLATION_TAPS.get(getattr(layer, "interpolation", "nearest"), 2)
    kernel_size = tuple((taps - 1) * factor + 1 for factor in factors)
    return 0, LayerGeometry.transpose(kernel_size, tuple(factors))


def _whole_input_analyzer(layer, input_shapes, output_shapes):
    return 0, LayerGeometry.whole_input()


def _reshape_analyzer(layer, input_shapes, output_shapes):
    data_format = keras.config.image_data_format()
    if _spatial(input_shapes[0], data_format) == _spatial(output_shapes[0], data_format):
        return 0, LayerGeometry.identity()
    return 0, LayerGeometry.whole_input()


def _free_analyzer(layer, input_shapes, output_shapes):
    return 0, LayerGeometry.identity()


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
# Padding and cropping move the window centres but change neither the receptive
# field size nor the jump; normalization layers and PReLU own weights but only
# scale and shift, which the MAC convention leaves out.
for _cls in (
    layers.ZeroPadding1D,
    layers.ZeroPadding2D,
    layers.ZeroPadding3D,
    layers.Cropping1D,
    layers.Cropping2D,
    layers.Cropping3D,
    numpy_ops.Pad,
    layers.BatchNormalization,
    layers.LayerNormalization,
    layers.GroupNormalization,
    layers.Normalization,
    layers.PReLU,
    layers.Embedding,
):
    register_layer_analyzer(_cls, _free_analyzer)


class _Field(NamedTuple):
    """Receptive field and jump of one tensor, one entry per model input axis."""

    receptive_field: tuple
    jump: tuple


def _per_axis(value, num_axes):
    if isinstance(value, numbers.Number):
        return (value,) * num_axes
    value = tuple(value)
    return value if len(value) == num_axes else None


def _merge_fields(fields, num_axes):
    receptive_field, jump = [], []
    for axis in range(num_axes):
        fields_axis = [field.receptive_field[axis] for field in fields]
        receptive_field.append(None if None in fields_axis else max(fields_axis))
        jumps_axis = [field.jump[axis] for field in fields if field.jump[axis] is not None]
        jump.append(max(jumps_axis) if jumps_axis else None)
    return _Field(tuple(receptive_field), tuple(jump))


def _unknown_field(num_axes):
    return _Field((None,) * num_axes, (None,) * num_axes)


def _apply_geometry(geometry, fields, num_axes, input_sizes):
    """Returns the output `_Field`, or None when the geometry does not fit the axes."""
    if geometry.kind == "unknown" or not fields:
        return _unknown_field(num_axes)
    if geometry.kind == "whole_input":
        return _Field(tuple(input_sizes), (None,) * num_axes)
    merged = _merge_fields(fields, num_axes)
    if geometry.kind == "identity":
        return merged
    kernel_size = _per_axis(geometry.kernel_size, num_axes)
    strides = _per_axis(geometry.strides, num_axes)
    dilation_rate = _per_axis(geometry.dilation_rate, num_axes)
    if kernel_size is None or strides is None or dilation_rate is None:
        return None
    receptive_field, jump = [], []
    for axis in range(num_axes):
        field_in, jump_in = merged.receptive_field[axis], merged.jump[axis]
        kernel, stride, dilation = kernel_size[axis], strides[axis], dilation_rate[axis]
        if jump_in is None:
            # Already the whole input (or unknown): a window cannot widen it.
            receptive_field.append(field_in)
            jump.append(None)
            continue
        if geometry.kind == "sliding":
            step, jump_out = jump_in, jump_in * stride
        else:
            jump_out = jump_in / stride
            step = jump_out
        receptive_field.append(
            None if field_in is None else field_in + (kernel - 1) * dilation * step
        )
        jump.append(jump_out)
    return _Field(tuple(receptive_field), tuple(jump))


def _tidy(value):
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _report(values):
    values = tuple(_tidy(value) for value in values)
    if not values or all(value is None for value in values):
        return None
    if all(value == values[0] for value in values):
        return values[0]
    return values


def _format_shape(shape):
    return str(shape).replace(",)", ")")


def _format_number(value):
    if value is None:
        return "-"
    if isinstance(value, tuple):
        return "(" + ", ".join(_format_number(item) for item in value) + ")"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _to_json(value):
    if isinstance(value, tuple | list):
        return [_to_json(item) for item in value]
    return value


def _batchless(shape):
    return (None, *tuple(shape)[1:])


def _graph_of(model):
    """Returns the functional graph of a functional or Sequential model, else None."""
    if isinstance(model, Functional):
        return model
    if isinstance(model, keras.Sequential):
        return model._functional
    return None


class _Walker:
    def __init__(self, input_sizes, data_format):
        self.num_axes = len(input_sizes)
        self.input_sizes = input_sizes
        self.data_format = data_format
        self.records = []
        self.unknown_layers = []
        self.seen_weights = set()
        self.calls = {}

    def claim_params(self, owner):
        count = 0
        for weight in getattr(owner, "weights", None) or []:
            if id(weight) not in self.seen_weights:
                self.seen_weights.add(id(weight))
                count += math.prod(weight.shape)
        return count

    def record_name(self, prefix, operation):
        key = (prefix, id(operation))
        call = self.calls.get(key, 0)
        self.calls[key] = call + 1
        return prefix + operation.name + (f"@{call}" if call else "")

    def add_record(self, name, operation, output_specs, params, macs, field):
        shapes = [_batchless(spec.shape) for spec in output_specs]
        self.records.append(
            LayerRecord(
                name=name,
                class_name=type(operation).__name__,
                output_shape=shapes[0] if len(shapes) == 1 else tuple(shapes),
                params=params,
                macs=macs,
                receptive_field=_report(field.receptive_field),
                jump=_report(field.jump),
            )
        )

    def walk(self, model, graph, input_specs, input_fields, prefix):
        """Walks `graph` (the functional graph of `model`); returns its output specs and fields."""
        specs = {id(ref): spec for ref, spec in zip(graph.inputs, input_specs, strict=True)}
        fields = {id(ref): field for ref, field in zip(graph.inputs, input_fields, strict=True)}
        order = {id(operation): index for index, operation in enumerate(graph.operations)}
        for depth in sorted(graph._nodes_by_depth, reverse=True):
            nodes = sorted(
                graph._nodes_by_depth[depth], key=lambda node: order.get(id(node.operation), -1)
            )
            for node in nodes:
                if node.is_input or any(id(ref) not in specs for ref in node.input_tensors):
                    continue
                node_specs = [specs[id(ref)] for ref in node.input_tensors]
                node_fields = [fields[id(ref)] for ref in node.input_tensors]
                output_specs, output_fields = self.visit(
                    node, specs, node_specs, node_fields, prefix
                )
                for ref, spec, field in zip(node.outputs, output_specs, output_fields, strict=True):
                    specs[id(ref)] = spec
                    fields[id(ref)] = field
        leftover = self.claim_params(model)
        if leftover:
            self.records.append(
                LayerRecord(
                    name=prefix.rstrip("/") or model.name,
                    class_name=type(model).__name__,
                    output_shape=(),
                    params=leftover,
                    macs=0,
                    receptive_field=None,
                    jump=None,
                )
            )
        return (
            [specs[id(ref)] for ref in graph.outputs],
            [fields[id(ref)] for ref in graph.outputs],
        )

    def visit(self, node, specs, input_specs, input_fields, prefix):
        operation = node.operation
        name = self.record_name(prefix, operation)
        analyzer = _find_analyzer(operation)
        nested = _graph_of(operation) if analyzer is None else None
        if nested is not None and len(nested.inputs) == len(input_specs):
            output_specs, output_fields = self.walk(
                operation, nested, input_specs, input_fields, name + "/"
            )
            return output_specs, output_fields

        output_specs = self.output_specs(node, specs, input_specs)
        input_shapes = [tuple(spec.shape) for spec in input_specs]
        output_shapes = [tuple(spec.shape) for spec in output_specs]
        params = self.claim_params(operation)
        data_format = getattr(operation, "data_format", None) or self.data_format
        output_spatial = _spatial(output_shapes[0], data_format) if output_shapes else ()
        keeps_spatial = any(
            len(shape) == len(output_shapes[0]) and _spatial(shape, data_format) == output_spatial
            for shape in input_shapes
        )
        if analyzer is not None:
            macs, geometry = self.run_analyzer(analyzer, operation, input_shapes, output_shapes)
            known = True
        else:
            macs = 0
            geometry = LayerGeometry.identity() if keeps_spatial else LayerGeometry.unknown()
            has_weights = bool(getattr(operation, "weights", None))
            has_sub_layers = bool(getattr(operation, "_layers", None))
            known = keeps_spatial and not (
                has_weights or has_sub_layers or isinstance(operation, _OPS_WITH_UNCOUNTED_MACS)
            )
        field = _apply_geometry(geometry, input_fields, self.num_axes, self.input_sizes)
        if field is None:
            field = _unknown_field(self.num_axes)
            known = False
        if not known:
            self.unknown_layers.append(name)
        self.add_record(name, operation, output_specs, params, macs, field)
        return output_specs, [field] * len(output_specs)

    @staticmethod
    def output_specs(node, specs, input_specs):
        """The node's output specs for the actual input shapes, which may be more concrete."""
        if all(
            tuple(spec.shape) == tuple(ref.shape)
            for spec, ref in zip(input_specs, node.input_tensors, strict=True)
        ):
            return list(node.outputs)
        args, kwargs = node.arguments.fill_in(specs)
        return keras.tree.flatten(node.operation.compute_output_spec(*args, **kwargs))

    @staticmethod
    def run_analyzer(analyzer, operation, input_shapes, output_shapes):
        result = analyzer(operation, input_shapes, output_shapes)
        valid = (
            isinstance(result, tuple)
            and len(result) == 2
            and isinstance(result[0], numbers.Integral)
            and result[0] >= 0
            and isinstance(result[1], LayerGeometry)
        )
        if not valid:
            raise TypeError(
                f"The analyzer of {type(operation).__name__} must return (macs, LayerGeometry) "
                f"with macs a non-negative int. Received: {result!r}"
            )
        return int(result[0]), result[1]


def _input_specs(graph, input_shape):
    if input_shape is None:
        return list(graph.inputs)
    is_single = isinstance(input_shape, tuple | list) and all(
        dim is None or isinstance(dim, numbers.Integral) for dim in input_shape
    )
    shapes = [input_shape] if is_single else input_shape
    if not isinstance(shapes, tuple | list) or len(shapes) != len(graph.inputs):
        raise ValueError(
            "`input_shape` must be a shape tuple without the batch dimension, or a list of "
            f"{len(graph.inputs)} such tuples (one per model input). "
            f"Received: input_shape={input_shape!r}"
        )
    specs = []
    for shape, ref in zip(shapes, graph.inputs, strict=True):
        shape = tuple(shape)
        compatible = len(shape) == len(ref.shape) - 1 and all(
            expected is None or dim == expected
            for dim, expected in zip(shape, ref.shape[1:], strict=True)
        )
        if not compatible:
            raise ValueError(
                f"`input_shape` does not fit the model input '{ref.name}' of shape "
                f"{tuple(ref.shape)}. Received: input_shape={input_shape!r}"
            )
        specs.append(keras.KerasTensor((None, *shape), dtype=ref.dtype))
    return specs


def analyze(model, input_shape=None, data_format=None):
    """Counts parameters and MACs and computes receptive field and jump per layer.

    The module docstring states the conventions: what a MAC is, how receptive
    field and jump propagate, and how unknown layers are reported.

    Args:
        model: a functional or Sequential `keras.Model` (keras-hub backbones and
            tasks are functional). Nested functional and Sequential models are
            walked and their records named `"outer/inner"`.
        input_shape: tuple, list of tuples, or None. Shape of each model input
            without the batch dimension, to analyse a model whose inputs have
            unknown spatial dimensions (or to build a Sequential model that has
            no input yet). Defaults to `None`: the model's own input shapes.
        data_format: `"channels_last"`, `"channels_first"` or None. Which axes of
            the model input (and of the outputs of layers that have no
            `data_format` of their own) are spatial. Defaults to
            `keras.config.image_data_format()`.

    Returns:
        A `ModelAnalysis`.

    Raises:
        TypeError: if `model` is not a functional or Sequential model.
        ValueError: if `input_shape` does not fit the model inputs, if
            `data_format` is not a known value, or if a layer
            whose MACs depend on the spatial size has unknown spatial dimensions.

    Example:

    ```python
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3)(inputs)
    x = keras.layers.Conv2D(8, 3)(x)
    analysis = analyze(keras.Model(inputs, x))
    analysis.layers[-1].receptive_field  # 5
    print(analysis)
    ```
    """
    if data_format is None:
        data_format = keras.config.image_data_format()
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(
            '`data_format` must be None, "channels_last" or "channels_first". '
            f"Received: data_format={data_format!r}"
        )
    graph = _graph_of(model)
    if graph is None and isinstance(model, keras.Sequential) and input_shape is not None:
        model.build((None, *tuple(input_shape)))
        graph = model._functional
        input_shape = None
    if graph is None:
        if isinstance(model, keras.Sequential):
            raise TypeError(
                f"`analyze` needs a model with a layer graph, but the Sequential model "
                f"'{model.name}' has no input shape yet. Start it with keras.Input or pass "
                "`input_shape`."
            )
        raise TypeError(
            "`analyze` needs a functional or Sequential model: a subclassed model has no layer "
            f"graph to walk. Received: model={model!r} of type {type(model).__name__}"
        )
    input_specs = _input_specs(graph, input_shape)
    input_sizes = _spatial(tuple(input_specs[0].shape), data_format)
    num_axes = len(input_sizes)
    walker = _Walker(input_sizes, data_format)
    input_fields = []
    for spec, ref in zip(input_specs, graph.inputs, strict=True):
        if len(_spatial(tuple(spec.shape), data_format)) == num_axes:
            field = _Field((1,) * num_axes, (1,) * num_axes)
        else:
            field = _unknown_field(num_axes)
        input_fields.append(field)
        walker.add_record(
            ref._keras_history.operation.name, ref._keras_history.operation, [spec], 0, 0, field
        )
    walker.walk(model, graph, input_specs, input_fields, prefix="")
    return ModelAnalysis(
        layers=walker.records,
        total_params=sum(record.params for record in walker.records),
        total_macs=sum(record.macs for record in walker.records),
        unknown_layers=walker.unknown_layers,
    )


def print_analysis(model, input_shape=None, data_format=None, print_fn=None):
    """Prints the table of `analyze(model, input_shape, data_format)`.

    Args:
        model: a functional or Sequential `keras.Model`.
        input_shape: tuple, list of tuples, or None. As in `analyze`.
            Defaults to `None`.
        data_format: str or None. As in `analyze`. Defaults to `None`.
        print_fn: callable or None. Called with the table string. Defaults to
            `print`.

    Raises:
        TypeError: as `analyze`.
        ValueError: as `analyze`.

    Example:

    ```python
    print_analysis(model)
    ```
    """
    (print_fn or print)(analyze(model, input_shape, data_format).to_table())
