"""Feature spaces: 2-D projections of a layer's outputs and nearest neighbours."""

import numpy as np

EMBEDDING_METHODS = ("pca", "tsne")


def _as_matrix(values, argument):
    values = np.asarray(values, dtype=np.float64)
    if values.ndim < 2 or len(values) == 0:
        raise ValueError(
            f"`{argument}` must hold one feature vector (or image) per row: an array of at "
            f"least 2 dimensions with at least one row. Received: {argument}.shape={values.shape}"
        )
    return values.reshape(len(values), -1)


def embed(features, method="pca", seed=0, perplexity=30.0):
    """Projects feature vectors (e.g. `layer_output(...)` of a layer) to 2-D.

    `"pca"` is the projection on the first two principal components (scikit-learn's
    `PCA`, signs as scikit-learn fixes them); `"tsne"` is t-SNE (van der Maaten & Hinton,
    "Visualizing Data using t-SNE", JMLR 2008) with PCA initialisation, scikit-learn's
    `TSNE`. Features of any shape are flattened per row.

    Args:
        features: array `(N, ...)`, N >= 3.
        method: `"pca"` or `"tsne"`. Defaults to `"pca"`.
        seed: int. Seed of t-SNE. Defaults to 0.
        perplexity: float. t-SNE perplexity, lowered to (N - 1) / 3 for small N. Defaults
            to 30.

    Returns:
        float64 array `(N, 2)`.

    Raises:
        ValueError: for an unknown `method` or fewer than 3 rows.

    Example:
    >>> import numpy as np
    >>> embed(np.random.default_rng(0).random((10, 4, 4, 2))).shape
    (10, 2)
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    if method not in EMBEDDING_METHODS:
        raise ValueError(
            f"`method` must be one of {EMBEDDING_METHODS}. Received: method={method!r}"
        )
    matrix = _as_matrix(features, "features")
    if len(matrix) < 3:
        raise ValueError(
            f"`features` must have at least 3 rows to embed. Received: {len(matrix)} rows"
        )
    if method == "pca":
        return PCA(n_components=2).fit_transform(matrix)
    perplexity = min(perplexity, (len(matrix) - 1) / 3)
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
        matrix
    )


def nearest_neighbours(queries, candidates, k=5, exclude_self=False):
    """The `k` candidates closest to each query in Euclidean distance (flattened rows).

    Use it on a layer's outputs (feature space) and on the images themselves (pixel space)
    to see what the network considers similar (Krizhevsky, Sutskever & Hinton 2012, fig. 4).

    Args:
        queries: array `(Q, ...)`.
        candidates: array `(N, ...)` of the same row size.
        k: positive int <= N (N - 1 with `exclude_self`). Defaults to 5.
        exclude_self: bool. `queries` are the first Q rows of `candidates` (the same
            items): skip each query's own row. Defaults to False.

    Returns:
        `(indices, distances)`: int64 `(Q, k)` into `candidates`, nearest first (ties by
        index), and float64 `(Q, k)`.

    Raises:
        ValueError: on rows of different sizes or a bad `k`.

    Example:
    >>> nearest_neighbours([[0.0], [5.0]], [[4.0], [1.0], [8.0]], k=2)[0].tolist()
    [[1, 0], [0, 2]]
    """
    queries = _as_matrix(queries, "queries")
    candidates = _as_matrix(candidates, "candidates")
    if queries.shape[1] != candidates.shape[1]:
        raise ValueError(
            "`queries` and `candidates` must have rows of the same size. Received: "
            f"{queries.shape[1]} and {candidates.shape[1]} values per row"
        )
    if exclude_self and len(queries) > len(candidates):
        raise ValueError(
            "With `exclude_self`, `queries` must be the first rows of `candidates`. Received: "
            f"{len(queries)} queries and {len(candidates)} candidates"
        )
    available = len(candidates) - (1 if exclude_self else 0)
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= available:
        raise ValueError(f"`k` must be an int in [1, {available}]. Received: k={k!r}")
    squared = (
        (queries**2).sum(axis=1)[:, np.newaxis]
        + (candidates**2).sum(axis=1)[np.newaxis]
        - 2.0 * queries @ candidates.T
    )
    squared = np.maximum(squared, 0.0)
    if exclude_self:
        squared[np.arange(len(queries)), np.arange(len(queries))] = np.inf
    indices = np.argsort(squared, axis=1, kind="stable")[:, :k]
    distances = np.sqrt(np.take_along_axis(squared, indices, axis=1))
    return indices.astype(np.int64), distances
