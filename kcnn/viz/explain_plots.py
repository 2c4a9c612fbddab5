"""Figures of what a CNN learned: filters, feature maps, explanation maps, embeddings,
neighbours, adversarial examples and DeepDream. The arrays come from `kcnn.viz.explain` and
`kcnn.viz.embedding`."""

import math

import numpy as np

from kcnn.viz.explain import conv_layer_names, find_layer, layer_output
from kcnn.viz.plots import _as_display, plt, show_image


def _grid(count, columns, panel=1.3):
    columns = max(1, min(columns, count))
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(panel * columns + 0.4, (panel + 0.25) * rows + 0.6), squeeze=False
    )
    for axis in axes.ravel()[count:]:
        axis.axis("off")
    return figure, axes.ravel()[:count]


def _normalise(values):
    values = np.asarray(values, dtype=np.float64)
    low, high = values.min(), values.max()
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def signed_display(values):
    """A signed pixel-space explanation as an image in [0, 1]: `0.5 + 0.5 * v / max|v|`,
    so 0 is mid-grey and the sign shows as lighter or darker."""
    values = np.asarray(values, dtype=np.float64)
    peak = np.abs(values).max()
    return 0.5 + 0.5 * values / peak if peak > 0 else np.full_like(values, 0.5)


def plot_filters(model, layer_name=None, columns=8):
    """Draws the kernels of a conv layer, one panel per filter.

    A kernel over 3 input channels is shown in colour; over any other number, as its mean
    over the input channels in grey. Each panel is scaled to its own range (what matters in
    a learned filter is its pattern, Krizhevsky et al. 2012 fig. 3).

    Args:
        model: a Keras model.
        layer_name: str or None. A conv layer with a `(kh, kw, in, filters)` kernel.
            Defaults to the first conv layer.
        columns: positive int. Panels per row. Defaults to 8.

    Returns:
        A matplotlib `Figure` with one titled panel per filter.

    Raises:
        ValueError: for an unknown layer or a layer without a 4-D kernel.
    """
    if layer_name is None:
        names = conv_layer_names(model)
        if not names:
            raise ValueError(f"Model '{model.name}' has no conv layer to draw filters of.")
        layer_name = names[0]
    layer = find_layer(model, layer_name)
    kernel = getattr(layer, "kernel", None)
    if kernel is None or len(kernel.shape) != 4:
        raise ValueError(
            f"`layer_name`={layer_name!r} must name a conv layer with a (kh, kw, in, filters) "
            f"kernel. Received a {type(layer).__name__}"
        )
    kernel = np.asarray(kernel)
    filters = kernel.shape[-1]
    figure, axes = _grid(filters, columns)
    for index, axis in enumerate(axes):
        weights = kernel[..., index]
        weights = weights if weights.shape[-1] == 3 else weights.mean(axis=-1)
        show_image(axis, _normalise(weights), str(index))
    figure.suptitle(f"{layer_name}: {filters} filters {kernel.shape[0]}x{kernel.shape[1]}")
    figure.tight_layout()
    return figure


def plot_feature_maps(model, image, layer_name, max_maps=32, columns=8):
    """Draws the channels of a layer's output for one image, one panel per channel.

    Args:
        model: a Keras model (nested models included in the layer search).
        image: float array `(H, W, C)` in the model's input scale.
        layer_name: str. A layer with a `(batch, h, w, channels)` output.
        max_maps: positive int. At most this many channels (the first ones). Defaults to 32.
        columns: positive int. Panels per row. Defaults to 8.

    Returns:
        A matplotlib `Figure` with one panel per shown channel, all on one colour scale.

    Raises:
        ValueError: for an unknown layer, a layer whose output is not 4-D, or an image of
            the wrong shape.
    """
    maps = layer_output(model, np.asarray(image)[np.newaxis], layer_name)[0]
    if maps.ndim != 3:
        raise ValueError(
            f"`layer_name`={layer_name!r} must name a layer with a (batch, height, width, "
            f"channels) output. Received output shape: {maps.shape}"
        )
    shown = min(max_maps, maps.shape[-1])
    figure, axes = _grid(shown, columns)
    low, high = float(maps.min()), float(maps.max())
    for index, axis in enumerate(axes):
        axis.imshow(maps[..., index], cmap="viridis", vmin=low, vmax=high)
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_title(str(index), fontsize=8)
    figure.suptitle(
        f"{layer_name}: {shown} of {maps.shape[-1]} maps {maps.shape[0]}x{maps.shape[1]}"
    )
    figure.tight_layout()
    return figure


