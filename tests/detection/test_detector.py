import math

import keras
import keras_hub
import numpy as np
import pytest

import kcnn  # noqa: F401  (registers the kcnn layers, as a user's import would)
from kcnn.backbones import build_backbone
from kcnn.detection import DetectionLoss, Detector, RetinaNet, anchor_points, decode_distances
from kcnn.layers import DeformableConv2D

from ..backbones.tiny import TINY as TINY_BACKBONES

SIZE = 64
TINY = dict(neck_filters=8, head_filters=8)


def plain_backbone(convs_per_level=2):
    return build_backbone(
        "plain_cnn",
        input_shape=(SIZE, SIZE, 3),
        filters=(8, 16, 32, 64),
        convs_per_level=convs_per_level,
    )


def resnet_backbone():
    return build_backbone(
        "resnet18",
        input_shape=(SIZE, SIZE, 3),
        stackwise_num_filters=[64, 16, 16, 16],  # keras-hub requires 64 in the first stack
        stackwise_num_blocks=[1, 1, 1, 1],
    )


def images(count, seed=0):
    return np.random.default_rng(seed).random((count, SIZE, SIZE, 3)).astype("float32")


@pytest.mark.parametrize(
    "backbone_fn, levels, strides",
    [(plain_backbone, ("P2", "P3"), (4, 8)), (resnet_backbone, ("P3", "P4", "P5"), (8, 16, 32))],
)
def test_output_shape_and_layout(backbone_fn, levels, strides):
    model = Detector(backbone_fn(), num_classes=3, levels=levels, **TINY)
    points = sum((SIZE // s) ** 2 for s in strides)
    assert model.output_shape == (None, points, 7)
    assert anchor_points(SIZE, strides)[0].shape == (points, 2)
    outputs = np.asarray(model(images(2), training=False))
    assert outputs.shape == (2, points, 7) and outputs.dtype == np.float32
    assert np.all(outputs[..., :4] > 0)  # softplus distances

    # Flattening is row-major per level, finest level first: the same order as
    # anchor_points. Compare with the per-level maps before flattening.
    names = [f"head_{level}_concat" for level in levels]
    per_level = keras.Model(model.input, [model.get_layer(name).output for name in names])
    start = 0
    for level_map in per_level(images(2), training=False):
        level_map = np.asarray(level_map)
        _, rows, columns, channels = level_map.shape
        for row, column in ((0, 0), (0, columns - 1), (rows - 1, 0), (rows - 1, columns - 1)):
            np.testing.assert_allclose(
                outputs[:, start + row * columns + column], level_map[:, row, column], atol=1e-6
            )
        start += rows * columns
    assert start == points


def test_head_initialisation_and_shared_weights():
    model = Detector(plain_backbone(), num_classes=2, levels=("P2", "P3"), head_convs=3, **TINY)
    bias = model.get_layer("head_class_logits").bias.numpy()
    np.testing.assert_allclose(bias, [math.log(0.01) - math.log(0.99)] * 2, rtol=1e-6)
    # One set of head conv weights for all levels, a batch norm per level.
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    head_convs = [layer for layer in convs if layer.name.startswith("head_")]
    assert sorted(layer.name for layer in head_convs) == sorted(
        [f"head_class_conv{i}" for i in (1, 2, 3)]
        + [f"head_box_conv{i}" for i in (1, 2, 3)]
        + ["head_class_logits", "head_box_distances"]
    )
    norms = [layer.name for layer in model.layers if layer.name.endswith("_bn")]
    assert "head_box_conv2_P2_bn" in norms and "head_box_conv2_P3_bn" in norms


def test_keras_file_round_trip(tmp_path):
    model = Detector(plain_backbone(), num_classes=2, levels=("P2", "P3"), **TINY)
    x = images(2)
    path = tmp_path / "detector.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(
        restored(x, training=False), model(x, training=False), atol=1e-6, rtol=0
    )


def test_deformable_head_builds_runs_and_round_trips(tmp_path):
    model = Detector(
        plain_backbone(), num_classes=2, levels=("P2", "P3"), head_convs=1, deformable=True, **TINY
    )
    deformable = [layer for layer in model.layers if isinstance(layer, DeformableConv2D)]
    assert sorted(layer.name for layer in deformable) == ["head_box_conv1", "head_class_conv1"]
    assert not any(
        isinstance(layer, keras.layers.Conv2D)
        and layer.name.startswith("head_")
        and "conv" in layer.name
        for layer in model.layers
    )
    x = images(1)
    outputs = model(x, training=False)
    assert outputs.shape == (1, 16 * 16 + 8 * 8, 6)
    path = tmp_path / "deformable.keras"
    model.save(path)
    np.testing.assert_allclose(
        keras.saving.load_model(path)(x, training=False), outputs, atol=1e-5, rtol=0
    )


def synthetic_batch():
    """Four images with a bright square (class 0) and a dark bar (class 1) on grey."""
    x = np.full((4, SIZE, SIZE, 3), 0.5, "float32")
    y = np.full((4, 3, 5), -1.0, "float32")
    rng = np.random.default_rng(3)
    for index in range(4):
        left, top = rng.integers(2, 30, size=2)
        x[index, top : top + 24, left : left + 24] = 1.0
        y[index, 0] = [left, top, left + 24, top + 24, 0]
        bar_left = rng.integers(2, 50)
        x[index, 40:60, bar_left : bar_left + 10] = 0.0
        y[index, 1] = [bar_left, 40, bar_left + 10, 60, 1]
    return x, y


def test_fit_lowers_the_loss():
    keras.utils.set_random_seed(0)
    # One conv per backbone level and head branch: tracing the training step dominates the
    # test's time, and it grows with the number of layers.
    model = Detector(
        plain_backbone(convs_per_level=1), num_classes=2, levels=("P2", "P3"), head_convs=1, **TINY
    )
    loss = DetectionLoss(num_classes=2, image_size=SIZE, strides=(4, 8))
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=loss, jit_compile=False)
    model.optimizer.build(model.trainable_variables)  # else fit traces its step twice
    x, y = synthetic_batch()
    history = model.fit(x, y, batch_size=4, epochs=40, verbose=0).history["loss"]
    assert np.all(np.isfinite(history))
    assert np.mean(history[-3:]) < 0.5 * np.mean(history[:3])
    # The best-scoring point of class 0 in each image lies inside that image's square.
    outputs = np.asarray(model(x, training=False))
    points, strides = anchor_points(SIZE, (4, 8))
    for image_outputs, boxes in zip(outputs, y, strict=True):
        best = int(np.argmax(image_outputs[:, 4]))
        x_min, y_min, x_max, y_max = boxes[0, :4]
        assert x_min < points[best, 0] < x_max and y_min < points[best, 1] < y_max
    assert decode_distances(outputs[:, :, :4], points, strides).shape == outputs[..., :4].shape


