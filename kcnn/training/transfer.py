"""Transfer learning: load pretrained weights, freeze by stage, replace the classification head.

The workflow of Keras's transfer-learning guide (keras.io/guides/transfer_learning) for
any kcnn model, backbone or classic network, from local files only:

    model = build_classifier(build_backbone("plain_cnn", (28, 28, 1)), num_classes=10)
    report = load_pretrained(model, "runs/fashion/model.keras", exclude=head_layers(model))
    freeze(model, "backbone")           # train the new head only
    model.compile(...); model.fit(...)

In a config, `model.pretrained`, `model.pretrained_head` and `model.freeze` do the same (see
`kcnn.training.config.ModelConfig`). Frozen layers are set `trainable = False`; a frozen
`BatchNormalization` layer then runs in inference mode (Keras 3), so fine-tuning never
overwrites the statistics it was pretrained with.
"""

import dataclasses
import os
import warnings

import keras
import numpy as np

from kcnn.training.freezing import check_layer_selector, freeze, head_chain, head_layers, unfreeze
from kcnn.training.messages import log

__all__ = [
    "PRETRAINED_SUFFIXES",
    "TransferReport",
    "apply_transfer",
    "check_layer_selector",
    "check_pretrained_path",
    "freeze",
    "head_layers",
    "load_pretrained",
    "replace_head",
    "unfreeze",
]

PRETRAINED_SUFFIXES = (".keras", ".weights.h5")


@dataclasses.dataclass
class TransferReport:
    """What `load_pretrained` copied.

    Attributes:
        path: str. The checkpoint.
        loaded: list of str. Layers of the model that received the checkpoint's weights.
        skipped: dict str -> str. Layers with weights that kept their own, and why.
        unused: list of str. Layers of a `.keras` checkpoint that went nowhere.
    """

    path: str
    loaded: list
    skipped: dict
    unused: list

    def summary(self):
        """One line: how many layers were loaded, and which were skipped and why."""
        line = f"loaded {len(self.loaded)} of {len(self.loaded) + len(self.skipped)} layers"
        line += f" from {self.path}"
        if self.skipped:
            line += "; kept their own weights: " + ", ".join(
                f"{name} ({reason})" for name, reason in self.skipped.items()
            )
        return line


def check_pretrained_path(path):
    """Returns `path` as a str if it names a `.keras` or `.weights.h5` file.

    Raises:
        ValueError: if the suffix is neither.
    """
    path = os.fspath(path)
    if not path.endswith(PRETRAINED_SUFFIXES):
        raise ValueError(
            "A pretrained checkpoint must be a '.keras' model file or a '.weights.h5' "
            f"weights file. Received: {path}"
        )
    return path


def _weighted_layers(model, prefix=""):
    """Yields `(path, layer)` for every layer holding weights, inside nested models too.

    A layer made of sublayers (`InceptionModule`, `ResidualBlock`) counts as one layer;
    a nested model (a backbone inside a classifier) is walked into.
    """
    for layer in model.layers:
        path = f"{prefix}{layer.name}"
        if isinstance(layer, keras.Model):
            yield from _weighted_layers(layer, f"{path}/")
        elif layer.weights:
            yield path, layer


def _layers_by_key(model):
    """{key: layer} for the layers with weights: the layer name, or its path through nested
    models where a name occurs more than once."""
    pairs = list(_weighted_layers(model))
    counts = {}
    for _, layer in pairs:
        counts[layer.name] = counts.get(layer.name, 0) + 1
    return {(layer.name if counts[layer.name] == 1 else path): layer for path, layer in pairs}


def _shapes(layer):
    return [tuple(weight.shape) for weight in layer.weights]


def _copy_by_name(source, model, exclude):
    loaded, skipped = [], {}
    source_layers = _layers_by_key(source)
    used = set()
    for key, layer in _layers_by_key(model).items():
        if key in exclude or layer.name in exclude:
            skipped[key] = "excluded"
        elif key not in source_layers:
            skipped[key] = "not in the checkpoint"
        elif _shapes(source_layers[key]) != _shapes(layer):
            skipped[key] = (
                f"weights of shape {_shapes(source_layers[key])} in the checkpoint, "
                f"{_shapes(layer)} here"
            )
            used.add(key)
        else:
            layer.set_weights(source_layers[key].get_weights())
            loaded.append(key)
            used.add(key)
    unused = [key for key in source_layers if key not in used]
    return loaded, skipped, unused


def _load_by_position(model, path, exclude):
    """Loads a `.weights.h5` file and tells which layers it filled.

    Such a file holds no layer names: Keras stores each layer's weights under its position
    in the model (`layers/conv2d_1/vars/0`) and loads them back by position, skipping a
    layer whose shapes differ with `skip_mismatch=True`. Keras has no public way to say
    which layers it skipped, so every float weight is first set to NaN: a layer that still
    holds a NaN afterwards was not (fully) loaded and gets its own weights back.
    """
    layers = _layers_by_key(model)
    originals = {key: layer.get_weights() for key, layer in layers.items()}
    for layer in layers.values():
        for weight in layer.weights:
            if np.issubdtype(np.dtype(weight.dtype), np.floating):
                weight.assign(np.full(weight.shape, np.nan, dtype=weight.dtype))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the mismatches are reported below instead
        model.load_weights(path, skip_mismatch=True)
    loaded, skipped = [], {}
    for key, layer in layers.items():
        filled = not any(np.isnan(value).any() for value in _float_values(layer))
        if key in exclude or layer.name in exclude:
            skipped[key] = "excluded"
        elif not filled:
            skipped[key] = "no weights of these shapes at its position in the file"
        else:
            loaded.append(key)
            continue
        layer.set_weights(originals[key])
    return loaded, skipped


