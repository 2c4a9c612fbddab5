import gzip
import os
import re
import struct

import numpy as np
import pytest

from kcnn.data import FASHION_MNIST_CLASSES, load_fashion_mnist
from kcnn.data.fashion_mnist import DEFAULT_FASHION_MNIST_DIR


def write_idx(path, values):
    """Writes uint8 IDX with `struct`, independently of the reader."""
    values = np.asarray(values, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 0x08, values.ndim)
    header += struct.pack(f">{values.ndim}I", *values.shape)
    content = header + values.tobytes()
    path.write_bytes(gzip.compress(content) if path.suffix == ".gz" else content)


def write_fake_dataset(directory, train_count=5, test_count=3, suffix=""):
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (train_count, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, train_count),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (test_count, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, test_count),
    }
    for name, values in arrays.items():
        write_idx(directory / (name + suffix), values)
    return arrays


def test_class_names():
    assert FASHION_MNIST_CLASSES == (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    )


@pytest.mark.skipif(
    not os.path.isdir(DEFAULT_FASHION_MNIST_DIR),
    reason="Debian package dataset-fashion-mnist is not installed",
)
def test_real_data():
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist()

    assert x_train.shape == (60000, 28, 28, 1) and x_train.dtype == np.uint8
    assert x_test.shape == (10000, 28, 28, 1) and x_test.dtype == np.uint8
    assert y_train.dtype == np.int64 and y_test.dtype == np.int64
    # Fashion-MNIST is balanced: 6,000 training and 1,000 test images per class.
    np.testing.assert_array_equal(np.bincount(y_train), np.full(10, 6000))
    np.testing.assert_array_equal(np.bincount(y_test), np.full(10, 1000))
    # The first training image is an ankle boot, the first test image too.
    assert FASHION_MNIST_CLASSES[y_train[0]] == "Ankle boot"
    assert FASHION_MNIST_CLASSES[y_test[0]] == "Ankle boot"
    assert x_train.max() == 255 and x_train.min() == 0


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_user_folder(tmp_path, suffix):
    arrays = write_fake_dataset(tmp_path, suffix=suffix)

    (x_train, y_train), (x_test, y_test) = load_fashion_mnist(path=tmp_path)

    np.testing.assert_array_equal(x_train[..., 0], arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(y_train, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(x_test[..., 0], arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(y_test, arrays["t10k-labels-idx1-ubyte"])
    assert x_train.shape == (5, 28, 28, 1) and y_train.dtype == np.int64


def test_missing_file(tmp_path):
    write_fake_dataset(tmp_path)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte")
    pattern = (
        r"'t10k-labels-idx1-ubyte\.gz' \(or 't10k-labels-idx1-ubyte'\) not found in directory "
        + re.escape(f"'{tmp_path}'")
        + r".*apt-get install dataset-fashion-mnist.*path="
    )
    with pytest.raises(FileNotFoundError, match=pattern):
        load_fashion_mnist(path=tmp_path)


def test_missing_directory(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(
        FileNotFoundError,
        match=re.escape(f"'{missing}' does not exist") + ".*apt-get install dataset-fashion-mnist",
    ):
        load_fashion_mnist(path=missing)


def test_count_mismatch_names_both_files(tmp_path):
    write_fake_dataset(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(4))
    pattern = re.escape(
        f"'{tmp_path / 'train-images-idx3-ubyte'}' holds 5 images but label file "
    ) + re.escape(f"'{tmp_path / 'train-labels-idx1-ubyte'}' holds 4 labels")
    with pytest.raises(ValueError, match=pattern):
        load_fashion_mnist(path=tmp_path)


def test_wrong_image_size(tmp_path):
    write_fake_dataset(tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((3, 27, 28)))
    with pytest.raises(
        ValueError, match=r"t10k-images-idx3-ubyte' must hold uint8 images of shape"
    ):
        load_fashion_mnist(path=tmp_path)


def test_label_out_of_range(tmp_path):
    write_fake_dataset(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", [1, 10, 2])
    with pytest.raises(ValueError, match=r"labels in \[0, 9\]. Received: min=1, max=10"):
        load_fashion_mnist(path=tmp_path)