def plot_saliency(image, maps, title=None, alpha=0.5):
    """The image, then each explanation map laid over it as a heat map.

    A pixel-space explanation `(H, W, C)` (guided backpropagation, the DeconvNet, guided
    Grad-CAM) is drawn as an image instead, grey at 0 and scaled by its largest magnitude
    (`signed_display`), as in Springenberg et al. (2015) and Zeiler & Fergus (2014).

    Args:
        image: `(H, W)` or `(H, W, C)` array (uint8 or float in [0, 1]).
        maps: one map, or a dict {name: map}: `(H, W)` maps (saliency, SmoothGrad,
            occlusion, Grad-CAM), each scaled to its own range, or `(H, W, C)`
            pixel-space explanations with the image's channels.
        title: str or None.
        alpha: float. Opacity of the heat map. Defaults to 0.5.

    Returns:
        A matplotlib `Figure` with `1 + len(maps)` panels.

    Raises:
        ValueError: if a map is not the image's height and width.
    """
    maps = maps if isinstance(maps, dict) else {"explanation": maps}
    picture = _as_display(image)
    for name, values in maps.items():
        if np.shape(values)[:2] != picture.shape[:2] or np.ndim(values) not in (2, 3):
            raise ValueError(
                f"Map {name!r} must have the image's size {picture.shape[:2]}. Received shape: "
                f"{np.shape(values)}"
            )
    figure, axes = plt.subplots(1, 1 + len(maps), figsize=(2.8 * (1 + len(maps)), 3.2))
    show_image(axes[0], picture, "image")
    grey = picture if picture.ndim == 2 else picture.mean(axis=-1)
    for axis, (name, values) in zip(axes[1:], maps.items(), strict=True):
        if np.ndim(values) == 3:
            show_image(axis, signed_display(values), name)
            continue
        axis.imshow(grey, cmap="gray", vmin=0, vmax=1)
        axis.imshow(_normalise(values), cmap="jet", alpha=alpha, vmin=0, vmax=1)
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_title(name, fontsize=9)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_embedding(points, labels, class_names=None, title=None):
    """A 2-D scatter of embedded points (see `kcnn.viz.embed`), coloured by class.

    Args:
        points: `(N, 2)` array.
        labels: `(N,)` int classes.
        class_names: sequence of names or None (indices). Defaults to None.
        title: str or None.

    Returns:
        A matplotlib `Figure` with one scatter collection per class present.

    Raises:
        ValueError: if points are not `(N, 2)` with one label each.
    """
    points, labels = np.asarray(points), np.asarray(labels).ravel()
    if points.ndim != 2 or points.shape[1] != 2 or len(points) != len(labels):
        raise ValueError(
            "`points` must be (N, 2) with one label each. Received: "
            f"points.shape={points.shape}, {len(labels)} labels"
        )
    classes = np.unique(labels)
    colours = plt.get_cmap("tab10" if classes.max() < 10 else "tab20")
    figure, axis = plt.subplots(figsize=(6, 5))
    for label in classes:
        chosen = labels == label
        name = class_names[label] if class_names is not None else str(label)
        axis.scatter(*points[chosen].T, s=8, color=colours(label % 20), label=name)
    axis.legend(markerscale=2, fontsize=8, loc="best")
    axis.set_xticks([])
    axis.set_yticks([])
    if title:
        axis.set_title(title)
    figure.tight_layout()
    return figure


