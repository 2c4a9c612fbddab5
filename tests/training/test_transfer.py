import re

import keras
import numpy as np
import pytest

import kcnn  # noqa: F401  (registers the kcnn layers, as a user's import would)
from kcnn.backbones import build_backbone
from kcnn.models import classic
from kcnn.tasks import build_classifier
from kcnn.training.transfer import (
    freeze,
    head_layers,
    load_pretrained,
    replace_head,
    unfreeze,
)

RNG = np.random.default_rng(0)
BACKBONE_ARGS = dict(filters=(4, 8), convs_per_level=1)


def classifier(num_classes, name="classifier", dropout=0.0):
    backbone = build_backbone("plain_cnn", (16, 16, 1), **BACKBONE_ARGS)
    return build_classifier(backbone, num_classes=num_classes, dropout=dropout, name=name)


def randomize(model):
    """Gives every weight random values, so a copied weight cannot equal a fresh one by luck
    (fresh BatchNormalization statistics are 0 and 1 in every model)."""
    model.set_weights([RNG.uniform(0.5, 1.5, w.shape).astype("float32") for w in model.weights])
    return model


def weights_of(model, name):
    return [np.asarray(w) for w in find_layer(model, name).get_weights()]


def find_layer(model, name):
    for layer in model.layers:
        if layer.name == name:
            return layer
        if isinstance(layer, keras.Model):
            try:
                return find_layer(layer, name)
            except KeyError:
                pass
    raise KeyError(name)


BACKBONE_LAYERS = ["level0_conv1", "level0_conv1_bn", "level1_conv1", "level1_conv1_bn"]


def assert_same_weights(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


def test_keras_file_loads_by_name_into_a_model_with_another_head(tmp_path):
    source = randomize(classifier(10, name="source"))
    path = tmp_path / "source.keras"
    source.save(path)
    target = classifier(3, name="target")
    fresh_head = weights_of(target, "predictions")

    report = load_pretrained(target, path)

    for name in BACKBONE_LAYERS:
        assert_same_weights(weights_of(target, name), weights_of(source, name))
    assert_same_weights(weights_of(target, "predictions"), fresh_head)
    assert report.loaded == BACKBONE_LAYERS
    assert report.skipped == {
        "predictions": "weights of shape [(8, 10), (10,)] in the checkpoint, [(8, 3), (3,)] here"
    }
    assert report.unused == []
    assert report.summary() == (
        f"loaded 4 of 5 layers from {path}; kept their own weights: predictions (weights of "
        "shape [(8, 10), (10,)] in the checkpoint, [(8, 3), (3,)] here)"
    )


def test_excluded_head_keeps_its_weights_even_when_shapes_match(tmp_path):
    source = randomize(classifier(3))
    path = tmp_path / "source.keras"
    source.save(path)
    target = classifier(3)
    fresh_head = weights_of(target, "predictions")
    report = load_pretrained(target, path, exclude=head_layers(target))
    assert report.skipped == {"predictions": "excluded"}
    assert_same_weights(weights_of(target, "predictions"), fresh_head)
    # Without the exclusion the head is loaded as well.
    report = load_pretrained(target, path)
    assert report.skipped == {}
    assert_same_weights(weights_of(target, "predictions"), weights_of(source, "predictions"))


def test_a_classifier_checkpoint_loads_into_its_bare_backbone(tmp_path):
    source = randomize(classifier(10))
    path = tmp_path / "classifier.keras"
    source.save(path)
    backbone = build_backbone("plain_cnn", (None, None, 1), **BACKBONE_ARGS)
    report = load_pretrained(backbone, path)
    assert report.loaded == BACKBONE_LAYERS and report.skipped == {}
    assert report.unused == ["predictions"]
    x = RNG.random((2, 16, 16, 1), dtype=np.float32)
    np.testing.assert_allclose(
        backbone(x)["P1"], source.get_layer("plain_cnn")(x)["P1"], rtol=1e-6, atol=1e-6
    )


def test_weights_file_loads_by_position_and_skips_a_mismatched_head(tmp_path):
    source = randomize(classic.LeNet5((32, 32, 1), num_classes=10))
    path = tmp_path / "lenet.weights.h5"
    source.save_weights(path)
    target = classic.LeNet5((32, 32, 1), num_classes=4)
    fresh_head = weights_of(target, "predictions")

    report = load_pretrained(target, path)

    assert report.loaded == ["c1", "c3", "c5", "head_fc1"]
    assert report.skipped == {
        "predictions": "no weights of these shapes at its position in the file"
    }
    for name in report.loaded:
        assert_same_weights(weights_of(target, name), weights_of(source, name))
    assert_same_weights(weights_of(target, "predictions"), fresh_head)


def test_bad_checkpoints_are_errors_that_name_the_file(tmp_path):
    target = classifier(3)
    before = [np.asarray(w) for w in target.weights]

    missing = tmp_path / "missing.keras"
    with pytest.raises(FileNotFoundError) as error:
        load_pretrained(target, missing)
    assert str(error.value) == f"No pretrained model or weights file at: {missing}"

    with pytest.raises(ValueError) as error:
        load_pretrained(target, tmp_path / "model.h5")
    assert str(error.value) == (
        "A pretrained checkpoint must be a '.keras' model file or a '.weights.h5' weights "
        f"file. Received: {tmp_path / 'model.h5'}"
    )

    unrelated = tmp_path / "lenet.keras"
    classic.LeNet5((32, 32, 1), num_classes=3).save(unrelated)
    with pytest.raises(ValueError) as error:
        load_pretrained(target, unrelated)
    assert str(error.value) == (
        f"No layer of {unrelated} matches a layer of model 'classifier' by name and weight "
        "shapes; nothing was loaded."
    )

    unrelated_weights = tmp_path / "lenet.weights.h5"
    randomize(classic.LeNet5((32, 32, 1), num_classes=3)).save_weights(unrelated_weights)
    with pytest.raises(ValueError) as error:
        load_pretrained(target, unrelated_weights)
    assert str(error.value) == (
        f"No layer of {unrelated_weights} matches a layer of model 'classifier' by position "
        "and weight shapes; nothing was loaded."
    )
    # A failed load leaves the model as it was (no NaN left from the position check).
    assert_same_weights([np.asarray(w) for w in target.weights], before)


def train_one_step(model, learning_rate=0.5):
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate), loss="sparse_categorical_crossentropy"
    )
    x = RNG.random((8, *model.input_shape[1:]), dtype=np.float32)
    y = np.arange(8) % model.output_shape[-1]
    model.train_on_batch(x, y)


