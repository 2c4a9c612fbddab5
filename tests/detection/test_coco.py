import json
import math

import keras
import numpy as np
import pytest

from kcnn.detection.coco import (
    COCOMetricsCallback,
    coco_evaluate,
    load_coco_detections,
    load_coco_ground_truth,
    save_coco_detections,
    to_coco_detections,
    to_coco_ground_truth,
)
from kcnn.detection.decode import DetectionDecoder

# pycocotools computes precision as tp / (tp + fp + eps), so "1" is 1 - 2e-16.
EXACT = 1e-12


def padded(rows_per_image, max_boxes=3):
    """(N, max_boxes, 5) boxes from per-image lists of (x_min, y_min, x_max, y_max, class)."""
    boxes = np.full((len(rows_per_image), max_boxes, 5), -1.0, np.float32)
    for index, rows in enumerate(rows_per_image):
        boxes[index, : len(rows)] = np.reshape(rows, (-1, 5))
    return boxes


def detection(image_id, box, score, category_id=1):
    x_min, y_min, x_max, y_max = box
    return {
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [x_min, y_min, x_max - x_min, y_max - y_min],
        "score": score,
    }


def test_ground_truth_and_detections_in_coco_format():
    boxes = padded([[(2, 4, 10, 8, 1)], [(0, 0, 5, 5, 0), (1, 1, 3, 9, 1)]])
    ground_truth = to_coco_ground_truth(boxes, ("cat", "dog"), image_size=(12, 16))
    assert ground_truth["images"] == [
        {"id": 0, "height": 12, "width": 16},
        {"id": 1, "height": 12, "width": 16},
    ]
    assert ground_truth["categories"] == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    annotations = ground_truth["annotations"]
    assert [(a["image_id"], a["category_id"], a["bbox"], a["area"]) for a in annotations] == [
        (0, 2, [2, 4, 8, 4], 32),
        (1, 1, [0, 0, 5, 5], 25),
        (1, 2, [1, 1, 2, 8], 16),
    ]
    assert len({a["id"] for a in annotations}) == 3

    detections = to_coco_detections(
        boxes=[[[1, 2, 4, 6], [9, 9, 9, 9]], [[0, 0, 2, 2], [0, 0, 0, 0]]],
        scores=[[0.9, 0.5], [0.7, 0.0]],
        classes=[[1, 0], [0, -1]],
        counts=[2, 1],
        image_ids=[10, 11],
        category_ids=[5, 7],
    )
    assert detections == [
        {"image_id": 10, "category_id": 7, "bbox": [1, 2, 3, 4], "score": 0.9},
        {"image_id": 10, "category_id": 5, "bbox": [9, 9, 0, 0], "score": 0.5},
        {"image_id": 11, "category_id": 5, "bbox": [0, 0, 2, 2], "score": 0.7},
    ]


def test_perfect_predictions_score_one():
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(4):
        corners = rng.uniform(0, 20, (3, 2))
        sizes = rng.uniform(3, 12, (3, 2))
        rows.append(np.concatenate([corners, corners + sizes, rng.integers(0, 2, (3, 1))], -1))
    boxes = padded(rows)
    ground_truth = to_coco_ground_truth(boxes, ("a", "b", "never_seen"), image_size=32)
    detections = [
        detection(image, row[:4], score=0.5 + 0.1 * index, category_id=int(row[4]) + 1)
        for image, image_rows in enumerate(rows)
        for index, row in enumerate(image_rows)
    ]
    metrics = coco_evaluate(ground_truth, detections)
    for name in ("map", "map50", "map75"):
        assert metrics[name] == pytest.approx(1.0, abs=EXACT)
    assert metrics["per_class"]["a"] == pytest.approx(1.0, abs=EXACT)
    assert metrics["per_class"]["b"] == pytest.approx(1.0, abs=EXACT)
    # A class without ground truth has no AP, and does not pull the mean down.
    assert math.isnan(metrics["per_class"]["never_seen"])


