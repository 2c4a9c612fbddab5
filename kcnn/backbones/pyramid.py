"""The `pyramid_outputs` contract shared by every kcnn backbone.

A kcnn backbone is a functional `keras.Model` whose output is a dict of feature maps keyed
by pyramid level: key `"Pk"` holds the deepest feature map whose spatial stride relative to
the input is `2**k` (the convention of FPN, Lin et al. 2017, arXiv:1612.03144, and of
keras-hub's `pyramid_outputs`). Levels run from `P1` (stride 2) up to `P5` (stride 32); a
backbone that computes full-resolution features may also give `P0` (stride 1), and a shallow
one may stop before `P5`. Decoders and heads consume that dict and nothing else, so any
backbone fits any decoder.

keras-hub backbones do not all follow the convention (measured on keras-hub 0.32:
`MobileNetBackbone` exposes no pyramid at all and `CSPNetBackbone` keys its stages by index,
so a stem of stride 1 shifts every key by one). `pyramid_model` therefore does not trust any
existing keys: it measures the stride of every candidate feature map on a probe image and
keys each by the stride it really has. Candidates are the backbone's own `pyramid_outputs`
tensors (stage outputs chosen by keras-hub) first; a level still missing is filled with the
last layer in topological order that has that stride, padding layers excepted.
"""

import keras
import numpy as np

LEVEL_PREFIX = "P"
MAX_LEVEL = 5


def level_name(level):
    """Returns the pyramid key of a level, e.g. `level_name(3) == "P3"` (stride 8)."""
    return f"{LEVEL_PREFIX}{level}"


def _is_level_key(name):
    return isinstance(name, str) and name.startswith(LEVEL_PREFIX) and name[1:].isdigit()


def level_stride(name):
    """Returns the stride of a pyramid key, e.g. `level_stride("P3") == 8`.

    Raises:
        ValueError: if `name` is not of the form `"P<k>"`.
    """
    if not _is_level_key(name):
        raise ValueError(
            f"A pyramid level key must look like 'P<k>' (stride 2**k). Received: {name!r}"
        )
    return 2 ** int(name[1:])


def sorted_levels(pyramid):
    """Returns the keys of a pyramid dict sorted from the finest to the coarsest level."""
    return sorted(pyramid, key=level_stride)


def _layer_outputs(model):
    """Returns the single 4-D outputs of the layers of `model`, in topological order, then
    the model's own 4-D outputs (a layer returning several maps at once, as HGNetV2's
    encoder does, is only reachable through them)."""
    outputs = []
    for layer in model.layers:
        if isinstance(layer, (keras.layers.InputLayer, keras.layers.ZeroPadding2D)):
            continue
        output = layer.output
        if not isinstance(output, (list, tuple, dict)) and len(output.shape) == 4:
            outputs.append(output)
    own = [output for output in model.outputs if len(output.shape) == 4]
    return outputs + sorted(own, key=lambda output: _graph_position(model, output))


def _graph_position(model, tensor):
    """(layer index, output index) of a symbolic tensor: topological order, also for the
    outputs of a dict, which Keras flattens by key."""
    operation, _, tensor_index = tensor._keras_history
    return model.layers.index(operation), tensor_index


def _measured_level(height, width, input_height, input_width):
    """Returns k such that a `height` x `width` map has stride 2**k on the given input.

    "valid" convolutions make sizes drift by a pixel from size / 2**k, so a size within one
    pixel of it counts, on both axes.
    """
    if not height or not width:
        return None
    level = int(round(np.log2(input_height / height)))
    if level < 0:
        return None
    for size, measured in ((input_height, height), (input_width, width)):
        if abs(measured - size / 2**level) > 1:
            return None
    return level


def _choose_levels(model, probe_shape, min_level, max_level):
    """Returns {level: position in the candidate list} and the candidate list of `model`."""
    trusted = list((getattr(model, "pyramid_outputs", None) or {}).values())
    candidates = trusted + _layer_outputs(model)
    probe = keras.Model(model.inputs[0], candidates)
    values = probe(np.zeros(probe_shape, dtype="float32"))
    if not isinstance(values, (list, tuple)):
        values = [values]
    chosen, from_trusted = {}, set()
    for position, value in enumerate(values):
        level = _measured_level(value.shape[1], value.shape[2], probe_shape[1], probe_shape[2])
        if level is None or not min_level <= level <= max_level:
            continue
        if position < len(trusted):
            chosen[level] = position
            from_trusted.add(level)
        elif level not in from_trusted:
            chosen[level] = position  # later layers overwrite earlier ones at the same stride
    if not chosen:
        raise ValueError(
            f"No layer of model '{model.name}' has an output stride between "
            f"{2**min_level} and {2**max_level}."
        )
    return chosen, candidates