def test_bad_arguments():
    backbone = plain_backbone()
    with pytest.raises(ValueError, match=r"`levels` must be pyramid levels of 'plain_cnn'"):
        Detector(backbone, 2, levels=("P3", "P4"))
    with pytest.raises(ValueError, match=r"`num_classes` must be a positive int.*=0"):
        Detector(backbone, 0, levels=("P2", "P3"))
    with pytest.raises(ValueError, match=r"`head_convs` must be a positive int.*=0"):
        Detector(backbone, 2, levels=("P2", "P3"), head_convs=0)
    odd = build_backbone("plain_cnn", input_shape=(36, 36, 3), filters=(8, 8, 8, 8))
    with pytest.raises(ValueError, match=r"divisible by the coarsest stride 8"):
        Detector(odd, 2, levels=("P2", "P3"))


def test_one_step_under_mirrored_strategy_matches_one_device():
    from ..layers import citizenship

    citizenship.check_mirrored_strategy(
        """
        from kcnn.backbones import build_backbone
        from kcnn.detection import DetectionLoss, Detector
        from kcnn.training.trainer import synchronize_batch_norm

        def model_fn():
            backbone = build_backbone(
                "plain_cnn", input_shape=(64, 64, 3), filters=(8, 16, 32, 64), convs_per_level=1
            )
            model = Detector(
                backbone, 2, levels=("P1", "P2", "P3"), neck_filters=8, head_filters=8
            )
            synchronize_batch_norm(model)
            return model

        rng = np.random.default_rng(0)
        inputs = rng.random((4, 64, 64, 3), dtype=np.float32)
        targets = np.full((4, 3, 5), -1.0, np.float32)
        targets[:, 0] = [
            [4, 6, 30, 28, 0], [10, 10, 60, 50, 1], [32, 0, 64, 20, 0], [0, 30, 24, 62, 1]
        ]
        targets[1, 1] = [40, 40, 56, 62, 0]
        """,
        loss="DetectionLoss(2, 64, strides=(2, 4, 8))",
        atol=2e-5,
    )


def test_detectors_take_a_keras_hub_backbone_as_it_is():
    raw = keras_hub.models.ResNetBackbone(
        image_shape=(SIZE, SIZE, 3),
        block_type="basic_block",
        use_pre_activation=False,
        stackwise_num_strides=[1, 2, 2, 2],
        input_conv_kernel_sizes=[7],
        **TINY_BACKBONES["resnet18"],
    )
    cells = sum((SIZE // stride) ** 2 for stride in (8, 16, 32))
    detector = Detector(raw, num_classes=2, **TINY)
    assert detector.strides == (8, 16, 32)
    assert detector(images(1)).shape == (1, cells, 6)
    retinanet = RetinaNet(raw, num_classes=2, head_convs=0)
    assert retinanet(images(1)).shape == (1, 9 * cells, 6)


def test_neck_puts_a_level_a_pixel_off_its_grid_back_on_it():
    # CSPDarkNet's stride-2 map is 31x31 at 64x64; the anchor points of P1 are a 32x32 grid.
    backbone = build_backbone(
        "csp_darknet_tiny", (SIZE, SIZE, 3), **TINY_BACKBONES["csp_darknet_tiny"]
    )
    assert backbone.output["P1"].shape[1] == SIZE // 2 - 1
    model = Detector(backbone, num_classes=2, levels=("P1", "P2", "P3"), **TINY)
    points, _ = anchor_points(SIZE, model.strides)
    assert model(images(1)).shape == (1, len(points), 6) == (1, 32**2 + 16**2 + 8**2, 6)
    # The padded row and column are zeros before the lateral conv: the grid layer pads the
    # backbone map at the bottom and right and keeps the rest.
    grid = keras.Model(model.inputs, model.get_layer("neck_P1_grid").output)
    on_grid, raw = np.asarray(grid(images(1))), np.asarray(backbone(images(1))["P1"])
    np.testing.assert_array_equal(on_grid[:, :31, :31], raw)
    assert not on_grid[:, 31].any() and not on_grid[:, :, 31].any()
