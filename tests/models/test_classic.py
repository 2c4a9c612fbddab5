import math
import re

import keras
import numpy as np
import pytest

import kcnn  # noqa: F401  (registers the kcnn layers, as a user's import would)
from kcnn.analysis import analyze
from kcnn.models import classic
from kcnn.models.registry import get_model_entry

from ..layers import citizenship

RNG = np.random.default_rng(0)

# (registered name, task, small keyword arguments): every builder at a size a test can train.
SMALL = [
    ("lenet5", "classification", dict(input_shape=(32, 32, 1))),
    ("alexnet", "classification", dict(input_shape=(64, 64, 3), width=0.125)),
    ("vgg11", "classification", dict(input_shape=(32, 32, 3), width=0.125)),
    ("vgg13", "classification", dict(input_shape=(32, 32, 3), width=0.125)),
    ("vgg16", "classification", dict(input_shape=(32, 32, 3), width=0.125)),
    ("vgg19", "classification", dict(input_shape=(32, 32, 3), width=0.125)),
    ("googlenet", "classification", dict(input_shape=(32, 32, 3), width=0.125)),
    ("classic_resnet18", "classification", dict(input_shape=(32, 32, 3), width=0.125)),
    ("classic_resnet34", "classification", dict(input_shape=(32, 32, 3), width=0.125)),
    ("classic_resnet50", "classification", dict(input_shape=(32, 32, 3), width=0.125)),
    ("classic_resnet101", "classification", dict(input_shape=(32, 32, 3), width=0.125)),
    ("classic_resnet152", "classification", dict(input_shape=(32, 32, 3), width=0.125)),
    (
        "deconvnet",
        "segmentation",
        dict(input_shape=(32, 32, 3), width=0.0625, fc_kernel_size=1),
    ),
]

# (builder, keyword arguments, count_params(), trainable parameters) at ImageNet settings.
IMAGENET = [
    # LeCun et al. 1998 with full C3 connections: 156 + 2,416 + 48,120 + 10,164 + 850.
    (classic.LeNet5, dict(input_shape=(32, 32, 1), num_classes=10), 61_706, 61_706),
    # Caffe's bvlc_alexnet, grouped conv2, conv4 and conv5.
    (classic.AlexNet, {}, 60_965_224, 60_965_224),
    (classic.AlexNet, dict(single_stream=True), 62_378_344, 62_378_344),
    (classic.AlexNet, dict(fully_convolutional=True), 60_965_224, 60_965_224),
    # The figures of keras.applications and torchvision.
    (classic.VGG11, {}, 132_863_336, 132_863_336),
    (classic.VGG13, {}, 133_047_848, 133_047_848),
    (classic.VGG16, {}, 138_357_544, 138_357_544),
    (classic.VGG19, {}, 143_667_240, 143_667_240),
    (classic.VGG16, dict(fully_convolutional=True), 138_357_544, 138_357_544),
    # Table 1's filters with biases (its "params" column sums to 6.8M; see the docstring).
    (classic.GoogLeNet, {}, 6_998_552, 6_998_552),
    (classic.GoogLeNet, dict(aux_heads=True), 13_378_280, 13_378_280),
    # torchvision's counts are the trainable ones; Keras adds the BN moving statistics.
    (classic.ResNet18, {}, 11_699_112, 11_689_512),
    (classic.ResNet34, {}, 21_814_696, 21_797_672),
    (classic.ResNet50, {}, 25_610_152, 25_557_032),
    (classic.ResNet101, {}, 44_654_504, 44_549_160),
    (classic.ResNet152, {}, 60_344_232, 60_192_808),
    # The paper's 21 PASCAL VOC classes.
    (classic.DeconvNet, dict(num_classes=21), 251_822_357, 251_788_949),
]


def build_small(name, num_classes=10, **overrides):
    _, _, kwargs = next(entry for entry in SMALL if entry[0] == name)
    return get_model_entry(name).builder(num_classes=num_classes, **(kwargs | overrides))


def images(model, batch=2, size=None):
    shape = model.input_shape[1:]
    if size is not None:
        shape = (size, size, shape[-1])
    return RNG.random((batch, *shape), dtype=np.float32)