def _float_values(layer):
    return [
        np.asarray(value)
        for value in layer.get_weights()
        if np.issubdtype(np.asarray(value).dtype, np.floating)
    ]


def load_pretrained(model, path, exclude=()):
    """Copies the weights of a local checkpoint into `model`, layer by layer.

    Nothing is downloaded. A `.keras` file (what `model.save` and `kcnn train` write) is
    loaded, and each of its layers is matched to the layer of `model` with the same name
    (inside nested models too: the backbone of a classifier), so the two models may differ:
    another head, another input size, extra or missing layers. A layer whose weight shapes
    differ keeps its own weights. A `.weights.h5` file (what `model.save_weights` writes)
    holds no layer names, so Keras matches its weights to layers by position: it fits the
    architecture that wrote it, with any head.

    Args:
        model: a built `keras.Model`.
        path: str or Path of a local `.keras` or `.weights.h5` file.
        exclude: iterable of layer names that keep their own weights, e.g.
            `head_layers(model)` for a fresh classification head. Defaults to `()`.

    Returns:
        A `TransferReport` naming the layers loaded and skipped (with the reason).

    Raises:
        ValueError: if `path` is neither a `.keras` nor a `.weights.h5` file, or if no layer
            of the checkpoint matches a layer of `model` (nothing would be loaded).
        FileNotFoundError: if there is no file at `path`.

    Example:

    >>> import tempfile
    >>> from kcnn.backbones import build_backbone
    >>> from kcnn.tasks import build_classifier
    >>> source = build_classifier(build_backbone("plain_cnn", (16, 16, 1), filters=(4, 8)), 10)
    >>> path = os.path.join(tempfile.mkdtemp(), "source.keras")
    >>> source.save(path)
    >>> target = build_classifier(build_backbone("plain_cnn", (16, 16, 1), filters=(4, 8)), 3)
    >>> report = load_pretrained(target, path)
    >>> len(report.loaded), report.skipped["predictions"]
    (8, 'weights of shape [(8, 10), (10,)] in the checkpoint, [(8, 3), (3,)] here')
    """
    path = check_pretrained_path(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No pretrained model or weights file at: {path}")
    exclude = set(exclude)
    if path.endswith(".keras"):
        source = keras.saving.load_model(path, compile=False)
        loaded, skipped, unused = _copy_by_name(source, model, exclude)
        matched_by = "name"
    else:
        loaded, skipped = _load_by_position(model, path, exclude)
        unused, matched_by = [], "position"
    if not loaded:
        raise ValueError(
            f"No layer of {path} matches a layer of model '{model.name}' by {matched_by} and "
            "weight shapes; nothing was loaded."
        )
    return TransferReport(path, loaded, skipped, unused)


def replace_head(model, num_classes):
    """A model with the same layers and a fresh classification head for `num_classes`.

    Each output's classifier (see `head_layers`), a `Dense` or a `Conv2D` layer, is rebuilt
    from its config with `num_classes` units or filters and new weights; the weightless
    layers after it (global pooling, softmax) are rebuilt as they were. Every other layer
    is shared with `model`, weights included, so `freeze(new_model, "backbone")` freezes the
    pretrained features.

    Args:
        model: a functional classification `keras.Model`.
        num_classes: int >= 2.

    Returns:
        A functional `keras.Model` with the same inputs, name and number of outputs.

    Raises:
        ValueError: if `num_classes` is not an int >= 2 or a classifier layer is neither
            `Dense` nor `Conv2D`.

    Example:

    >>> from kcnn.models.classic import LeNet5
    >>> replace_head(LeNet5((32, 32, 1), num_classes=10), num_classes=3).output_shape
    (None, 3)
    """
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ValueError(f"`num_classes` must be an int >= 2. Received: num_classes={num_classes}")
    outputs = []
    for output in model.outputs:
        chain = head_chain(output)
        classifier = chain[-1]
        config = classifier.get_config()
        if isinstance(classifier, keras.layers.Dense):
            config["units"] = num_classes
        elif isinstance(classifier, keras.layers.Conv2D):
            config["filters"] = num_classes
        else:
            raise ValueError(
                f"The classifier layer '{classifier.name}' must be Dense or Conv2D to be "
                f"replaced. Received: {type(classifier).__name__}"
            )
        x = type(classifier).from_config(config)(classifier.input)
        for layer in reversed(chain[:-1]):
            x = type(layer).from_config(layer.get_config())(x)
        outputs.append(x)
    return keras.Model(model.input, outputs if len(outputs) > 1 else outputs[0], name=model.name)


def apply_transfer(model, model_config):
    """Loads `model_config.pretrained` into `model` and freezes `model_config.freeze`.

    The classification head keeps its fresh weights unless `model_config.pretrained_head`.

    Returns:
        A dict for `metrics.json`: the checkpoint, the layers loaded, skipped and frozen.
    """
    record = {}
    if model_config.pretrained is not None:
        exclude = () if model_config.pretrained_head else head_layers(model)
        report = load_pretrained(model, model_config.pretrained, exclude=exclude)
        log(f"pretrained: {report.summary()}")
        record["pretrained"] = {
            "path": report.path,
            "loaded_layers": report.loaded,
            "skipped_layers": report.skipped,
        }
    if model_config.freeze is not None:
        record["frozen_layers"] = freeze(model, model_config.freeze)
        trainable = int(sum(np.prod(weight.shape) for weight in model.trainable_weights))
        log(
            f"frozen: {len(record['frozen_layers'])} layers ({model_config.freeze}); "
            f"{trainable:,} of {model.count_params():,} parameters train"
        )
        record["trainable_params"] = trainable
    return record
