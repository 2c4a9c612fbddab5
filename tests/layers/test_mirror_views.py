"""Test-time flip averaging (`MirrorViews`, `AverageMirrorViews`): the layers against NumPy,
and a classifier that averages its mirror views against the same weights run twice without
them."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kcnn.backbones import build_backbone
from kcnn.layers import AverageMirrorViews, MirrorViews
from kcnn.models.classifier import build_classifier
from kcnn.viz import grad_cam, saliency_map

from . import citizenship

RNG = np.random.default_rng(0)


def classifier(test_time_flip):
    keras.utils.set_random_seed(3)
    backbone = build_backbone(
        "plain_cnn", input_shape=(10, 10, 2), filters=(4, 6), convs_per_level=1
    )
    return build_classifier(backbone, 3, dropout=0.2, test_time_flip=test_time_flip)


def test_the_views_and_their_average_against_numpy():
    images = RNG.standard_normal((3, 4, 5, 2)).astype("float32")
    views = np.asarray(MirrorViews()(images))
    np.testing.assert_array_equal(views, np.concatenate([images, images[:, :, ::-1]]))
    np.testing.assert_array_equal(np.asarray(MirrorViews()(images, training=True)), images)

    rows = RNG.random((6, 4))
    average = np.asarray(AverageMirrorViews(dtype="float64")(rows))
    np.testing.assert_allclose(average, (rows[:3] + rows[3:]) / 2, rtol=1e-15)
    rows = rows.astype("float32")
    np.testing.assert_array_equal(np.asarray(AverageMirrorViews()(rows, training=True)), rows)


def test_inference_is_the_mean_of_the_image_and_its_mirror_and_training_is_one_view():
    model, plain = classifier(True), classifier(False)
    assert len(model.weights) == len(plain.weights)
    plain.set_weights(model.get_weights())
    images = RNG.random((4, 10, 10, 2)).astype("float32")

    expected = (
        plain.predict(images, verbose=0).astype("float64")
        + plain.predict(images[:, :, ::-1], verbose=0).astype("float64")
    ) / 2
    np.testing.assert_allclose(model.predict(images, verbose=0), expected, atol=1e-6)
    assert not np.allclose(expected, plain.predict(images, verbose=0), atol=1e-4)

    # Training sees one view: the same loss and gradients as the model without the layers.
    labels = np.array([0, 1, 2, 1])
    loss = keras.losses.SparseCategoricalCrossentropy()
    gradients = []
    for candidate in (model, plain):
        keras.utils.set_random_seed(5)  # the same dropout mask
        with tf.GradientTape() as tape:
            value = loss(labels, candidate(images, training=True))
        gradients.append(tape.gradient(value, candidate.trainable_variables))
    for got, want in zip(*gradients, strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)


def test_files_and_tflite_keep_the_averaging(tmp_path):
    model = classifier(True)
    images = RNG.random((3, 10, 10, 2)).astype("float32")
    citizenship.check_config_round_trip(model.get_layer("test_time_flip"))
    citizenship.check_keras_file_round_trip(model, images, tmp_path)
    citizenship.check_saved_model_round_trip(model, images, tmp_path)
    citizenship.check_tflite_builtins(model, images, tmp_path)


def test_explanations_read_the_unflipped_view():
    model, plain = classifier(True), classifier(False)
    plain.set_weights(model.get_weights())
    image = RNG.random((10, 10, 2)).astype("float32")
    np.testing.assert_allclose(
        grad_cam(model, image, "level1_conv1", class_index=1),
        grad_cam(plain, image, "level1_conv1", class_index=1),
        atol=1e-6,
    )
    np.testing.assert_allclose(
        saliency_map(model, image, class_index=2), saliency_map(plain, image, class_index=2)
    )


def test_a_test_time_flip_that_is_not_a_bool_is_named():
    with pytest.raises(ValueError, match="`test_time_flip` must be True or False"):
        build_classifier(
            build_backbone("plain_cnn", input_shape=(8, 8, 1), filters=(4,)),
            3,
            test_time_flip="yes",
        )