def plot_neighbours(queries, candidates, neighbours, labels=None, query_labels=None, title=None):
    """Each query image next to its nearest candidates in one or more spaces.

    Args:
        queries: `(Q, H, W, C)` images.
        candidates: `(N, H, W, C)` images the neighbour indices point into.
        neighbours: dict {space name: int array `(Q, k)`} (see
            `kcnn.viz.nearest_neighbours`), e.g. {"feature space": ..., "pixel space": ...}.
        labels: `(N,)` classes of the candidates, or None. With `query_labels`, a
            neighbour of the query's class gets a green title, another class a red one.
        query_labels: `(Q,)` classes of the queries, or None.
        title: str or None.

    Returns:
        A matplotlib `Figure`: one row per query and space, the query first.
    """
    queries, candidates = np.asarray(queries), np.asarray(candidates)
    spaces = list(neighbours.items())
    k = max(np.shape(indices)[1] for _, indices in spaces)
    rows = len(queries) * len(spaces)
    figure, axes = plt.subplots(rows, k + 1, figsize=(1.2 * (k + 1) + 1, 1.3 * rows + 0.5))
    axes = np.asarray(axes).reshape(rows, k + 1)
    for query in range(len(queries)):
        for space_index, (space, indices) in enumerate(spaces):
            row = axes[query * len(spaces) + space_index]
            name = "query" if query_labels is None else f"query ({query_labels[query]})"
            show_image(row[0], queries[query], name)
            row[0].set_ylabel(space, fontsize=8)
            for axis, index in zip(row[1:], indices[query], strict=False):
                caption = None if labels is None else str(labels[index])
                show_image(axis, candidates[index], caption)
                if labels is not None and query_labels is not None:
                    same = labels[index] == query_labels[query]
                    axis.title.set_color("green" if same else "red")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_adversarial(
    images,
    adversarial,
    predictions_before,
    predictions_after,
    class_names=None,
    max_rows=4,
    title=None,
):
    """Rows of image / perturbation (amplified to the full range) / adversarial image, with
    the predicted class before and after (see `kcnn.viz.fgsm`).

    Args:
        images, adversarial: `(N, H, W, C)` arrays in [0, 1].
        predictions_before, predictions_after: `(N,)` predicted classes.
        class_names: sequence of names or None. Defaults to None.
        max_rows: int. At most this many examples. Defaults to 4.
        title: str or None.

    Returns:
        A matplotlib `Figure`.
    """
    images, adversarial = np.asarray(images, np.float64), np.asarray(adversarial, np.float64)
    if images.shape != adversarial.shape:
        raise ValueError(
            "`images` and `adversarial` must have the same shape. Received: "
            f"{images.shape} and {adversarial.shape}"
        )

    def name(label):
        return class_names[label] if class_names is not None else str(label)

    rows = min(max_rows, len(images))
    figure, axes = plt.subplots(rows, 3, figsize=(6.5, 2.3 * rows), squeeze=False)
    for row in range(rows):
        perturbation = adversarial[row] - images[row]
        size = np.abs(perturbation).max()
        show_image(axes[row, 0], images[row], f"predicted {name(predictions_before[row])}")
        show_image(axes[row, 1], 0.5 + perturbation / (2 * size) if size else perturbation + 0.5)
        axes[row, 1].set_title(f"perturbation, max {size:.3f}", fontsize=9)
        show_image(axes[row, 2], adversarial[row], f"predicted {name(predictions_after[row])}")
        changed = predictions_before[row] != predictions_after[row]
        axes[row, 2].title.set_color("red" if changed else "black")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_deep_dream(image, dreamed, layer_name=None):
    """The image before and after DeepDream (see `kcnn.viz.deep_dream`), and the change.

    Returns:
        A matplotlib `Figure` with three panels.
    """
    image, dreamed = np.asarray(image, np.float64), np.asarray(dreamed, np.float64)
    figure, axes = plt.subplots(1, 3, figsize=(8, 3))
    show_image(axes[0], image, "image")
    show_image(axes[1], dreamed, f"dreamed ({layer_name})" if layer_name else "dreamed")
    difference = dreamed - image
    axes[2].imshow(
        difference.mean(axis=-1) if difference.ndim == 3 else difference,
        cmap="RdBu_r",
        vmin=-np.abs(difference).max(),
        vmax=np.abs(difference).max(),
    )
    axes[2].set_xticks([])
    axes[2].set_yticks([])
    axes[2].set_title("change", fontsize=9)
    figure.tight_layout()
    return figure


def plot_top_patches(result, projections=None, title=None):
    """One row per channel: its top-activating patches (see `top_activating_patches`).

    Args:
        result: a `TopPatches`.
        projections: None, or an array like `result.patches` to draw beside each patch,
            e.g. the DeconvNet projection of each unit cut to the same field (Zeiler &
            Fergus's figure 2 pairs them this way).
        title: str or None. Defaults to the receptive field size.

    Returns:
        A matplotlib `Figure`.
    """
    channels, k = result.patches.shape[:2]
    per_patch = 1 if projections is None else 2
    figure, axes = plt.subplots(
        channels,
        k * per_patch,
        figsize=(0.9 * k * per_patch + 0.8, 1.0 * channels + 0.6),
        squeeze=False,
    )
    for row, channel in enumerate(result.channels):
        for column in range(k):
            axis = axes[row, column * per_patch]
            show_image(axis, result.patches[row, column])
            axis.set_title(f"{result.activations[row, column]:.2g}", fontsize=7)
            if projections is not None:
                show_image(
                    axes[row, column * per_patch + 1], signed_display(projections[row, column])
                )
        axes[row, 0].set_ylabel(f"ch {channel}", fontsize=8)
    height, width = result.receptive_field
    figure.suptitle(title or f"top-{k} patches ({height}x{width} receptive field)")
    figure.tight_layout()
    return figure
