import numpy as np
import PIL.Image
import pytest

from kcnn.data import (
    CLASSIFICATION_DATASETS,
    ClassificationData,
    DetectionData,
    ImageData,
    InpaintingData,
    SegmentationData,
    load_classification_data,
    load_digits,
)


def write_class_folder(root, counts, size=(6, 5)):
    for class_index, (class_name, count) in enumerate(counts.items()):
        (root / class_name).mkdir(parents=True)
        for index in range(count):
            pixels = np.full((*size, 3), 20 * class_index + index, dtype=np.uint8)
            PIL.Image.fromarray(pixels).save(root / class_name / f"{index}.png")


def test_every_task_data_set_shares_the_image_data_base_and_none_is_a_classification_set():
    for data_class in (ClassificationData, SegmentationData, InpaintingData, DetectionData):
        assert issubclass(data_class, ImageData)
    for data_class in (SegmentationData, InpaintingData, DetectionData):
        assert not issubclass(data_class, ClassificationData)


def test_names():
    assert sorted(CLASSIFICATION_DATASETS) == ["digits", "fashion_mnist", "image_folder"]


def test_digits_matches_loader():
    data = load_classification_data("digits", test_fraction=0.3, seed=2)
    (x_train, y_train), (x_test, y_test) = load_digits(test_fraction=0.3, seed=2)

    assert isinstance(data, ClassificationData)
    assert data.name == "digits" and data.class_names[9] == "9" and data.num_classes == 10
    assert data.input_shape == (8, 8, 1)
    np.testing.assert_array_equal(data.x_train, x_train)
    np.testing.assert_array_equal(data.y_test, y_test)


def test_fashion_mnist_user_path_is_forwarded(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_classification_data("fashion_mnist", path=tmp_path, seed=3)


def test_digits_resized():
    data = load_classification_data("digits", image_size=16, seed=0)
    assert data.x_train.shape[1:] == (16, 16, 1) and data.x_test.shape[1:] == (16, 16, 1)
    (x_train, _), _ = load_digits(seed=0)
    # Bilinear upsampling keeps the mean brightness of each digit.
    np.testing.assert_allclose(
        data.x_train.mean(axis=(1, 2, 3)), x_train.mean(axis=(1, 2, 3)), atol=4
    )


def test_image_folder_split(tmp_path):
    write_class_folder(tmp_path, {"ant": 10, "bee": 10})

    data = load_classification_data("image_folder", path=tmp_path, test_fraction=0.2, seed=0)

    assert data.class_names == ("ant", "bee")
    assert data.x_train.shape == (16, 6, 5, 3) and data.x_test.shape == (4, 6, 5, 3)
    np.testing.assert_array_equal(np.bincount(data.y_test), [2, 2])
    # Every pixel value encodes its class (20 * class + index < 20 * (class + 1)).
    np.testing.assert_array_equal(data.x_train[:, 0, 0, 0] // 20, data.y_train)


def test_image_folder_with_test_path(tmp_path):
    write_class_folder(tmp_path / "train", {"ant": 3, "bee": 2})
    write_class_folder(tmp_path / "test", {"ant": 1, "bee": 1})
    data = load_classification_data(
        "image_folder", path=tmp_path / "train", test_path=tmp_path / "test", image_size=4
    )
    assert data.x_train.shape == (5, 4, 4, 3) and data.x_test.shape == (2, 4, 4, 3)
    np.testing.assert_array_equal(data.y_test, [0, 1])

    write_class_folder(tmp_path / "other", {"ant": 1, "cat": 1})
    with pytest.raises(ValueError, match=r"has classes \['ant', 'cat'\] but folder"):
        load_classification_data(
            "image_folder", path=tmp_path / "train", test_path=tmp_path / "other"
        )


def test_unknown_name():
    with pytest.raises(
        ValueError,
        match=r"Unknown classification dataset `name`='mnist'. "
        r"Known names: \['digits', 'fashion_mnist', 'image_folder'\]",
    ):
        load_classification_data("mnist")


def test_unknown_and_missing_kwargs():
    with pytest.raises(
        ValueError,
        match=r"'digits' does not accept keyword argument\(s\) \['path'\]. "
        r"Accepted: \['test_fraction', 'image_size', 'seed'\]",
    ):
        load_classification_data("digits", path="/data")
    with pytest.raises(
        ValueError, match=r"'image_folder' requires keyword argument\(s\) \['path'\]"
    ):
        load_classification_data("image_folder")