def pyramid_model(
    model,
    probe_size=128,
    min_level=0,
    max_level=MAX_LEVEL,
    name=None,
    reference=None,
    positions=None,
):
    """Wraps a functional image model so that it returns its feature pyramid.

    The stride of every candidate feature map is measured by running the model once on an
    image of zeros; a map within one pixel of `size / 2**k` on both axes has stride `2**k`.
    The tensors of `model.pyramid_outputs` (if the model has one) are keyed by the stride
    they really have; every level `k` in `[min_level, max_level]` still missing gets the
    last layer output, in topological order, with stride `2**k`. The returned model shares
    its layers (and weights) with `model`.

    Args:
        model: a functional `keras.Model` taking one image tensor (channels last).
        probe_size: int. Side of the square probe image when the model's input size is
            unknown; a multiple of `2**max_level`, large enough that squeeze-and-excite
            1x1 maps are not mistaken for a level. Defaults to 128. A model with a fixed
            input size is probed at that size.
        min_level: int. Finest level to expose. Defaults to 0.
        max_level: int. Coarsest level to expose. Defaults to 5.
        name: str. Name of the returned model. Defaults to `model.name`.
        reference: optional twin of `model` (same architecture, input size unknown) on
            which the levels are measured instead, then taken from `model` by position.
            Small fixed input sizes make strides ambiguous (a 1x1 map at a 32x32 input);
            the twin's probe does not.
        positions: optional `{level: position}`, the `pyramid_positions` attribute of an
            earlier result for the same architecture (same builder and arguments, any input
            size): the levels are taken from it instead of being measured again, so neither
            the probe nor `reference` is needed. `kcnn.backbones.build_backbone` keeps them
            per name and arguments.

    Returns:
        A functional `keras.Model` with the same input and a dict output keyed `"Pk"`; the
        dict of symbolic outputs is also set as its `pyramid_outputs` attribute, and the
        position of each level among the candidate feature maps as `pyramid_positions`.

    Raises:
        ValueError: if the model is not functional, has several inputs, or no layer of it
            reaches any stride in the requested range.
    """
    for candidate in (model, reference):
        if candidate is None:
            continue
        if not hasattr(candidate, "inputs") or not candidate.inputs or len(candidate.inputs) != 1:
            raise ValueError(
                "`model` must be a functional keras.Model with exactly one image input. "
                f"Received: {type(candidate).__name__}"
            )
    if probe_size % (2**max_level):
        raise ValueError(
            f"`probe_size` must be a multiple of 2**max_level={2**max_level}. "
            f"Received: probe_size={probe_size}"
        )
    trusted = list((getattr(model, "pyramid_outputs", None) or {}).values())
    candidates = trusted + _layer_outputs(model)
    if positions is not None:
        chosen = {int(level): position for level, position in positions.items()}
        if not chosen or max(chosen.values()) >= len(candidates):
            raise ValueError(
                "`positions` must come from a model of the same architecture as `model`. "
                f"Received: positions={positions}"
            )
    else:
        measured = reference if reference is not None else model
        _, height, width, channels = measured.inputs[0].shape
        probe_shape = [1, height or probe_size, width or probe_size, channels]
        chosen, measured_candidates = _choose_levels(measured, probe_shape, min_level, max_level)
        if len(candidates) != len(measured_candidates):
            raise ValueError("`reference` must have the same architecture as `model`.")
    outputs = {level_name(level): candidates[chosen[level]] for level in sorted(chosen)}
    wrapped = keras.Model(model.inputs[0], outputs, name=name or model.name)
    wrapped.pyramid_outputs = outputs
    wrapped.pyramid_positions = dict(chosen)
    return wrapped


def _is_pyramid(output):
    return isinstance(output, dict) and bool(output) and all(map(_is_level_key, output))


def _unsized_twin(model):
    """The same architecture with input size (None, None), built from `model`'s config, or
    None when the config does not say the input size (then `model` itself is probed)."""
    config = model.get_config()
    channels = model.inputs[0].shape[-1]
    keys = [key for key in ("image_shape", "input_shape") if key in config]
    if not keys:
        return None
    for key in keys:
        config[key] = (None, None, channels)
    try:
        twin = type(model).from_config(config)
    except Exception:  # noqa: BLE001 - any failure means: probe the model itself
        return None
    if tuple(twin.inputs[0].shape[1:3]) != (None, None):
        return None
    return twin


def pyramid_backbone(backbone, name=None):
    """Returns `backbone` as a kcnn backbone, adapting it when it is not one already.

    Every kcnn model that takes a backbone passes it through here, so it accepts:
    - a kcnn backbone (`kcnn.backbones.build_backbone(...)`), or any Keras model whose
      output is a dict of feature maps keyed `"P<k>"`: returned as it is;
    - a keras-hub `Backbone` (e.g. from `keras_hub.models.Backbone.from_preset(folder)` or
      built with its own arguments), or any functional image model: wrapped by
      `pyramid_model`, which measures the stride of its feature maps (its
      `pyramid_outputs` first) and keys them `"P<k>"`. A model with a fixed input size is
      measured on a twin of unknown input size when its config allows, so small inputs
      (a 1x1 map at 32x32) do not make strides ambiguous.

    Args:
        backbone: a `keras.Model`, as above.
        name: str. Name of an adapted model. Defaults to `backbone.name`.

    Returns:
        A `keras.Model` whose output is a dict keyed `"P<k>"`, sharing `backbone`'s layers
        and weights.

    Raises:
        TypeError: if `backbone` is not a `keras.Model`.
        ValueError: if it has several inputs or no feature map with a stride of 1 to 32.
    """
    if not isinstance(backbone, keras.Model):
        raise TypeError(
            "`backbone` must be a keras.Model: a kcnn backbone, a keras-hub Backbone or a "
            f"model returning a dict of 'P<k>' feature maps. Received: {type(backbone).__name__}"
        )
    try:
        output = backbone.output
    except (AttributeError, ValueError):
        return backbone  # not functional: its output is checked when it is called
    if _is_pyramid(output):
        return backbone
    reference = None
    if backbone.inputs and len(backbone.inputs) == 1:
        if any(size is not None for size in backbone.inputs[0].shape[1:3]):
            reference = _unsized_twin(backbone)
    return pyramid_model(backbone, name=name, reference=reference)
