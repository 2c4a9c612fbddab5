"""Fashion-MNIST read from local IDX files (no download)."""

import os

import numpy as np

from kcnn.data.idx import read_idx

FASHION_MNIST_CLASSES = (
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

# Where the Debian package `dataset-fashion-mnist` installs the files.
DEFAULT_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist/"

_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def _find_file(directory, stem):
    for name in (stem + ".gz", stem):
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(
        f"Fashion-MNIST file '{stem}.gz' (or '{stem}') not found in directory '{directory}'. "
        "Install the data with `apt-get install dataset-fashion-mnist` or pass "
        "`path=` a directory that holds the four IDX files."
    )


def _load_split(directory, images_stem, labels_stem):
    images_file = _find_file(directory, images_stem)
    labels_file = _find_file(directory, labels_stem)
    images = read_idx(images_file)
    labels = read_idx(labels_file)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise ValueError(
            f"Fashion-MNIST image file '{images_file}' must hold uint8 images of shape "
            f"(N, 28, 28). Received: shape={images.shape}, dtype={images.dtype}"
        )
    if labels.ndim != 1:
        raise ValueError(
            f"Fashion-MNIST label file '{labels_file}' must hold a 1-D array of labels. "
            f"Received: shape={labels.shape}"
        )
    if len(images) != len(labels):
        raise ValueError(
            f"Fashion-MNIST image file '{images_file}' holds {len(images)} images but label "
            f"file '{labels_file}' holds {len(labels)} labels; expected the same count."
        )
    if labels.size and (labels.min() < 0 or labels.max() >= len(FASHION_MNIST_CLASSES)):
        raise ValueError(
            f"Fashion-MNIST label file '{labels_file}' must hold labels in "
            f"[0, {len(FASHION_MNIST_CLASSES) - 1}]. "
            f"Received: min={labels.min()}, max={labels.max()}"
        )
    return images[..., np.newaxis], labels.astype(np.int64)


def load_fashion_mnist(path=None):
    """Loads Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017; arXiv:1708.07747).

    70,000 grey 28x28 images of 10 clothing classes (`FASHION_MNIST_CLASSES`),
    read from local IDX files; nothing is downloaded.

    Args:
        path: str, path-like or None. A directory holding
            `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
            `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte`, each either
            gzipped (with a `.gz` suffix, preferred when both exist) or raw.
            Defaults to `None`, which means `/usr/share/datasets/fashion-mnist/`,
            where the Debian package `dataset-fashion-mnist` installs them.

    Returns:
        `((x_train, y_train), (x_test, y_test))`: images are uint8 of shape
        `(N, 28, 28, 1)` (60,000 train, 10,000 test), labels int64 in `[0, 9]`.

    Raises:
        FileNotFoundError: if a file is missing; the message names the directory
            and the file and says how to install the data.
        ValueError: if a file is not valid IDX, images are not 28x28 uint8, labels
            are out of range, or an image file and its label file hold different
            counts (the message names both files).

    Example:

    >>> (x_train, y_train), (x_test, y_test) = load_fashion_mnist()
    >>> x_train.shape, FASHION_MNIST_CLASSES[y_train[0]]
    ((60000, 28, 28, 1), 'Ankle boot')
    """
    directory = os.fspath(DEFAULT_FASHION_MNIST_DIR if path is None else path)
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"Fashion-MNIST directory '{directory}' does not exist. Install the data with "
            "`apt-get install dataset-fashion-mnist` or pass `path=` a directory that holds "
            "the four IDX files."
        )
    train = _load_split(directory, _FILES["x_train"], _FILES["y_train"])
    test = _load_split(directory, _FILES["x_test"], _FILES["y_test"])
    return train, test
