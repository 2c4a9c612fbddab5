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


def level_stride(name):
    """Returns the stride of a pyramid key, e.g. `level_stride("P3") == 8`.

    Raises:
        ValueError: if `name` is not of the form `"P<k>"`.
    """
    if not (isinstance(name, str) and name.startswith(LEVEL_PREFIX) and name[1:].isdigit()):
        raise ValueError(
            f"A pyramid level key must look like 'P<k>' (stride 2**k). Received: {name!r}"
        )
    return 2 ** int(name[1:])


def sorted_levels(pyramid):
    """Returns the keys of a pyramid dict sorted from the finest to the coarsest level."""
    return sorted(pyramid, key=level_stride)


def _layer_outputs(model):
    """Returns the single 4-D outputs of the layers of `model`, in topological order."""
    outputs = []
    for layer in model.layers:
        if isinstance(layer, (keras.layers.InputLayer, keras.layers.ZeroPadding2D)):
            continue
        output = layer.output
        if not isinstance(output, (list, tuple, dict)) and len(output.shape) == 4:
            outputs.append(output)
    return outputs


def _measured_level(height, width, probe_size):
    """Returns k such that a `height` x `width` map has stride 2**k on a square probe.

    "valid" convolutions make sizes drift by a pixel from probe_size / 2**k, so a size
    within one pixel of it counts (a 1x1 squeeze-and-excite map never does).
    """
    if not height or not width:
        return None
    level = int(round(np.log2(probe_size / height)))
    expected = probe_size / 2**level
    if level < 0 or abs(height - expected) > 1 or abs(width - expected) > 1:
        return None
    return level


def pyramid_model(model, probe_size=128, min_level=0, max_level=MAX_LEVEL, name=None):
    """Wraps a functional image model so that it returns its feature pyramid.

    The stride of every candidate feature map is measured by running the model once on a
    `probe_size` x `probe_size` image of zeros (spatial sizes at build time may be unknown);
    a map within one pixel of `probe_size / 2**k` has stride `2**k`. The tensors of
    `model.pyramid_outputs` (if the model has one) are keyed by the stride they really have;
    every level `k` in `[min_level, max_level]` still missing gets the last layer output, in
    topological order, with stride `2**k`. The returned model shares its layers (and
    weights) with `model`.

    Args:
        model: a functional `keras.Model` taking one image tensor (channels last).
        probe_size: int. Side of the probe image; must be a multiple of `2**max_level` and
            large enough that squeeze-and-excite style 1x1 maps are not mistaken for a
            level. Defaults to 128.
        min_level: int. Finest level to expose. Defaults to 0.
        max_level: int. Coarsest level to expose. Defaults to 5.
        name: str. Name of the returned model. Defaults to `model.name`.

    Returns:
        A functional `keras.Model` with the same input and a dict output keyed `"Pk"`; the
        dict of symbolic outputs is also set as its `pyramid_outputs` attribute.

    Raises:
        ValueError: if the model is not functional, has several inputs, or no layer of it
            reaches any stride in the requested range.
    """
    if not hasattr(model, "inputs") or model.inputs is None or len(model.inputs) != 1:
        raise ValueError(
            "`model` must be a functional keras.Model with exactly one image input. "
            f"Received: {type(model).__name__}"
        )
    if probe_size % (2**max_level):
        raise ValueError(
            f"`probe_size` must be a multiple of 2**max_level={2**max_level}. "
            f"Received: probe_size={probe_size}"
        )
    trusted = list((getattr(model, "pyramid_outputs", None) or {}).values())
    candidates = trusted + _layer_outputs(model)
    image_input = model.inputs[0]
    probe_shape = [1, probe_size, probe_size, image_input.shape[-1]]
    probe = keras.Model(image_input, candidates)
    probe_outputs = probe(np.zeros(probe_shape, dtype="float32"))
    if not isinstance(probe_outputs, (list, tuple)):
        probe_outputs = [probe_outputs]

    chosen, from_trusted = {}, set()
    for index, (output, value) in enumerate(zip(candidates, probe_outputs, strict=True)):
        level = _measured_level(value.shape[1], value.shape[2], probe_size)
        if level is None or not min_level <= level <= max_level:
            continue
        if index < len(trusted):
            chosen[level] = output
            from_trusted.add(level)
        elif level not in from_trusted:
            chosen[level] = output  # later layers overwrite earlier ones at the same stride
    if not chosen:
        raise ValueError(
            f"No layer of model '{model.name}' has an output stride between "
            f"{2**min_level} and {2**max_level}."
        )
    outputs = {level_name(level): chosen[level] for level in sorted(chosen)}
    wrapped = keras.Model(image_input, outputs, name=name or model.name)
    wrapped.pyramid_outputs = outputs
    return wrapped