def test_hand_computed_ap_of_a_shifted_detection():
    # Two images, one class, one ground-truth box each: G0 = G1 = (0, 0, 10, 10).
    #   d0 on image 0: exactly G0, score 0.9.
    #   d1 on image 1: G1 shifted right by 2 px, (2, 0, 12, 10), score 0.8.
    #      IoU = (8 * 10) / (100 + 100 - 80) = 80 / 120 = 2 / 3.
    #   d2 on image 0: (20, 20, 30, 30), overlapping nothing, score 0.3.
    # COCO matches a detection when IoU >= t, for t = 0.50, 0.55, ..., 0.95 (10 thresholds),
    # and averages the interpolated precision p(r) = max precision at recall >= r over the
    # 101 recall points r = 0, 0.01, ..., 1 (0 where recall r is never reached).
    # - t <= 0.65 (4 thresholds): d0 TP, d1 TP, d2 FP in score order; (recall, precision) =
    #   (0.5, 1), (1, 1), (1, 2/3). p(r) = 1 for every r: AP = 1. The false positive comes
    #   after full recall and costs nothing.
    # - t >= 0.70 (6 thresholds): d0 TP, d1 FP, d2 FP: (0.5, 1), (0.5, 1/2), (0.5, 1/3).
    #   p(r) = 1 for the 51 points r <= 0.5, and 0 for the 50 points above: AP = 51 / 101.
    # mAP@.5 = 1, mAP@.75 = 51 / 101, mAP@[.5:.95] = (4 * 1 + 6 * 51 / 101) / 10 = 71 / 101.
    ground_truth = to_coco_ground_truth(
        padded([[(0, 0, 10, 10, 0)], [(0, 0, 10, 10, 0)]]), ("thing",), image_size=32
    )
    detections = [
        detection(0, (0, 0, 10, 10), 0.9),
        detection(1, (2, 0, 12, 10), 0.8),
        detection(0, (20, 20, 30, 30), 0.3),
    ]
    metrics = coco_evaluate(ground_truth, detections)
    assert metrics["map50"] == pytest.approx(1.0, abs=EXACT)
    assert metrics["map75"] == pytest.approx(51 / 101, abs=EXACT)
    assert metrics["map"] == pytest.approx(71 / 101, abs=EXACT)
    assert metrics["per_class"] == {"thing": pytest.approx(71 / 101, abs=EXACT)}


def test_images_without_predictions_count_as_missed():
    boxes = padded([[(0, 0, 10, 10, 0)], [(5, 5, 15, 15, 0)]])
    ground_truth = to_coco_ground_truth(boxes, ("thing",), image_size=32)
    only_first = [detection(0, (0, 0, 10, 10), 0.9)]

    alone = to_coco_ground_truth(boxes[:1], ("thing",), image_size=32)
    assert coco_evaluate(alone, only_first)["map"] == pytest.approx(1.0, abs=EXACT)
    # With image 1 in the ground truth, its box is missed: recall 0.5 at every threshold,
    # p(r) = 1 for the 51 points r <= 0.5, AP = 51 / 101.
    metrics = coco_evaluate(ground_truth, only_first)
    for name in ("map", "map50", "map75"):
        assert metrics[name] == pytest.approx(51 / 101, abs=EXACT)


def test_no_detections_score_zero():
    ground_truth = to_coco_ground_truth(padded([[(0, 0, 10, 10, 0)], []]), ("a", "b"), 32)
    metrics = coco_evaluate(ground_truth, [])
    assert (metrics["map"], metrics["map50"], metrics["map75"]) == (0.0, 0.0, 0.0)
    assert metrics["per_class"]["a"] == 0.0 and math.isnan(metrics["per_class"]["b"])


