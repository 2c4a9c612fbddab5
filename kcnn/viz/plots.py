"""Plots of results: learning curves, confusion matrix, segmentation, boxes, inpainting."""

import os
from pathlib import Path

import matplotlib

# Runs write PNG files and need no display: Agg, unless a backend was chosen in MPLBACKEND
# (Jupyter's kernel puts its inline backend there, so notebooks show the figures).
if not os.environ.get("MPLBACKEND"):
    matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from kcnn._files import read_history_csv  # noqa: E402


def plot_training_curves(history, title=None):
    """Plots each metric of a Keras history against the epoch, train and validation together.

    Args:
        history: a `keras.callbacks.History`, a dict mapping metric names (`"loss"`,
            `"val_loss"`, `"accuracy"`, ...) to one value per epoch, or a kcnn run folder
            (str or path; its `history.csv` is read).
        title: str or None. Figure title. Defaults to the run folder's name for a folder.

    Returns:
        A matplotlib `Figure` with one panel per metric (the `val_` twin on the same panel).

    Raises:
        FileNotFoundError: if a run folder has no `history.csv`.
        ValueError: if the history holds no metric.
    """
    if isinstance(history, str | os.PathLike):
        run_dir = Path(history)
        if not (run_dir / "history.csv").is_file():
            raise FileNotFoundError(f"{run_dir} has no history.csv: not a kcnn run folder.")
        history, title = read_history_csv(run_dir / "history.csv"), title or run_dir.name
    values = getattr(history, "history", history)
    names = [name for name in values if not name.startswith("val_") and name != "epoch"]
    # Metrics logged on validation data only (e.g. COCO mAP) get a panel of their own.
    names += [name[4:] for name in values if name.startswith("val_") and name[4:] not in values]
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


def _as_display(image):
    """uint8 or float image `(H, W)`, `(H, W, 1)` or `(H, W, 3)` -> floats in [0, 1] for imshow."""
    image = np.asarray(image)
    image = image / 255.0 if image.dtype == np.uint8 else image.astype(np.float64)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] != 3):
        raise ValueError(
            f"An image must be (H, W), (H, W, 1) or (H, W, 3). Received shape: {np.shape(image)}"
        )
    return np.clip(image, 0.0, 1.0)


def show_image(axis, image, title=None):
    """Draws a grey or RGB image (uint8, or float in [0, 1]) on `axis` without ticks."""
    picture = _as_display(image)
    axis.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0.0, vmax=1.0)
    axis.set_xticks([])
    axis.set_yticks([])
    if title is not None:
        axis.set_title(title, fontsize=9)


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


def _box_arrays(boxes, labels, scores):
    boxes = np.asarray(boxes, dtype=np.float64)
    boxes = boxes.reshape(0, 4) if boxes.size == 0 else boxes
    labels = np.asarray(labels, dtype=np.int64).ravel()
    if boxes.ndim != 2 or boxes.shape[1] != 4 or len(labels) != len(boxes):
        raise ValueError(
            "`boxes` must be (N, 4) with one label each. Received: "
            f"boxes.shape={boxes.shape} and {len(labels)} labels"
        )
    if scores is not None and len(scores) != len(boxes):
        raise ValueError(
            f"`scores` must have one value per box. Received: {len(scores)} scores and "
            f"{len(boxes)} boxes"
        )
    return boxes, labels


def draw_boxes(axis, boxes, labels, scores=None, class_names=None):
    """Draws `[x_min, y_min, x_max, y_max]` pixel boxes (exclusive max) on an axis that
    shows their image, each labelled with its class name (and score), coloured by class.

    Raises:
        ValueError: if boxes, labels and scores disagree in number, or a box is not (4,).
    """
    boxes, labels = _box_arrays(boxes, labels, scores)
    colours = plt.get_cmap("tab10")(np.arange(10))
    for index, ((x_min, y_min, x_max, y_max), label) in enumerate(zip(boxes, labels, strict=True)):
        colour = colours[label % 10]
        axis.add_patch(
            plt.matplotlib.patches.Rectangle(
                (x_min - 0.5, y_min - 0.5),
                x_max - x_min,
                y_max - y_min,
                fill=False,
                edgecolor=colour,
                linewidth=2,
            )
        )
        text = class_names[label] if class_names is not None else str(label)
        if scores is not None:
            text = f"{text} {scores[index]:.2f}"
        axis.text(
            x_min - 0.5,
            y_min - 0.5,
            text,
            color="white",
            fontsize=8,
            va="bottom",
            bbox={"facecolor": colour, "edgecolor": "none", "pad": 1.0, "alpha": 0.85},
        )


def draw_masks(axis, masks, labels, alpha=0.45):
    """Overlays `(n, H, W)` binary instance masks on an axis that shows their image, each
    filled in its class's colour (as `draw_boxes` colours the boxes).

    Raises:
        ValueError: if masks and labels disagree in number or the masks are not 3-D.
    """
    masks = np.asarray(masks, bool)
    labels = np.asarray(labels, np.int64).reshape(-1)
    if masks.ndim != 3 or len(masks) != len(labels):
        raise ValueError(
            "`masks` must be (n, H, W), one per label. Received: "
            f"masks.shape={masks.shape}, {len(labels)} labels"
        )
    colours = plt.get_cmap("tab10")(np.arange(10))
    for mask, label in zip(masks, labels, strict=True):
        overlay = np.zeros((*mask.shape, 4))
        overlay[mask] = (*colours[label % 10][:3], alpha)
        axis.imshow(overlay, interpolation="nearest")


