import numpy as np
import pytest
import sklearn.datasets

from kcnn.data import DIGITS_CLASSES, load_digits


def sorted_rows(images, labels):
    """Images and labels as one matrix with rows in lexicographic order (order-free compare)."""
    rows = np.concatenate([images.reshape(len(images), -1), labels[:, None]], axis=1).astype(int)
    return rows[np.lexsort(rows.T[::-1])]


def test_matches_sklearn_and_scaling():
    (x_train, y_train), (x_test, y_test) = load_digits()
    reference = sklearn.datasets.load_digits()

    assert x_train.shape == (1437, 8, 8, 1) and x_test.shape == (360, 8, 8, 1)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.int64
    # Round half up; the only tie, 8 -> 127.5, goes to 128 under half-to-even rounding too.
    expected = np.floor(reference.images * 255 / 16 + 0.5)
    np.testing.assert_array_equal(
        sorted_rows(np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test])),
        sorted_rows(expected, reference.target),
    )
    assert set(np.unique(x_train)) <= {round(v * 255 / 16) for v in range(17)}
    assert round(8 * 255 / 16) == 128 and 128 in x_train
    assert x_train.max() == 255


def test_split_is_stratified():
    (_, y_train), (_, y_test) = load_digits(test_fraction=0.25)
    per_class = np.bincount(sklearn.datasets.load_digits().target)
    assert np.all(np.abs(np.bincount(y_test) - 0.25 * per_class) <= 1)
    np.testing.assert_array_equal(np.bincount(y_train) + np.bincount(y_test), per_class)


def test_deterministic_for_a_seed():
    (a_train, _), _ = load_digits(seed=3)
    (b_train, _), _ = load_digits(seed=3)
    (c_train, _), _ = load_digits(seed=4)
    np.testing.assert_array_equal(a_train, b_train)
    assert not np.array_equal(a_train, c_train)


def test_class_names():
    assert DIGITS_CLASSES == ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9")


@pytest.mark.parametrize("test_fraction", [0, 1, 1.5, -0.1, "0.2", True])
def test_bad_test_fraction(test_fraction):
    with pytest.raises(
        ValueError, match=r"`test_fraction` must be a number strictly between 0 and 1"
    ):
        load_digits(test_fraction=test_fraction)
