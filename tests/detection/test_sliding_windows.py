import keras
import numpy as np
import pytest

from kcnn.detection import fully_convolutional_classifier, sliding_window_scores, window_stride
from kcnn.models.classic import LeNet5

RNG = np.random.default_rng(0)


def flatten_classifier():
    """Two strided stages (stride 2 x 2 = 4), a Flatten of a 3x3 map, dropout, two Dense."""
    keras.utils.set_random_seed(1)
    return keras.Sequential(
        [
            keras.Input((18, 18, 2)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(6, 2, strides=2, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(5, activation="softmax"),
        ]
    )


def pooled_classifier():
    """A global-average-pooled head: the pooling becomes a 7x7 average of stride 1."""
    keras.utils.set_random_seed(2)
    return keras.Sequential(
        [
            keras.Input((16, 16, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )


@pytest.mark.parametrize(
    "build, image_shape, stride",
    [
        (lambda: LeNet5((32, 32, 1), num_classes=10, pooling="max"), (47, 58, 1), (4, 4)),
        (flatten_classifier, (33, 41, 2), (4, 4)),
        (pooled_classifier, (29, 22, 1), (2, 2)),
    ],
)
def test_convolutional_form_equals_cropping_every_window(build, image_shape, stride):
    classifier = build()
    assert window_stride(classifier) == stride
    image = RNG.random(image_shape, dtype=np.float32)
    window = classifier.input_shape[1:3]
    literal = sliding_window_scores(classifier, image, window, stride)
    # Independent of both functions: window (i, j) cropped by hand and classified alone.
    i, j = literal.shape[0] - 1, literal.shape[1] // 2
    crop = image[
        i * stride[0] : i * stride[0] + window[0], j * stride[1] : j * stride[1] + window[1]
    ]
    np.testing.assert_allclose(literal[i, j], classifier(crop[None])[0], atol=1e-6)
    assert literal.shape[:2] == tuple(
        (image_shape[axis] - window[axis]) // stride[axis] + 1 for axis in (0, 1)
    )
    dense = fully_convolutional_classifier(classifier)
    assert not any(isinstance(layer, keras.layers.Dense) for layer in dense.layers)
    one_pass = keras.ops.convert_to_numpy(dense(image[None]))[0]
    assert one_pass.shape == literal.shape
    np.testing.assert_allclose(one_pass, literal, atol=1e-5)
    # On the window itself the convolutional form is the classifier.
    np.testing.assert_allclose(dense(crop[None])[0, 0, 0], classifier(crop[None])[0], atol=1e-5)


def test_a_finer_stride_than_the_network_s_is_not_in_the_one_pass_map():
    classifier = LeNet5((32, 32, 1), num_classes=4, pooling="max")
    image = RNG.random((40, 40, 1), dtype=np.float32)
    fine = sliding_window_scores(classifier, image, 32, 2)
    one_pass = keras.ops.convert_to_numpy(fully_convolutional_classifier(classifier)(image[None]))
    assert fine.shape[:2] == (5, 5) and one_pass.shape[1:3] == (3, 3)
    np.testing.assert_allclose(one_pass[0], fine[::2, ::2], atol=1e-5)
    assert np.abs(fine[1::2, 1::2] - one_pass[0, :2, :2]).max() > 1e-4


def test_bad_arguments_are_named():
    classifier = LeNet5((32, 32, 1), num_classes=3)
    image = np.zeros((40, 40, 1), "float32")
    with pytest.raises(ValueError, match=r"`window` must equal the classifier's input size"):
        sliding_window_scores(classifier, image, 28, 4)
    with pytest.raises(ValueError, match=r"`window` must fit in the image"):
        sliding_window_scores(classifier, image[:30], 32, 4)
    with pytest.raises(ValueError, match=r"`stride` must be a positive int"):
        sliding_window_scores(classifier, image, 32, 0)
    with pytest.raises(ValueError, match=r"`image` must be a 3-D array"):
        sliding_window_scores(classifier, image[None], 32, 4)
    same = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(2, 3, padding="same", name="padded"),
            keras.layers.Flatten(),
            keras.layers.Dense(2),
        ]
    )
    with pytest.raises(ValueError, match=r"Layer 'padded' has padding='same'"):
        fully_convolutional_classifier(same)
    with pytest.raises(ValueError, match=r"must have a fixed input size"):
        fully_convolutional_classifier(LeNet5((32, 32, 1), num_classes=3, fully_convolutional=True))
