"""The 8x8 handwritten digits bundled with scikit-learn."""

import numpy as np
import sklearn.datasets
import sklearn.model_selection

from kcnn._validation import check_fraction

DIGITS_CLASSES = tuple(str(digit) for digit in range(10))


def load_digits(test_fraction=0.2, seed=0):
    """Loads scikit-learn's 8x8 handwritten digits (UCI optdigits test set).

    1,797 images of the digits 0-9 whose pixels count set bits in 4x4 blocks
    (0..16). They are rescaled to uint8 with `round(v * 255 / 16)` and split into
    train and test with a stratified, seeded split, so every class keeps its share
    in both halves and the same `seed` always gives the same split.

    Args:
        test_fraction: float. Share of images in the test split, strictly between
            0 and 1. Defaults to `0.2`.
        seed: int. Seed of the split. Defaults to `0`.

    Returns:
        `((x_train, y_train), (x_test, y_test))`: images uint8 of shape
        `(N, 8, 8, 1)` in `[0, 255]`, labels int64 in `[0, 9]`.

    Raises:
        ValueError: if `test_fraction` is not strictly between 0 and 1.

    Example:

    >>> (x_train, y_train), (x_test, y_test) = load_digits(test_fraction=0.2)
    >>> x_train.shape, x_test.shape
    ((1437, 8, 8, 1), (360, 8, 8, 1))
    """
    check_fraction(test_fraction, "test_fraction")
    digits = sklearn.datasets.load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., np.newaxis]
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = sklearn.model_selection.train_test_split(
        images, labels, test_size=test_fraction, stratify=labels, random_state=seed
    )
    return (x_train, y_train), (x_test, y_test)
