import numpy as np
import pytest

from kcnn.viz import embed, nearest_neighbours


def test_pca_projection_equals_the_svd_reference_up_to_sign():
    features = np.random.default_rng(0).normal(size=(40, 3, 2, 2)) * [1.0, 4.0]
    matrix = features.reshape(40, -1)
    centred = matrix - matrix.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    expected = centred @ components[:2].T
    projected = embed(features, "pca")
    signs = np.sign((projected * expected).sum(axis=0))
    np.testing.assert_allclose(projected, expected * signs, atol=1e-9)


def test_tsne_keeps_separated_clusters_apart():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0] * 8, [10.0] * 8, [-10.0] + [10.0] * 7])
    labels = np.repeat(np.arange(3), 20)
    features = centres[labels] + rng.normal(size=(60, 8))
    points = embed(features, "tsne", perplexity=10)
    assert points.shape == (60, 2)
    # Every point's nearest neighbour in the 2-D map is from its own cluster.
    indices, _ = nearest_neighbours(points, points, k=1, exclude_self=True)
    assert (labels[indices[:, 0]] == labels).all()


def test_nearest_neighbours_equal_brute_force():
    rng = np.random.default_rng(1)
    candidates = rng.random((30, 4, 4, 1))
    queries = rng.random((5, 4, 4, 1))
    indices, distances = nearest_neighbours(queries, candidates, k=4)
    for query, row, row_distances in zip(queries, indices, distances, strict=True):
        brute = [np.sqrt(((query - candidate) ** 2).sum()) for candidate in candidates]
        np.testing.assert_array_equal(row, np.argsort(brute)[:4])
        np.testing.assert_allclose(row_distances, np.sort(brute)[:4], rtol=1e-9)
    own, _ = nearest_neighbours(candidates[:5], candidates, k=2, exclude_self=True)
    assert not (own == np.arange(5)[:, None]).any()


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match=r"`method` must be one of \('pca', 'tsne'\)"):
        embed(np.zeros((5, 2)), "umap")
    with pytest.raises(ValueError, match="at least 3 rows"):
        embed(np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"`k` must be an int in \[1, 3\]"):
        nearest_neighbours(np.zeros((1, 2)), np.zeros((3, 2)), k=4)
    with pytest.raises(ValueError, match="rows of the same size. Received: 2 and 3"):
        nearest_neighbours(np.zeros((1, 2)), np.zeros((3, 3)))