def snapshot(model):
    return {w.path: np.asarray(w).copy() for w in model.weights}


def changed_weights(before, model):
    return sorted(w.path for w in model.weights if not np.array_equal(before[w.path], w))


def test_frozen_backbone_and_its_batch_norm_statistics_do_not_move():
    model = classifier(3)
    assert freeze(model, "backbone") == ["plain_cnn", "pool"]
    before = snapshot(model)
    train_one_step(model)
    assert changed_weights(before, model) == ["predictions/bias", "predictions/kernel"]


def test_frozen_batch_norm_runs_in_inference_mode():
    model = classifier(3)
    x = RNG.random((4, 16, 16, 1), dtype=np.float32)
    assert not np.allclose(model(x, training=True), model(x, training=False), atol=1e-4)
    freeze(model, "backbone")
    np.testing.assert_allclose(model(x, training=True), model(x, training=False), atol=1e-6)


def test_freezing_up_to_a_pyramid_level_trains_the_deeper_levels():
    model = classifier(3)
    assert freeze(model, "P0") == ["level0_conv1", "level0_conv1_bn", "level0_conv1_act"]
    before = snapshot(model)
    train_one_step(model)
    assert changed_weights(before, model) == [
        "level1_conv1/kernel",
        "level1_conv1_bn/beta",
        "level1_conv1_bn/gamma",
        "level1_conv1_bn/moving_mean",
        "level1_conv1_bn/moving_variance",
        "predictions/bias",
        "predictions/kernel",
    ]


def test_freezing_by_layer_name_prefixes():
    model = classic.VGG11((32, 32, 3), num_classes=3, width=0.0625, dropout=0.0)
    frozen = freeze(model, ["block1", "block2"])
    assert frozen == ["block1_conv1", "block1_pool", "block2_conv1", "block2_pool"]
    before = snapshot(model)
    train_one_step(model, learning_rate=0.05)
    changed = changed_weights(before, model)
    assert not [path for path in changed if path.startswith(("block1", "block2"))]
    assert "block3_conv1/kernel" in changed and "predictions/kernel" in changed


