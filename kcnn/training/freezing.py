"""Freezing part of a model for transfer learning: the backbone, the layers up to a pyramid
level, or layers by name prefix (see `kcnn.training.transfer`).

A frozen layer is set `trainable = False`; a frozen `BatchNormalization` layer then runs in
inference mode (Keras 3), so fine-tuning never overwrites the statistics it was pretrained
with.
"""

import keras

from kcnn.backbones.pyramid import level_stride, sorted_levels

BACKBONE = "backbone"


def head_chain(output):
    """The layers from a model output back to the first one holding weights (its
    classifier): e.g. `[predictions]`, or `[predictions, head_average, head_scores]`."""
    layer = output._keras_history.operation  # the producing layer; Keras has no public name
    chain = [layer]
    while not layer.weights:
        inbound = layer.input
        if isinstance(inbound, (list, tuple, dict)) or isinstance(layer, keras.layers.InputLayer):
            raise ValueError(
                f"Cannot find the classification head of output '{chain[0].name}': no layer "
                "with weights on a single-input path before it."
            )
        layer = inbound._keras_history.operation
        chain.append(layer)
    return chain


def head_layers(model):
    """Names of the classification head of every output of `model`.

    The head of an output is the last layer holding weights before it (the dense softmax,
    or the 1x1 score convolution of a fully convolutional head) and the weightless layers
    between the two: the layers a new task replaces.

    Args:
        model: a functional `keras.Model`.

    Returns:
        list of str, output by output.

    Raises:
        ValueError: if an output has no layer with weights on a single-input path before it.

    Example:

    >>> from kcnn.models.classic import GoogLeNet, LeNet5
    >>> head_layers(LeNet5((32, 32, 1), 10))
    ['predictions']
    >>> head_layers(LeNet5((32, 32, 1), 10, fully_convolutional=True))
    ['predictions', 'head_average', 'head_scores']
    >>> head_layers(GoogLeNet((96, 96, 3), 10, aux_heads=True, width=0.125))
    ['predictions', 'aux1_predictions', 'aux2_predictions']
    """
    return [layer.name for output in model.outputs for layer in head_chain(output)]


def check_layer_selector(layers, argument="layers"):
    """Checks a freeze selector: `"backbone"`, a pyramid level `"P<k>"`, or a list of
    layer-name prefixes.

    Raises:
        ValueError: naming `argument` and the value received.
    """
    if isinstance(layers, str):
        if layers == BACKBONE:
            return layers
        try:
            level_stride(layers)
            return layers
        except ValueError:
            pass
    elif (
        isinstance(layers, (list, tuple))
        and layers
        and all(isinstance(prefix, str) and prefix for prefix in layers)
    ):
        return list(layers)
    raise ValueError(
        f'`{argument}` must be "{BACKBONE}", a pyramid level such as "P3", or a non-empty '
        f"list of layer-name prefixes. Received: {argument}={layers!r}"
    )


def _find_backbone(model):
    """The model itself or the nested model whose output is a pyramid dict `{"P<k>": ...}`."""
    for candidate in (model, *model.layers):
        if not isinstance(candidate, keras.Model):
            continue
        output = candidate.output
        if (
            isinstance(output, dict)
            and output
            and all(
                isinstance(key, str) and key.startswith("P") and key[1:].isdigit() for key in output
            )
        ):
            return candidate
    return None


def _prefix_matches(model, prefix):
    matched = []
    for layer in model.layers:
        if layer.name.startswith(prefix):
            matched.append(layer)
        elif isinstance(layer, keras.Model):
            matched.extend(_prefix_matches(layer, prefix))
    return matched