@pytest.mark.parametrize("builder, kwargs, total, trainable", IMAGENET)
def test_imagenet_parameter_counts(builder, kwargs, total, trainable):
    keras.backend.clear_session()
    arguments = dict(input_shape=(224, 224, 3), num_classes=1000) | kwargs
    # A stateless scope that never initializes its variables: the model and every weight
    # shape are built as usual, without allocating up to 1 GB of random numbers.
    with keras.StatelessScope(initialize_variables=False):
        model = builder(**arguments)
        assert model.count_params() == total
        assert sum(math.prod(weight.shape) for weight in model.trainable_weights) == trainable
    keras.backend.clear_session()


def test_alexnet_is_split_in_two_groups_like_the_paper():
    with keras.StatelessScope(initialize_variables=False):
        model = classic.AlexNet((224, 224, 3), 1000)
        kernels = {
            layer.name: tuple(layer.kernel.shape)
            for layer in model.layers
            if "conv" in layer.name and hasattr(layer, "kernel")
        }
        sizes = {layer.name: tuple(layer.output.shape[1:]) for layer in model.layers}
    keras.backend.clear_session()
    # conv2, conv4 and conv5 see the 48, 192 and 192 maps of their own GPU.
    assert kernels == {
        "conv1": (11, 11, 3, 96),
        "conv2": (5, 5, 48, 256),
        "conv3": (3, 3, 256, 384),
        "conv4": (3, 3, 192, 384),
        "conv5": (3, 3, 192, 256),
    }
    # The paper's map sizes: 55, 27, 13, 6.
    assert sizes["conv1"] == (55, 55, 96) and sizes["pool1"] == (27, 27, 96)
    assert sizes["pool2"] == (13, 13, 256) and sizes["pool5"] == (6, 6, 256)


@pytest.mark.parametrize("name, task, kwargs", SMALL, ids=[entry[0] for entry in SMALL])
def test_small_model_trains_one_step_and_is_fully_analysed(name, task, kwargs):
    keras.backend.clear_session()
    entry = get_model_entry(name, task)
    num_classes = 4 if task == "segmentation" else 10
    model = entry.builder(num_classes=num_classes, **kwargs)
    x = images(model)
    if task == "segmentation":
        assert model.output_shape == (None, *x.shape[1:3], num_classes)
        y = RNG.integers(0, num_classes, x.shape[:3])
    else:
        assert model.output_shape == (None, num_classes)
        y = np.array([0, 1])
    probabilities = np.asarray(model(x, training=False))
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-5)

    analysis = analyze(model)
    assert analysis.total_params == model.count_params()
    assert analysis.unknown_layers == []
    assert analysis.total_macs > 0

    # Eager: one step of ResNet-152 takes 1 s eagerly and 15 s to trace as a graph.
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss="sparse_categorical_crossentropy",
        run_eagerly=True,
    )
    before = [np.array(weight) for weight in model.trainable_weights]
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    changed = [
        not np.array_equal(a, b) for a, b in zip(before, model.trainable_weights, strict=True)
    ]
    assert sum(changed) >= 0.9 * len(changed)
    keras.backend.clear_session()


def test_graph_mode_training_and_keras_file_round_trip(tmp_path):
    keras.backend.clear_session()
    model = build_small("classic_resnet18")
    x = images(model, batch=4)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)  # else fit traces its step twice
    history = model.fit(x, np.array([0, 1, 2, 3]), epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    path = tmp_path / "resnet.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(
        restored.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6
    )


def test_googlenet_and_alexnet_keras_file_round_trip(tmp_path):
    for name in ("googlenet", "alexnet"):
        keras.backend.clear_session()
        model = build_small(name)
        x = images(model)
        path = tmp_path / f"{name}.keras"
        model.save(path)
        restored = keras.saving.load_model(path)
        np.testing.assert_allclose(restored(x), model(x), atol=1e-6)


def test_alexnet_groups_and_lrn_convert_to_tflite_builtins(tmp_path):
    keras.backend.clear_session()
    model = build_small("alexnet")
    citizenship.check_tflite_builtins(model, images(model, batch=1), tmp_path, atol=1e-5)


def dense_to_convolutional(dense_model, conv_model):
    """Copies weights, reshaping dense kernels to the convolution kernels of the same layer."""
    weights = [
        np.reshape(np.asarray(source), target.shape)
        for source, target in zip(dense_model.weights, conv_model.weights, strict=True)
    ]
    conv_model.set_weights(weights)