def test_unfreeze_keeps_batch_norm_in_inference_mode_unless_told():
    model = classifier(3)
    freeze(model, "backbone")
    assert unfreeze(model) == ["plain_cnn", "pool", "predictions"]
    trainable = {layer.name: layer.trainable for layer in model.get_layer("plain_cnn").layers}
    assert trainable["level0_conv1"] and trainable["level1_conv1"]
    assert not trainable["level0_conv1_bn"] and not trainable["level1_conv1_bn"]
    unfreeze(model, keep_batch_norm_frozen=False)
    assert all(layer.trainable for layer in model.get_layer("plain_cnn").layers)


@pytest.mark.parametrize(
    "model_fn, layers, message",
    [
        (
            lambda: classifier(3),
            "head",
            '`layers` must be "backbone", a pyramid level such as "P3", or a non-empty list '
            "of layer-name prefixes. Received: layers='head'",
        ),
        (
            lambda: classifier(3),
            [],
            '`layers` must be "backbone", a pyramid level such as "P3", or a non-empty list '
            "of layer-name prefixes. Received: layers=[]",
        ),
        (
            lambda: classifier(3),
            "P4",
            "Cannot freeze up to pyramid level 'P4': the backbone 'plain_cnn' has levels "
            "['P0', 'P1'].",
        ),
        (
            lambda: classic.LeNet5((32, 32, 1), 10),
            "P2",
            "Cannot freeze up to pyramid level 'P2': model 'lenet5' has no kcnn backbone (a "
            "model returning a dict of 'P<k>' feature maps). Freeze by a list of layer-name "
            "prefixes instead.",
        ),
        (
            lambda: classic.LeNet5((32, 32, 1), 10),
            ["c1", "conv9"],
            "The layer-name prefix 'conv9' matches no layer of model 'lenet5'.",
        ),
    ],
)
def test_bad_freeze_selectors_are_named(model_fn, layers, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        freeze(model_fn(), layers)


def test_replaced_head_has_the_new_classes_and_keeps_the_features():
    model = randomize(classic.LeNet5((32, 32, 1), num_classes=10))
    new = replace_head(model, num_classes=3)
    assert new.output_shape == (None, 3) and new.name == "lenet5"
    assert [w.shape for w in new.get_layer("predictions").weights] == [(84, 3), (3,)]
    for name in ("c1", "c3", "c5", "head_fc1"):
        assert new.get_layer(name) is model.get_layer(name)
        assert_same_weights(weights_of(new, name), weights_of(model, name))
    # The new head is freshly initialised: its bias is zero, the old one was randomised.
    np.testing.assert_array_equal(new.get_layer("predictions").bias, np.zeros(3))
    x = RNG.random((2, 32, 32, 1), dtype=np.float32)
    features = keras.Model(model.input, model.get_layer("head_fc1").output)
    kernel, bias = weights_of(new, "predictions")
    logits = np.asarray(features(x), np.float64) @ kernel + bias
    expected = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(new(x), expected, atol=1e-5)


def test_replacing_a_fully_convolutional_head_and_auxiliary_heads(tmp_path):
    model = classic.LeNet5((32, 32, 1), num_classes=10, fully_convolutional=True)
    new = replace_head(model, num_classes=4)
    assert new.get_layer("head_scores").filters == 4
    assert new(np.zeros((1, 40, 40, 1), np.float32)).shape == (1, 4)
    googlenet = classic.GoogLeNet((96, 96, 3), num_classes=10, aux_heads=True, width=0.125)
    new = replace_head(googlenet, num_classes=4)
    assert new.output_names == ["predictions", "aux1_predictions", "aux2_predictions"]
    assert [tuple(shape) for shape in new.output_shape] == [(None, 4)] * 3
    path = tmp_path / "googlenet.keras"
    new.save(path)
    x = RNG.random((1, 96, 96, 3), dtype=np.float32)
    for restored, original in zip(keras.saving.load_model(path)(x), new(x), strict=True):
        np.testing.assert_allclose(restored, original, atol=1e-6)


def test_replace_head_errors():
    with pytest.raises(
        ValueError, match=re.escape("`num_classes` must be an int >= 2. Received: num_classes=1")
    ):
        replace_head(classic.LeNet5((32, 32, 1), 10), num_classes=1)
    inputs = keras.Input((4,))
    x = keras.layers.Dense(3)(inputs)
    outputs = keras.layers.BatchNormalization(name="scores_bn")(x)
    with pytest.raises(ValueError) as error:
        replace_head(keras.Model(inputs, outputs), num_classes=3)
    assert str(error.value) == (
        "The classifier layer 'scores_bn' must be Dense or Conv2D to be replaced. Received: "
        "BatchNormalization"
    )
