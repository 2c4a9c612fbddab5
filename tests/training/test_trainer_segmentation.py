import json

import keras
import numpy as np

from kcnn.data import load_segmentation_data
from kcnn.tasks import segmentation_scores
from kcnn.training import config_from_dict, evaluate, train
from kcnn.viz import confusion_matrix


def test_segmentation_run_folder_and_metrics_are_real(tmp_path):
    config = config_from_dict(
        {
            "name": "segment_test",
            "task": "segmentation",
            "output_dir": str(tmp_path),
            "data": {
                "name": "shapes",
                "args": {"train_count": 48, "test_count": 12},
                "image_size": 32,
                "batch_size": 8,
                "augment": "flip",
            },
            "model": {
                "name": "unet",
                "backbone_args": {"filters": [4, 8, 16]},
                "args": {"decoder_filters": [8, 4]},
            },
            "train": {"epochs": 2, "loss": {"crossentropy": 1.0, "dice": 1.0}},
            "export": {"parity_samples": 4},
        }
    )
    run_dir = train(config, verbose=0)
    for name in ("model.keras", "metrics.json", "predictions.png", "curves.png", "model.tflite"):
        assert (run_dir / name).stat().st_size > 0, name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # Recompute the mean IoU independently from the saved model and the held-out scenes.
    data = load_segmentation_data("shapes", train_count=48, test_count=12, image_size=32)
    model = keras.saving.load_model(run_dir / "model.keras")
    predicted = model.predict(data.x_test / np.float32(255), verbose=0).argmax(-1)
    matrix = confusion_matrix(data.y_test.ravel(), predicted.ravel(), 5)
    expected = segmentation_scores(matrix, data.class_names)
    assert metrics["mean_iou"] == expected["mean_iou"]
    assert metrics["pixel_accuracy"] == expected["pixel_accuracy"]
    report = json.loads((run_dir / "export_report.json").read_text())
    assert (
        report["tflite"]["none"]["max_abs_error"] <= 1e-4
        and report["tflite"]["none"]["top1_agreement"] > 0.99
    )
    assert evaluate(run_dir)["mean_iou"] == metrics["mean_iou"]


def test_held_out_shapes_scenes_differ_from_training_scenes():
    data = load_segmentation_data("shapes", train_count=20, test_count=20, image_size=32)
    train = {image.tobytes() for image in data.x_train}
    assert not any(image.tobytes() in train for image in data.x_test)
    assert set(np.unique(data.y_train)) <= set(range(len(data.class_names)))