def test_json_round_trip_and_errors_name_the_file(tmp_path):
    detections = [detection(0, (1, 2, 5, 9), 0.75)]
    path = save_coco_detections(detections, tmp_path / "out" / "detections.json")
    assert load_coco_detections(path) == detections

    annotations = {
        "images": [{"id": 7, "width": 20, "height": 20}],
        "annotations": [{"image_id": 7, "category_id": 3, "bbox": [1, 2, 4, 5]}],
        "categories": [{"id": 3, "name": "cup"}],
    }
    (tmp_path / "gt.json").write_text(json.dumps(annotations))
    ground_truth = load_coco_ground_truth(tmp_path / "gt.json")
    assert ground_truth["annotations"][0] | {"id": 0} == {
        "image_id": 7,
        "category_id": 3,
        "bbox": [1, 2, 4, 5],
        "area": 20,
        "iscrowd": 0,
        "id": 0,
    }
    perfect = [{"image_id": 7, "category_id": 3, "bbox": [1, 2, 4, 5], "score": 1.0}]
    assert coco_evaluate(ground_truth, perfect)["map"] == pytest.approx(1.0, abs=EXACT)

    annotations["annotations"][0]["image_id"] = 8
    (tmp_path / "bad.json").write_text(json.dumps(annotations))
    with pytest.raises(ValueError, match=r"bad.json': annotation 0 refers to image id 8"):
        load_coco_ground_truth(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(ValueError, match=r"broken.json' is not valid JSON"):
        load_coco_detections(tmp_path / "broken.json")
    with pytest.raises(FileNotFoundError, match=r"missing.json' does not exist"):
        load_coco_ground_truth(tmp_path / "missing.json")
    with pytest.raises(ValueError, match=r"detection 0 has category id 9, not in the ground"):
        coco_evaluate(ground_truth, [detection(7, (0, 0, 1, 1), 0.5, category_id=9)])
    with pytest.raises(ValueError, match="`ground_truth` has no boxes"):
        coco_evaluate(to_coco_ground_truth(padded([[]]), ("a",), 8), [])


def raw_model(num_classes=2):
    """image (32 x 32) -> raw (B, 16, 4 + num_classes) at one stride-8 level."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    distances = keras.layers.Conv2D(4, 8, strides=8, activation="exponential")(inputs)
    logits = keras.layers.Conv2D(num_classes, 8, strides=8)(inputs)
    raw = keras.layers.Concatenate()([distances, logits])
    model = keras.Model(inputs, keras.layers.Reshape((16, 4 + num_classes))(raw))
    model.compile(optimizer="sgd", loss="mse")
    return model


def test_callback_writes_map_into_history():
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), np.uint8)
    boxes = padded([[(0, 0, 10, 10, 0)], [(4, 4, 20, 12, 1)], [(3, 3, 9, 9, 0)], []])
    half_right = np.array([[0, 0, 10, 10], [4, 4, 20, 12], [0, 0, 0, 0], [0, 0, 0, 0]])

    def oracle(predictions):
        # Finds the first two boxes (batch_size covers all 4 images), misses the third.
        assert predictions.shape == (4, 16, 6)
        return half_right[:, None], np.ones((4, 1)), np.array([[0], [1], [0], [0]]), [1, 1, 0, 0]

    # Class 0: 2 boxes, 1 found first (recall 0.5): AP 51 / 101. Class 1: 1 box, found: AP 1.
    expected = (51 / 101 + 1) / 2
    model = raw_model()
    callback = COCOMetricsCallback(images, boxes, ("a", "b"), oracle, every=2, batch_size=4)
    targets = np.zeros((4, 16, 6), np.float32)
    history = model.fit(images, targets, epochs=3, verbose=0, callbacks=[callback])
    # Epoch 2 is an every-2nd epoch and epoch 3 the last; epoch 1 logs NaN.
    assert math.isnan(history.history["val_map"][0])
    assert history.history["val_map"][1:] == pytest.approx([expected] * 2, abs=EXACT)
    assert history.history["val_map50"][1:] == pytest.approx([expected] * 2, abs=EXACT)
    assert callback.result["per_class"] == pytest.approx({"a": 51 / 101, "b": 1.0}, abs=EXACT)


def test_callback_decodes_with_a_detection_decoder():
    images = np.random.default_rng(1).uniform(size=(3, 32, 32, 3)).astype(np.float32)
    boxes = padded([[(0, 0, 16, 16, 0)], [(8, 8, 24, 24, 1)], [(0, 8, 32, 30, 0)]])
    model = raw_model()
    decoder = DetectionDecoder(2, 32, strides=(8,), max_detections=10)
    callback = COCOMetricsCallback(images, boxes, ("a", "b"), decoder, batch_size=2)
    callback.set_model(model)
    logs = {"loss": 1.0}
    callback.on_epoch_end(0, logs)

    decoded = decoder(model.predict(images, verbose=0))
    detections = to_coco_detections(
        *(np.asarray(decoded[key]) for key in ("boxes", "scores", "classes", "count"))
    )
    assert len(detections) > 0
    expected = coco_evaluate(to_coco_ground_truth(boxes, ("a", "b"), 32), detections)
    assert logs["val_map"] == pytest.approx(expected["map"], abs=1e-9)
    assert logs["val_map75"] == pytest.approx(expected["map75"], abs=1e-9)


def test_callback_bad_arguments():
    images, boxes = np.zeros((2, 8, 8, 3), np.uint8), padded([[], []])
    with pytest.raises(ValueError, match="`every` must be a positive int. Received: every=0"):
        COCOMetricsCallback(images, boxes, ("a",), lambda raw: raw, every=0)
    with pytest.raises(ValueError, match=r"len\(images\)=2, len\(boxes\)=1"):
        COCOMetricsCallback(images, boxes[:1], ("a",), lambda raw: raw)
    with pytest.raises(ValueError, match="`decode_fn` must be callable"):
        COCOMetricsCallback(images, boxes, ("a",), None)


def test_mask_ap_reads_the_masks_not_the_boxes():
    """Two detections with the ground truth's exact box: one whose mask is the object's (a
    triangle filling half the box), one whose mask covers a part of it. Box AP cannot tell
    them apart; mask AP counts the IoU thresholds each mask IoU passes, worked out here
    with NumPy."""
    from kcnn.data import decode_mask

    size = 24
    ys, xs = np.mgrid[:size, :size]
    triangle = ((xs >= 4) & (xs < 20) & (ys >= 4) & (ys < 20) & (xs - 4 >= ys - 4)).astype(np.uint8)
    box = [4, 4, 20, 20]
    partial = triangle * (ys < 15)  # the triangle's top rows only
    iou = (triangle & partial).sum() / (triangle | partial).sum()
    assert 0.5 < iou < 0.95
    thresholds = np.linspace(0.5, 0.95, 10)
    ground_truth = to_coco_ground_truth(
        padded([[[*box, 0]]], max_boxes=2),
        ("thing",),
        size,
        masks=np.stack([np.stack([triangle, np.zeros_like(triangle)])]),
    )
    annotation = ground_truth["annotations"][0]
    assert annotation["area"] == triangle.sum()
    np.testing.assert_array_equal(decode_mask(annotation["segmentation"]), triangle)
    for mask, expected_map in ((triangle, 1.0), (partial, np.mean(thresholds <= iou + 1e-12))):
        detections = to_coco_detections(
            [[box]], [[0.9]], [[0]], [1], masks=mask[np.newaxis, np.newaxis]
        )
        assert coco_evaluate(ground_truth, detections)["map"] == pytest.approx(1.0, abs=EXACT)
        scores = coco_evaluate(ground_truth, detections, iou_type="segm")
        assert scores["map"] == pytest.approx(expected_map, abs=EXACT)
        assert scores["map50"] == pytest.approx(1.0, abs=EXACT)
        assert scores["map75"] == pytest.approx(float(iou >= 0.75 or mask is triangle), abs=EXACT)


def test_mask_ap_needs_masks_on_both_sides():
    boxes = padded([[[0, 0, 8, 8, 0]]], max_boxes=1)
    mask = np.zeros((1, 1, 16, 16), np.uint8)
    mask[..., :8, :8] = 1
    with_masks = to_coco_ground_truth(boxes, ("square",), 16, masks=mask)
    plain = [detection(0, [0, 0, 8, 8], 1.0)]
    with pytest.raises(ValueError, match=r'detection 0 has no "segmentation" RLE'):
        coco_evaluate(with_masks, plain, iou_type="segm")
    masked = to_coco_detections([[[0, 0, 8, 8]]], [[1.0]], [[0]], [1], masks=mask)
    with pytest.raises(ValueError, match=r'annotation 0 has no "segmentation"'):
        coco_evaluate(to_coco_ground_truth(boxes, ("square",), 16), masked, iou_type="segm")
    with pytest.raises(ValueError, match=r"`iou_type` must be one of \('bbox', 'segm'\)"):
        coco_evaluate(with_masks, masked, iou_type="keypoints")
    with pytest.raises(ValueError, match=r"`masks` must have shape \(1, 1, 16, 16\)"):
        to_coco_ground_truth(boxes, ("square",), 16, masks=mask[..., :8])
    with pytest.raises(ValueError, match=r"`masks` must have shape \(N, max_detections, H, W\)"):
        to_coco_detections([[[0, 0, 8, 8]]], [[1.0]], [[0]], [1], masks=mask[0])