@pytest.mark.parametrize(
    "builder, kwargs, larger",
    [
        (classic.LeNet5, dict(input_shape=(32, 32, 1)), 44),
        (classic.AlexNet, dict(input_shape=(67, 67, 3), width=0.125), 99),
        (classic.VGG11, dict(input_shape=(64, 64, 3), width=0.125), 96),
    ],
)
def test_fully_convolutional_equals_the_dense_model_and_takes_larger_images(
    builder, kwargs, larger
):
    keras.backend.clear_session()
    dense = builder(num_classes=5, **kwargs)
    convolutional = builder(num_classes=5, fully_convolutional=True, **kwargs)
    assert convolutional.input_shape == (None, None, None, kwargs["input_shape"][-1])
    assert convolutional.count_params() == dense.count_params()
    dense_to_convolutional(dense, convolutional)
    x = images(dense)
    np.testing.assert_allclose(convolutional(x), dense(x), atol=1e-5)
    bigger = images(dense, size=larger)
    probabilities = np.asarray(convolutional(bigger))
    assert probabilities.shape == (2, 5)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-5)
    # The score map is larger than 1x1 and averaged: more than one window contributes.
    scores = convolutional.get_layer("head_scores").output
    score_map = keras.Model(convolutional.input, scores)(bigger)
    assert score_map.shape[1] > 1 and score_map.shape[2] > 1
    analysis = analyze(convolutional, input_shape=(larger, larger, kwargs["input_shape"][-1]))
    assert analysis.total_params == convolutional.count_params()
    assert analysis.unknown_layers == []


def test_fully_convolutional_head_alone():
    inputs = keras.Input((None, None, 6))
    outputs = classic.fully_convolutional_head(inputs, 3, hidden_units=(4,), window=2)
    model = keras.Model(inputs, outputs)
    x = RNG.random((2, 5, 7, 6), dtype=np.float32)
    # By hand: 2x2 valid conv + ReLU, 1x1 conv, average of the 4x6 score map, softmax.
    kernel, bias, score_kernel, score_bias = (np.asarray(w, np.float64) for w in model.weights)
    hidden = np.zeros((2, 4, 6, 4))
    for i in range(4):
        for j in range(6):
            window = x[:, i : i + 2, j : j + 2, :].reshape(2, -1)
            hidden[:, i, j] = np.maximum(window @ kernel.reshape(-1, 4) + bias, 0)
    scores = (hidden @ score_kernel.reshape(4, 3) + score_bias).mean(axis=(1, 2))
    expected = np.exp(scores) / np.exp(scores).sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(model(x), expected, atol=1e-5)


def test_googlenet_auxiliary_heads_add_weighted_losses():
    keras.backend.clear_session()
    model = classic.GoogLeNet((96, 96, 3), num_classes=5, aux_heads=True, width=0.125)
    assert model.output_names == ["predictions", "aux1_predictions", "aux2_predictions"]
    x, y = images(model, batch=4), np.array([0, 1, 2, 3])
    model.compile(
        optimizer=keras.optimizers.SGD(0.01),
        loss=["sparse_categorical_crossentropy"] * 3,
        loss_weights=[1.0, classic.AUX_LOSS_WEIGHT, classic.AUX_LOSS_WEIGHT],
        run_eagerly=True,
    )
    main, aux1, aux2 = (np.asarray(p, np.float64) for p in model(x, training=False))
    losses = [-np.log(p[np.arange(4), y]).mean() for p in (main, aux1, aux2)]
    expected = losses[0] + 0.3 * (losses[1] + losses[2])
    assert classic.AUX_LOSS_WEIGHT == 0.3
    total = model.evaluate(x, (y, y, y), verbose=0, return_dict=True)["loss"]
    assert total == pytest.approx(expected, rel=1e-4)
    assert total > losses[0] * 1.2  # the auxiliary losses do count
    model.train_on_batch(x, (y, y, y))
    # At inference the main classifier alone, with the trained (shared) weights.
    classifier = classic.without_aux_heads(model)
    assert classifier.output_shape == (None, 5)
    assert classifier.count_params() < model.count_params()
    np.testing.assert_allclose(classifier(x), model(x)[0], atol=1e-6)


