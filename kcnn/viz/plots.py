"""Plots of a training run: learning curves and the confusion matrix."""

import matplotlib

matplotlib.use("Agg")  # runs write PNG files; no display is needed or assumed

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_training_curves(history, title=None):
    """Plots each metric of a Keras history against the epoch, train and validation together.

    Args:
        history: a `keras.callbacks.History`, or a dict mapping metric names (`"loss"`,
            `"val_loss"`, `"accuracy"`, ...) to one value per epoch.
        title: str or None. Figure title.

    Returns:
        A matplotlib `Figure` with one panel per metric (the `val_` twin on the same panel).

    Raises:
        ValueError: if the history holds no metric.
    """
    values = getattr(history, "history", history)
    names = [name for name in values if not name.startswith("val_") and name != "epoch"]
    names = names or [name[4:] for name in values if name.startswith("val_")]
    if not names:
        raise ValueError("`history` holds no metric to plot.")
    figure, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.5), squeeze=False)
    for axis, name in zip(axes[0], names, strict=True):
        for key, label in ((name, "train"), (f"val_{name}", "validation")):
            if key in values:
                series = np.asarray(values[key], dtype=float)
                axis.plot(np.arange(1, len(series) + 1), series, marker="o", label=label)
        axis.set_xlabel("epoch")
        axis.set_title(name)
        axis.grid(alpha=0.3)
        axis.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def confusion_matrix(labels, predictions, num_classes):
    """Counts (true class, predicted class) pairs: row i, column j = true i predicted j."""
    labels = np.asarray(labels, dtype=np.int64).ravel()
    predictions = np.asarray(predictions, dtype=np.int64).ravel()
    if labels.shape != predictions.shape:
        raise ValueError(
            "`labels` and `predictions` must have the same length. "
            f"Received: {labels.shape[0]} and {predictions.shape[0]}"
        )
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def plot_confusion_matrix(matrix, class_names=None, normalize=True, title=None):
    """Draws a confusion matrix as a heat map with the count or row fraction in each cell.

    Args:
        matrix: (K, K) array of counts, rows = true class, columns = predicted class.
        class_names: sequence of K names, or None for 0..K-1.
        normalize: bool. Colour and label by the fraction of each true class (recall per
            cell) instead of raw counts. Defaults to True.
        title: str or None. Figure title.

    Returns:
        A matplotlib `Figure`.
    """
    matrix = np.asarray(matrix)
    size = matrix.shape[0]
    if matrix.ndim != 2 or matrix.shape[1] != size:
        raise ValueError(f"`matrix` must be square. Received shape: {matrix.shape}")
    names = list(class_names) if class_names is not None else [str(i) for i in range(size)]
    if len(names) != size:
        raise ValueError(f"`class_names` must have {size} entries. Received: {len(names)} names")
    shown = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1) if normalize else matrix
    figure, axis = plt.subplots(figsize=(0.6 * size + 3, 0.6 * size + 2.5))
    image = axis.imshow(shown, cmap="Blues", vmin=0)
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    axis.set_xticks(range(size), names, rotation=45, ha="right")
    axis.set_yticks(range(size), names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    threshold = shown.max() / 2 if shown.size else 0
    for row in range(size):
        for column in range(size):
            value = shown[row, column]
            text = f"{value:.2f}" if normalize else str(int(value))
            colour = "white" if value > threshold else "black"
            axis.text(column, row, text, ha="center", va="center", fontsize=7, color=colour)
    axis.set_title(title or ("confusion matrix (row-normalised)" if normalize else "confusion"))
    figure.tight_layout()
    return figure


def save_figure(figure, path, dpi=120):
    """Writes `figure` to `path` (PNG) and closes it."""
    figure.savefig(path, dpi=dpi)
    plt.close(figure)
    return path


def _colour_table(num_classes):
    colours = plt.get_cmap("tab10" if num_classes <= 10 else "tab20")(np.arange(num_classes))
    colours = colours[:, :3]
    colours[0] = 0.0  # background stays black in the overlay
    return colours


def plot_segmentation_grid(images, masks, predictions, class_names, max_rows=6, title=None):
    """Rows of image / ground truth overlay / prediction overlay for segmentation results.

    Args:
        images: `(N, H, W, 3)` uint8 or float in [0, 1].
        masks: `(N, H, W)` integer ground-truth classes.
        predictions: `(N, H, W)` integer predicted classes.
        class_names: sequence of K names (the legend).
        max_rows: int. At most this many examples. Defaults to 6.
        title: str or None.

    Returns:
        A matplotlib `Figure`.
    """
    images = np.asarray(images)
    if images.dtype == np.uint8:
        images = images / 255.0
    masks, predictions = np.asarray(masks), np.asarray(predictions)
    if not masks.shape == predictions.shape == images.shape[:3]:
        raise ValueError(
            "`images`, `masks` and `predictions` must describe the same pixels. Received: "
            f"{images.shape}, {masks.shape}, {predictions.shape}"
        )
    rows = min(max_rows, len(images))
    colours = _colour_table(len(class_names))
    figure, axes = plt.subplots(rows, 3, figsize=(7.5, 2.5 * rows), squeeze=False)
    for row in range(rows):
        panels = [
            ("image", images[row]),
            ("ground truth", 0.45 * images[row] + 0.55 * colours[masks[row]]),
            ("prediction", 0.45 * images[row] + 0.55 * colours[predictions[row]]),
        ]
        for axis, (name, picture) in zip(axes[row], panels, strict=True):
            axis.imshow(np.clip(picture, 0, 1))
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(name)
    handles = [
        plt.matplotlib.patches.Patch(color=colours[index], label=name)
        for index, name in enumerate(class_names)
    ]
    figure.legend(handles=handles, loc="lower center", ncol=min(len(class_names), 5))
    if title:
        figure.suptitle(title)
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    return figure