def _select(model, layers):
    """The layers a selector names (see `freeze`)."""
    layers = check_layer_selector(layers)
    if layers == BACKBONE:
        head = set(head_layers(model))
        return _without_inputs(layer for layer in model.layers if layer.name not in head)
    if isinstance(layers, str):
        backbone = _find_backbone(model)
        if backbone is None:
            raise ValueError(
                f"Cannot freeze up to pyramid level {layers!r}: model '{model.name}' has no "
                "kcnn backbone (a model returning a dict of 'P<k>' feature maps). Freeze "
                "by a list of layer-name prefixes instead."
            )
        if layers not in backbone.output:
            raise ValueError(
                f"Cannot freeze up to pyramid level {layers!r}: the backbone "
                f"'{backbone.name}' has levels {sorted_levels(backbone.output)}."
            )
        # The sub-model from the input to that level holds exactly the layers computing it.
        return _without_inputs(keras.Model(backbone.input, backbone.output[layers]).layers)
    selected = []
    for prefix in layers:
        matched = _prefix_matches(model, prefix)
        if not matched:
            raise ValueError(
                f"The layer-name prefix {prefix!r} matches no layer of model '{model.name}'."
            )
        selected.extend(matched)
    return _without_inputs(selected)


def freeze(model, layers=BACKBONE):
    """Freezes part of `model` (`trainable = False`) for transfer learning.

    Call it before `model.compile`. Frozen `BatchNormalization` layers run in inference
    mode, with the statistics they were pretrained with.

    Args:
        model: a functional `keras.Model`.
        layers: what to freeze. Defaults to `"backbone"`.
            - `"backbone"`: every layer but the classification head (`head_layers`).
            - `"P<k>"`, e.g. `"P3"`: the layers of the kcnn backbone that compute pyramid
              level k and the levels below it; the deeper levels and the head still train.
            - a list of layer-name prefixes, e.g. `["block1", "block2"]` in VGG: the layers
              whose names start with one of them (a matching nested model as a whole).

    Returns:
        list of str: the names of the layers set untrainable.

    Raises:
        ValueError: for a selector of another form, a pyramid level the model lacks, or a
            prefix that matches no layer (the message names it).

    Example:

    >>> from kcnn.backbones import build_backbone
    >>> from kcnn.tasks import build_classifier
    >>> backbone = build_backbone("plain_cnn", (16, 16, 1), filters=(4, 8), convs_per_level=1)
    >>> model = build_classifier(backbone, num_classes=3)
    >>> freeze(model, "P0")
    ['level0_conv1', 'level0_conv1_bn', 'level0_conv1_act']
    >>> [weight.path for weight in model.trainable_weights]  # doctest: +NORMALIZE_WHITESPACE
    ['level1_conv1/kernel', 'level1_conv1_bn/gamma', 'level1_conv1_bn/beta',
     'predictions/kernel', 'predictions/bias']
    """
    selected = _select(model, layers)
    for layer in selected:
        layer.trainable = False
    return [layer.name for layer in selected]


def unfreeze(model, layers=None, keep_batch_norm_frozen=True):
    """Makes layers of `model` trainable again, e.g. to fine-tune after training a new head.

    Recompile the model afterwards, with a low learning rate (the Keras guide uses 1e-5
    with Adam), so the pretrained weights move little.

    Args:
        model: a functional `keras.Model`.
        layers: None for every layer, or a selector as in `freeze`. Defaults to None.
        keep_batch_norm_frozen: bool. Leave `BatchNormalization` layers untrainable, so
            they stay in inference mode (as the Keras transfer-learning guide advises: batch
            statistics of a small new data set would overwrite the pretrained ones).
            Defaults to `True`.

    Returns:
        list of str: the names of the layers set trainable.

    Example:

    >>> from kcnn.models.classic import LeNet5
    >>> model = LeNet5((32, 32, 1), num_classes=10)
    >>> _ = freeze(model, "backbone")
    >>> unfreeze(model, ["c5"])
    ['c5']
    """
    selected = _select(model, layers) if layers is not None else _without_inputs(model.layers)
    for layer in selected:
        # Each sublayer is set by itself: setting `trainable = True` on a model that is
        # already trainable leaves its frozen sublayers frozen (Keras 3.15). Keras has no
        # public list of a layer's sublayers (the BN inside a ResidualBlock).
        for sublayer in layer._flatten_layers():
            batch_norm = isinstance(sublayer, keras.layers.BatchNormalization)
            sublayer.trainable = not (keep_batch_norm_frozen and batch_norm)
    return [layer.name for layer in selected]


def _without_inputs(layers):
    return [layer for layer in layers if not isinstance(layer, keras.layers.InputLayer)]
