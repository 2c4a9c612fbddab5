import numpy as np
import pytest
from matplotlib import pyplot as plt
from sklearn.metrics import confusion_matrix as sklearn_confusion_matrix

from kcnn.viz import (
    confusion_matrix,
    draw_masks,
    plot_boxes,
    plot_confusion_matrix,
    plot_detection_grid,
    plot_inpainting_grid,
    plot_training_curves,
    save_figure,
)


def test_confusion_matrix_matches_scikit_learn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 200)
    predictions = np.where(rng.random(200) < 0.7, labels, rng.integers(0, 5, 200))
    np.testing.assert_array_equal(
        confusion_matrix(labels, predictions, 5),
        sklearn_confusion_matrix(labels, predictions, labels=range(5)),
    )
    with pytest.raises(ValueError, match="must have the same length. Received: 3 and 2"):
        confusion_matrix([0, 1, 2], [0, 1], 3)


def test_training_curves_plot_each_metric_with_its_validation_twin(tmp_path):
    history = {"loss": [1.0, 0.5, 0.2], "val_loss": [1.1, 0.7, 0.4], "accuracy": [0.5, 0.7, 0.9]}
    figure = plot_training_curves(history, title="run")
    loss_axis, accuracy_axis = figure.axes
    assert loss_axis.get_title() == "loss" and accuracy_axis.get_title() == "accuracy"
    np.testing.assert_array_equal(loss_axis.lines[1].get_ydata(), history["val_loss"])
    np.testing.assert_array_equal(accuracy_axis.lines[0].get_xdata(), [1, 2, 3])
    assert len(accuracy_axis.lines) == 1
    path = save_figure(figure, tmp_path / "curves.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="holds no metric"):
        plot_training_curves({})


def test_confusion_matrix_plot_shows_row_fractions():
    matrix = np.array([[3, 1], [0, 4]])
    figure = plot_confusion_matrix(matrix, ["cat", "dog"])
    texts = [text.get_text() for text in figure.axes[0].texts]
    assert texts == ["0.75", "0.25", "0.00", "1.00"]
    counts = plot_confusion_matrix(matrix, normalize=False)
    assert [text.get_text() for text in counts.axes[0].texts] == ["3", "1", "0", "4"]
    with pytest.raises(ValueError, match="`class_names` must have 2 entries"):
        plot_confusion_matrix(matrix, ["cat"])


def test_training_curves_from_a_run_folder(tmp_path):
    (tmp_path / "history.csv").write_text(
        "epoch,accuracy,loss,val_accuracy,val_loss\n0,0.5,1.0,0.4,1.2\n1,0.8,0.6,0.7,0.9\n"
    )
    figure = plot_training_curves(tmp_path)
    accuracy_axis, loss_axis = figure.axes
    np.testing.assert_array_equal(loss_axis.lines[1].get_ydata(), [1.2, 0.9])
    assert figure.texts[0].get_text() == tmp_path.name
    with pytest.raises(FileNotFoundError, match="has no history.csv"):
        plot_training_curves(tmp_path / "missing")


def test_boxes_are_drawn_where_given_with_labels_and_scores(tmp_path):
    image = np.zeros((40, 60, 3), np.uint8)
    boxes = [[5, 10, 25, 30], [30, 2, 58, 20]]
    figure = plot_boxes(image, boxes, [1, 2], [0.9, 0.456], ["background", "cat", "dog"])
    rectangles = [p for p in figure.axes[0].patches if p.get_width() > 0]
    assert [(r.get_x(), r.get_y(), r.get_width(), r.get_height()) for r in rectangles] == [
        (4.5, 9.5, 20, 20),
        (29.5, 1.5, 28, 18),
    ]
    assert [text.get_text() for text in figure.axes[0].texts] == ["cat 0.90", "dog 0.46"]
    ground_truth = plot_boxes(image, boxes, [1, 2])
    assert [text.get_text() for text in ground_truth.axes[0].texts] == ["1", "2"]
    assert save_figure(figure, tmp_path / "boxes.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match=r"`boxes` must be \(N, 4\) with one label each"):
        plot_boxes(image, boxes, [1])
    with pytest.raises(ValueError, match="`scores` must have one value per box"):
        plot_boxes(image, boxes, [1, 2], [0.5])


def test_detection_grid_draws_ground_truth_left_and_detections_right():
    images = np.zeros((3, 32, 32, 3), np.uint8)
    ground_truth = [
        (np.array([[2, 4, 12, 20]]), np.array([1])),
        (np.zeros((0, 4)), np.array([], int)),
        (np.array([[0, 0, 8, 8], [8, 8, 16, 16]]), np.array([0, 2])),
    ]
    detections = [
        (np.array([[3, 4, 12, 21]]), np.array([1]), np.array([0.875])),
        (np.zeros((0, 4)), np.array([], int), np.array([])),
        (np.array([[0, 0, 8, 8]]), np.array([0]), np.array([0.5])),
    ]
    names = ["circle", "square", "star"]
    figure = plot_detection_grid(images, ground_truth, detections, names, max_rows=2)
    assert len(figure.axes) == 4  # two rows of ground truth / detections
    true_axis, detected_axis = figure.axes[:2]
    assert (true_axis.get_title(), detected_axis.get_title()) == ("ground truth", "detections")
    assert [text.get_text() for text in true_axis.texts] == ["square"]
    assert [text.get_text() for text in detected_axis.texts] == ["square 0.88"]
    (rectangle,) = [patch for patch in detected_axis.patches if patch.get_width() > 0]
    assert (rectangle.get_x(), rectangle.get_y(), rectangle.get_height()) == (2.5, 3.5, 17)
    assert len(figure.axes[3].texts) == 0 and figure.axes[3].get_xlabel() == "0 detections"
    with pytest.raises(ValueError, match="must describe the same images"):
        plot_detection_grid(images, ground_truth[:2], detections, names)
    one_each = plot_detection_grid(
        images, ground_truth, detections, names, column_titles=("truth", "prediction")
    )
    assert [axis.get_title() for axis in one_each.axes[:2]] == ["truth", "prediction"]
    assert one_each.axes[1].get_xlabel() == ""


def test_detection_grid_overlays_each_mask_in_its_class_colour():
    images = np.zeros((1, 6, 8, 3), np.uint8)
    true_mask = np.zeros((1, 6, 8), bool)
    true_mask[0, 1:3, 2:5] = True
    detected_masks = np.zeros((2, 6, 8), bool)
    detected_masks[0, 4:, :2] = True
    detected_masks[1, 0, 7] = True
    figure = plot_detection_grid(
        images,
        [(np.array([[2, 1, 5, 3]]), np.array([2]), true_mask)],
        [(np.zeros((2, 4)), np.array([0, 1]), np.array([0.9, 0.8]), detected_masks)],
        ["a", "b", "c"],
    )
    colours = plt.get_cmap("tab10")(np.arange(10))
    true_axis, detected_axis = figure.axes
    overlays = [image.get_array() for image in true_axis.images[1:]]
    assert len(overlays) == 1
    np.testing.assert_array_equal(overlays[0][..., 3] > 0, true_mask[0])
    np.testing.assert_allclose(overlays[0][1, 2, :3], colours[2][:3])
    overlays = [image.get_array() for image in detected_axis.images[1:]]
    for overlay, mask, label in zip(overlays, detected_masks, (0, 1), strict=True):
        np.testing.assert_array_equal(overlay[..., 3] > 0, mask)
        np.testing.assert_allclose(overlay[mask][0, :3], colours[label][:3])
    with pytest.raises(ValueError, match="one per label"):
        draw_masks(true_axis, detected_masks, [0])


def test_training_curves_give_validation_only_metrics_a_panel():
    history = {"loss": [1.0, 0.5], "val_loss": [1.1, 0.7], "val_map": [0.1, 0.4]}
    loss_axis, map_axis = plot_training_curves(history).axes
    assert (loss_axis.get_title(), map_axis.get_title()) == ("loss", "map")
    np.testing.assert_array_equal(map_axis.lines[0].get_ydata(), [0.1, 0.4])
    assert map_axis.lines[0].get_label() == "validation"


def test_inpainting_grid_has_four_columns_in_order(tmp_path):
    rng = np.random.default_rng(0)
    truth, output = rng.random((2, 3, 8, 8, 3))
    masked = truth * (rng.random((3, 8, 8, 1)) > 0.3)
    composited = np.where(masked > 0, truth, output)
    figure = plot_inpainting_grid(masked, output, composited, truth, max_rows=2)
    assert len(figure.axes) == 8
    assert [axis.get_title() for axis in figure.axes[:4]] == [
        "masked input",
        "output",
        "composited",
        "ground truth",
    ]
    np.testing.assert_allclose(figure.axes[5].images[0].get_array(), output[1])
    assert save_figure(figure, tmp_path / "inpainting.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="must have the same shape"):
        plot_inpainting_grid(masked, output[:2], composited, truth)
