import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sklearn_confusion_matrix

from kcnn.viz import confusion_matrix, plot_confusion_matrix, plot_training_curves, save_figure


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