def test_deconvnet_restores_odd_sizes():
    keras.backend.clear_session()
    model = classic.DeconvNet((35, 37, 3), num_classes=3, width=0.0625, fc_kernel_size=1)
    probabilities = np.asarray(model(RNG.random((1, 35, 37, 3), dtype=np.float32)))
    assert probabilities.shape == (1, 35, 37, 3)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-5)
    # The paper's 7x7 fc6 turns the 7x7 pool5 map of a 224 image into 1x1 and back.
    with keras.StatelessScope(initialize_variables=False):
        paper = classic.DeconvNet((224, 224, 3), num_classes=21)
        assert paper.get_layer("fc6").output.shape == (None, 1, 1, 4096)
        assert paper.get_layer("deconv_fc6").output.shape == (None, 7, 7, 512)
        assert paper.get_layer("unpool1").output.shape == (None, 224, 224, 64)
    keras.backend.clear_session()


def test_lenet_options():
    keras.backend.clear_session()
    relu_max = classic.LeNet5((32, 32, 3), 10, activation="relu", pooling="max")
    assert relu_max.get_layer("c1").activation is keras.activations.relu
    assert isinstance(relu_max.get_layer("s2"), keras.layers.MaxPooling2D)
    assert relu_max.count_params() == 61_706 + 6 * 25 * 2  # C1 sees 3 channels
    tanh_average = classic.LeNet5((32, 32, 1), 10)
    assert isinstance(tanh_average.get_layer("s4"), keras.layers.AveragePooling2D)


def test_registry_entries():
    names = [entry[0] for entry in SMALL]
    for name, task, _ in SMALL:
        assert get_model_entry(name, task).uses_backbone is False
    assert len(set(names)) == len(names) == 13


@pytest.mark.parametrize(
    "builder, kwargs, message",
    [
        (
            classic.LeNet5,
            dict(input_shape=(28, 28, 1), num_classes=10),
            "`input_shape` must have a height and width of at least 32: C5, a 5x5 "
            "convolution, needs the 5x5 maps of S4. Received: input_shape=(28, 28, 1)",
        ),
        (
            classic.LeNet5,
            dict(input_shape=(32, 32, 1), num_classes=10, pooling="median"),
            "`pooling` must be one of ('average', 'max'). Received: pooling='median'",
        ),
        (
            classic.AlexNet,
            dict(input_shape=(32, 32, 3), num_classes=10),
            "`input_shape` must have a height and width of at least 63",
        ),
        (
            classic.VGG16,
            dict(input_shape=(32, 32, 3), num_classes=1),
            "`num_classes` must be an int >= 2. Received: num_classes=1",
        ),
        (
            classic.VGG16,
            dict(input_shape=(32, 32, 3), num_classes=10, width=0),
            "`width` must be a positive number. Received: width=0",
        ),
        (
            classic.VGG16,
            dict(input_shape=(32, 32), num_classes=10),
            "`input_shape` must be a tuple (height, width, channels) of positive ints, with "
            "height and width possibly None. Received: input_shape=(32, 32)",
        ),
        (
            classic.GoogLeNet,
            dict(input_shape=(None, None, 3), num_classes=10, aux_heads=True),
            "`input_shape` must have a known height and width with `aux_heads=True`",
        ),
        (
            classic.GoogLeNet,
            dict(input_shape=(64, 64, 3), num_classes=10, aux_heads=True),
            "`input_shape` must have a height and width of at least 65",
        ),
        (
            classic.GoogLeNet,
            dict(input_shape=(64, 64, 3), num_classes=10, dropout=1.0),
            "`dropout` must be a float in [0, 1). Received: dropout=1.0",
        ),
        (
            classic.DeconvNet,
            dict(input_shape=(64, 64, 3), num_classes=10),
            "`input_shape` must have a height and width of at least 224",
        ),
        (
            classic.DeconvNet,
            dict(input_shape=(64, 64, 3), num_classes=10, fc_kernel_size=0),
            "`fc_kernel_size` must be a positive int. Received: fc_kernel_size=0",
        ),
    ],
)
def test_bad_arguments(builder, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        builder(**kwargs)
