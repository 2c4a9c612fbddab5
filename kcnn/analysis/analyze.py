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

  The **start** (the centre of the first output position's field, in input pixels;
  pixel `i` is centred at `i`, so the input has start 0) moves as Araujo et al.'s
  effective padding does: a sliding window with `p` pixels of padding before the
  input gives `start_out = start_in + ((k - 1) * d / 2 - p) * j_in` (`p` = 0 for
  "valid", TensorFlow's `floor(total / 2)` for "same", `(k - 1) * d` for "causal");
  padding `p` pixels (`ZeroPadding`, `ops.pad`) gives `start_in - p * j_in` and
  cropping `c` pixels `start_in + c * j_in`. Output position `n` is centred at
  `start + n * jump`. It is unknown after transposed convolutions and upsampling.

  `LayerRecord.receptive_field`, `LayerRecord.jump` and `LayerRecord.start` are a single number when
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

import math
import numbers

import keras

# Keras 3 exposes the layer graph of a functional model (nodes, depths and the
# operation classes of `keras.ops`) only through these modules; there is no public
# equivalent.
from keras.src.models.functional import Functional
from keras.src.ops import nn as nn_ops
from keras.src.ops import numpy as numpy_ops

from kcnn._validation import normalize_data_format
from kcnn.analysis.analyzers import find_analyzer, spatial_dims
from kcnn.analysis.geometry import LayerGeometry, apply_geometry, input_field, unknown_field
from kcnn.analysis.records import LayerRecord, ModelAnalysis, report_value

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
                receptive_field=report_value(field.receptive_field),
                jump=report_value(field.jump),
                start=report_value(field.start),
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
        analyzer = find_analyzer(operation)
        nested = _graph_of(operation) if analyzer is None else None
        if nested is not None and len(nested.inputs) == len(input_specs):
            output_specs, output_fields = self.walk(
                operation, nested, input_specs, input_fields, name + "/"
            )
            return output_specs, output_fields

        output_specs = self.output_specs(node, specs, input_specs)
        if analyzer is None and _sub_layers(operation) and _concrete(input_specs):
            return self.visit_block(node, name, input_specs, output_specs)
        input_shapes = [tuple(spec.shape) for spec in input_specs]
        output_shapes = [tuple(spec.shape) for spec in output_specs]
        params = self.claim_params(operation)
        data_format = getattr(operation, "data_format", None) or self.data_format
        output_spatial = spatial_dims(output_shapes[0], data_format) if output_shapes else ()
        keeps_spatial = any(
            len(shape) == len(output_shapes[0])
            and spatial_dims(shape, data_format) == output_spatial
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
        field = apply_geometry(geometry, input_fields, self.num_axes, self.input_sizes)
        if field is None:
            field = unknown_field(self.num_axes)
            known = False
        if not known:
            self.unknown_layers.append(name)
        self.add_record(name, operation, output_specs, params, macs, field)
        return output_specs, [field] * len(output_specs)

    def visit_block(self, node, name, input_specs, output_specs):
        """A subclassed layer with sub-layers (keras-hub's MobileNet and HGNetV2 blocks): it
        has no graph to walk, so it is run once on zeros while every call of a sub-layer
        with a rule (or with no sub-layers of its own) is recorded, in call order, as
        `"block/sub_layer"`. Parameters and MACs are exact; which call feeds which is not
        known, so receptive field and jump are None from the block on (and the block is
        listed in `unknown_layers`)."""
        operation = node.operation
        leaves = {id(layer) for layer in _leaf_layers(operation)}
        calls = []
        values = {
            id(ref): keras.ops.zeros((1, *spec.shape[1:]), dtype=spec.dtype)
            for ref, spec in zip(node.input_tensors, input_specs, strict=True)
        }
        args, kwargs = node.arguments.fill_in(values)
        with _recording_calls(leaves, calls):
            operation(*args, **kwargs)
        field = unknown_field(self.num_axes)
        for layer, inputs, outputs in calls:
            input_shapes = [_batchless(value.shape) for value in inputs]
            output_shapes = [_batchless(value.shape) for value in outputs]
            analyzer = find_analyzer(layer)
            macs = 0
            if analyzer is not None:
                macs, _ = self.run_analyzer(analyzer, layer, input_shapes, output_shapes)
            elif layer.weights:
                self.unknown_layers.append(f"{name}/{layer.name}")
            leaf_specs = [keras.KerasTensor(shape) for shape in output_shapes]
            leaf_name = self.record_name(name + "/", layer)
            self.add_record(leaf_name, layer, leaf_specs, self.claim_params(layer), macs, field)
        self.unknown_layers.append(name)
        self.add_record(name, operation, output_specs, self.claim_params(operation), 0, field)
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


def _sub_layers(layer):
    return layer._flatten_layers(include_self=False) if isinstance(layer, keras.Layer) else []


def _leaf_layers(layer):
    """The sub-layers of `layer` that have a rule or no sub-layers of their own; a layer
    with a rule is not descended into, so its inner convs are not counted twice."""
    leaves = []
    for child in layer._flatten_layers(include_self=False, recursive=False):
        if find_analyzer(child) is not None or not _sub_layers(child):
            leaves.append(child)
        else:
            leaves.extend(_leaf_layers(child))
    return leaves


def _concrete(specs):
    return all(None not in tuple(spec.shape)[1:] for spec in specs)


class _recording_calls:
    """While active, appends `(layer, input tensors, output tensors)` to `calls` for every
    call of a layer whose id is in `leaves`."""

    def __init__(self, leaves, calls):
        self.leaves, self.calls = leaves, calls

    def __enter__(self):
        self.original = keras.Layer.__call__
        original, leaves, calls = self.original, self.leaves, self.calls

        def recording_call(layer, *args, **kwargs):
            outputs = original(layer, *args, **kwargs)
            if id(layer) in leaves:
                inputs = [
                    value for value in keras.tree.flatten((args, kwargs)) if _is_tensor(value)
                ]
                calls.append((layer, inputs, keras.tree.flatten(outputs)))
            return outputs

        keras.Layer.__call__ = recording_call
        return self

    def __exit__(self, *exc_info):
        keras.Layer.__call__ = self.original


def _is_tensor(value):
    return hasattr(value, "shape") and hasattr(value, "dtype") and len(value.shape) > 0


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
    data_format = normalize_data_format(data_format, keras.config.image_data_format())
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
    input_sizes = spatial_dims(tuple(input_specs[0].shape), data_format)
    num_axes = len(input_sizes)
    walker = _Walker(input_sizes, data_format)
    input_fields = []
    for spec, ref in zip(input_specs, graph.inputs, strict=True):
        if len(spatial_dims(tuple(spec.shape), data_format)) == num_axes:
            field = input_field(num_axes)
        else:
            field = unknown_field(num_axes)
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