def plot_boxes(image, boxes, labels, scores=None, class_names=None, title=None):
    """Draws boxes with their class name (and score) on an image.

    Args:
        image: `(H, W)` or `(H, W, C)` array, uint8 or float in [0, 1].
        boxes: `(N, 4)` pixel boxes `[x_min, y_min, x_max, y_max]` (what
            `kcnn.data.load_coco_detection` returns).
        labels: `(N,)` int class indices.
        scores: `(N,)` floats or None (ground truth). Defaults to None.
        class_names: sequence of names or None (the index is shown). Defaults to None.
        title: str or None.

    Returns:
        A matplotlib `Figure`.

    Raises:
        ValueError: if boxes, labels and scores disagree in number, or a box is not (4,).
    """
    _box_arrays(boxes, labels, scores)
    image = np.asarray(image)
    figure, axis = plt.subplots(figsize=(6, 6 * image.shape[0] / image.shape[1]))
    show_image(axis, image)
    draw_boxes(axis, boxes, labels, scores, class_names)
    if title:
        axis.set_title(title)
    figure.tight_layout()
    return figure


def plot_detection_grid(
    images,
    ground_truth,
    detections,
    class_names,
    max_rows=6,
    title=None,
    column_titles=("ground truth", "detections"),
):
    """Rows of ground-truth boxes / detected boxes (class name and score) on images.

    Args:
        images: `(N, H, W, C)` uint8 or float in [0, 1].
        ground_truth: N pairs `(boxes (n, 4), classes (n,))`, pixel boxes
            `[x_min, y_min, x_max, y_max]`, or triples with the boxes' binary instance
            masks `(n, H, W)` last, drawn under the boxes (`draw_masks`).
        detections: N triples `(boxes (m, 4), classes (m,), scores (m,))`, or with masks
            `(m, H, W)` as a fourth item.
        class_names: sequence of names, indexed by the classes.
        max_rows: int. At most this many images. Defaults to 6.
        title: str or None.
        column_titles: pair of str, above the two columns. Defaults to
            `("ground truth", "detections")`; with another second title the count of
            detections under each image is left out (e.g. one prediction per image).

    Returns:
        A matplotlib `Figure`: one row per image, ground truth left, detections right.

    Raises:
        ValueError: if the three sequences differ in length, or a row's boxes, classes
            and scores disagree in number.
    """
    if not len(images) == len(ground_truth) == len(detections):
        raise ValueError(
            "`images`, `ground_truth` and `detections` must describe the same images. "
            f"Received lengths {len(images)}, {len(ground_truth)}, {len(detections)}"
        )
    rows = min(max_rows, len(images))
    figure, axes = plt.subplots(rows, 2, figsize=(6, 3 * rows), squeeze=False)
    for row in range(rows):
        true_axis, detected_axis = axes[row]
        show_image(true_axis, images[row], column_titles[0] if row == 0 else None)
        true_boxes, true_classes, *true_masks = ground_truth[row]
        if true_masks:
            draw_masks(true_axis, true_masks[0], true_classes)
        draw_boxes(true_axis, true_boxes, true_classes, class_names=class_names)
        boxes, classes, scores, *masks = detections[row]
        show_image(detected_axis, images[row], column_titles[1] if row == 0 else None)
        if masks:
            draw_masks(detected_axis, masks[0], classes)
        draw_boxes(detected_axis, boxes, classes, scores, class_names)
        if column_titles[1] == "detections":
            detected_axis.set_xlabel(f"{len(boxes)} detections", fontsize=8)
    if title:
        figure.suptitle(title)
    figure.tight_layout(rect=(0, 0, 1, 0.98 if title else 1))
    return figure


def plot_inpainting_grid(masked, output, composited, truth, max_rows=6, title=None):
    """Rows of masked input / network output / output composited into the known pixels /
    ground truth for image inpainting.

    Args:
        masked, output, composited, truth: `(N, H, W, C)` arrays of the same shape, uint8 or
            float in [0, 1].
        max_rows: int. At most this many examples. Defaults to 6.
        title: str or None.

    Returns:
        A matplotlib `Figure`.

    Raises:
        ValueError: if the four arrays differ in shape.
    """
    columns = {
        "masked input": np.asarray(masked),
        "output": np.asarray(output),
        "composited": np.asarray(composited),
        "ground truth": np.asarray(truth),
    }
    shapes = {name: values.shape for name, values in columns.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(
            "`masked`, `output`, `composited` and `truth` must have the same shape. "
            f"Received: {shapes}"
        )
    rows = min(max_rows, len(columns["masked input"]))
    figure, axes = plt.subplots(rows, 4, figsize=(9, 2.4 * rows), squeeze=False)
    for row in range(rows):
        for axis, (name, values) in zip(axes[row], columns.items(), strict=True):
            show_image(axis, values[row], name if row == 0 else None)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure
