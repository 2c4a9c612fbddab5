"""Backbones behind one `pyramid_outputs` contract (see `kcnn.backbones.pyramid`).

>>> backbone = build_backbone("resnet18", input_shape=(64, 64, 3))
>>> {key: tuple(tensor.shape[1:3]) for key, tensor in backbone.output.items()}["P5"]
(2, 2)
"""

import json
import os

import keras_hub

from kcnn.backbones.block_cnn import BLOCK_TYPES, block_cnn
from kcnn.backbones.hub import HUB_BUILDERS
from kcnn.backbones.plain import plain_cnn
from kcnn.backbones.pyramid import (
    level_name,
    level_stride,
    pyramid_backbone,
    pyramid_model,
    sorted_levels,
)

BACKBONES = ("plain_cnn", "block_cnn", *HUB_BUILDERS)
# Built by kcnn itself (no keras-hub), so they take only a `.weights.h5` file as weights.
_KCNN_BUILDERS = {"plain_cnn": plain_cnn, "block_cnn": block_cnn}

__all__ = [
    "BACKBONES",
    "BLOCK_TYPES",
    "block_cnn",
    "build_backbone",
    "level_name",
    "level_stride",
    "plain_cnn",
    "pyramid_backbone",
    "pyramid_features",
    "pyramid_model",
    "require_levels",
    "sorted_levels",
]


def _load_weights(model, weights):
    """Loads a local `.weights.h5` file into `model`; never downloads anything."""
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"`weights` must be the path of a local .weights.h5 file. No file at: {path}"
        )
    if not path.endswith(".weights.h5"):
        raise ValueError(
            f"`weights` must be a Keras weights file ending in '.weights.h5'. Received: {path}"
        )
    model.load_weights(path)


# (name, channels, arguments) -> {level: position}: where the levels of a keras-hub
# architecture are among its feature maps. Measuring them builds a twin of unknown input size
# and runs it once (`pyramid_model`); the answer depends only on the architecture, so a
# second build of the same name and arguments, at any input size, reuses it.
_LEVEL_POSITIONS = {}


def _hub_pyramid(name, input_shape, kwargs):
    """The keras-hub backbone `name`, wrapped by `pyramid_model`, measured once per
    architecture."""
    builder = HUB_BUILDERS[name]
    key = (name, input_shape[2], json.dumps(kwargs, sort_keys=True, default=repr))
    positions = _LEVEL_POSITIONS.get(key)
    reference = None
    if positions is None and input_shape[:2] != (None, None):
        reference = builder((None, None, input_shape[2]), **kwargs)
    model = pyramid_model(
        builder(input_shape, **kwargs), name=name, reference=reference, positions=positions
    )
    _LEVEL_POSITIONS[key] = model.pyramid_positions
    return model


def build_backbone(name, input_shape=(None, None, 3), weights=None, **kwargs):
    """Builds a backbone by name from constructor arguments, with no network access.

    Args:
        name: str. One of `kcnn.backbones.BACKBONES`: `"plain_cnn"`, `"block_cnn"`,
            `"resnet18"`, `"resnet34"`, `"resnet50"`, `"resnet101"`, `"resnet152"`,
            `"mobilenetv3_small"`, `"mobilenetv3_large"`, `"efficientnet_b0"` to `"_b2"`,
            `"csp_darknet53"`, `"csp_darknet_tiny"`, `"densenet121"`, `"densenet169"`,
            `"vgg16"`, `"xception"`, `"hgnetv2_b0"`.
        input_shape: tuple `(height, width, channels)`; height and width may be None.
            Defaults to `(None, None, 3)`.
        weights: None, or the path of a local `.weights.h5` file, or of a local keras-hub
            preset folder (with `config.json` and `model.weights.h5`, as keras-hub writes
            with `backbone.save_to_preset(folder)`). A `.weights.h5` file is what
            `backbone.save_weights(path)` wrote for a kcnn backbone of the same name and
            arguments. Defaults to None (random initialisation).
        **kwargs: constructor arguments that replace the published defaults, e.g.
            `stackwise_num_filters=[8, 16, 32, 64]` for a tiny ResNet, `filters=(16, 32)`
            for `plain_cnn`, or `blocks=["plain", "residual"]` for `block_cnn`.

    Returns:
        A functional `keras.Model` whose output is a dict keyed by pyramid level
        (`"P1"`..`"P5"`, stride 2**k; `plain_cnn` and `block_cnn` also give `"P0"`), also
        available as its `pyramid_outputs` attribute.

    Raises:
        ValueError: if `name` is unknown or `weights` is not a `.weights.h5` file.
        FileNotFoundError: if `weights` does not exist.
    """
    if name not in BACKBONES:
        raise ValueError(f"`name` must be one of {list(BACKBONES)}. Received: name={name!r}")
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(
            f"`input_shape` must be (height, width, channels). Received: input_shape={input_shape}"
        )
    if weights is not None and os.path.isdir(os.fspath(weights)):
        if name in _KCNN_BUILDERS:
            raise ValueError(f"`weights` for {name} must be a .weights.h5 file, not a folder.")
        raw = keras_hub.models.Backbone.from_preset(os.fspath(weights))
        return pyramid_backbone(raw, name=name)
    if name in _KCNN_BUILDERS:
        model = _KCNN_BUILDERS[name](input_shape=input_shape, **kwargs)
    else:
        model = _hub_pyramid(name, input_shape, kwargs)
    if weights is not None:
        _load_weights(model, weights)
    return model


def require_levels(backbone, available, wanted, received):
    """Checks that every level of `wanted` is among `available` (the level names the
    backbone gives).

    Raises:
        ValueError: naming the `levels` argument (`received`, as the caller was given it)
            and the levels that `backbone` gives.
    """
    available = sorted_levels(available)
    if any(level not in available for level in wanted):
        raise ValueError(
            f"`levels` must be pyramid levels of '{backbone.name}', which gives {available}. "
            f"Received: levels={received}"
        )


def pyramid_features(backbone, inputs, levels=None):
    """Calls `backbone` (after `pyramid_backbone`) on `inputs` and returns its pyramid dict,
    checking the contract and, when `levels` is given, that it gives each of them
    (`require_levels`)."""
    features = backbone(inputs)
    if not isinstance(features, dict) or not features:
        raise TypeError(
            "A kcnn backbone must return a dict of feature maps keyed 'P<k>' (a functional "
            "model or keras-hub Backbone is adapted by `kcnn.backbones.pyramid_backbone`). "
            f"Received an output of type {type(features).__name__} from '{backbone.name}'."
        )
    for key in features:
        level_stride(key)
    if levels is not None:
        require_levels(backbone, features, levels, levels)
    return features
