"""Small labelled subsets of a training split, for low-data and transfer-learning experiments."""

import numpy as np

from kcnn._validation import check_positive_int


def per_class_subset(images, labels, count, seed=0):
    """Keeps `count` images of every class, drawn at random with a fixed seed.

    The same `seed` always keeps the same images, whatever else a run changes, so a
    transferred model and a model trained from scratch can be compared on the very same
    subset. The kept images stay in their original order.

    Args:
        images: array `(N, ...)`.
        labels: int array `(N,)` of class indices.
        count: int >= 1. Images to keep per class.
        seed: int. Seed of the draw. Defaults to `0`.

    Returns:
        `(images, labels)` with `count` images of each class present in `labels`.

    Raises:
        ValueError: if `count` is not a positive int, `labels` is not one label per image,
            or a class has fewer than `count` images (the message names the class).

    Example:

    >>> labels = np.array([0, 0, 0, 1, 1, 1, 1])
    >>> images, kept = per_class_subset(np.arange(7), labels, count=2)
    >>> kept.tolist(), len(images)
    ([0, 0, 1, 1], 4)
    """
    count = check_positive_int(count, "count")
    images, labels = np.asarray(images), np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(
            "`labels` must hold one class index per image. Received: "
            f"labels.shape={labels.shape} for images.shape={images.shape}"
        )
    rng = np.random.default_rng(seed)
    kept = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if members.size < count:
            raise ValueError(
                f"Class {label} has {members.size} images, fewer than `count`={count}."
            )
        kept.append(rng.permutation(members)[:count])
    kept = np.sort(np.concatenate(kept))
    return images[kept], labels[kept]


def split_validation(images, targets, fraction, seed):
    """Holds out `fraction` of a training split for validation.

    Class-stratified when `targets` are one label per image (each class keeps its share),
    a seeded random subset otherwise: per-image targets `(N, ...)` (masks, boxes) and
    structured arrays `(N,)` whose records hold several targets of an image
    (`instance_targets`: boxes and masks), which stay together. Both parts keep their
    original order.

    Args:
        images: array `(N, ...)`.
        targets: array `(N,)` of labels, `(N, ...)` of per-image targets, or a structured
            array `(N,)` of per-image records.
        fraction: float in [0, 1). Share held out; 0 holds out nothing.
        seed: int. Seed of the draw.

    Returns:
        `((images, targets), (held_images, held_targets))`, or `((images, targets), None)`
        when `fraction` is 0.

    Example:

    >>> (kept, _), (held, _) = split_validation(np.arange(10), np.arange(10) % 2, 0.2, 0)
    >>> len(kept), len(held)
    (8, 2)
    """
    if not fraction:
        return (images, targets), None
    rng = np.random.default_rng(seed)
    if targets.ndim > 1 or targets.dtype.names is not None:
        held_out = np.sort(rng.permutation(len(targets))[: int(round(fraction * len(targets)))])
    else:
        held_out = []
        for label in np.unique(targets):
            members = rng.permutation(np.flatnonzero(targets == label))
            held_out.append(members[: int(round(fraction * members.size))])
        held_out = np.sort(np.concatenate(held_out))
    keep = np.setdiff1d(np.arange(len(targets)), held_out)
    return (images[keep], targets[keep]), (images[held_out], targets[held_out])
