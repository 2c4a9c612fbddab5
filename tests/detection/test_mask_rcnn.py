"""Mask R-CNN: its masks against the mask head read at each detection, the train step's mask
term against a NumPy float64 reference, a few `fit` steps that learn two scenes' masks, the
decoder, the `.keras` round trip, the builtins-only TFLite file against Keras (masks
included), and the argument checks."""

import json

import keras
import numpy as np
import pytest

from kcnn.backbones import build_backbone
from kcnn.data import load_detection_data
from kcnn.detection import (
    MaskRCNN,
    MaskRCNNDecoder,
    detection_decoder,
    detection_loss,
    detector_with_decoder,
    generate_proposals,
    paste_masks,
    sample_rois,
)
from kcnn.detection.mask_rcnn import DetectionMasks
from kcnn.export import LiteRTRunner, export_tflite
from kcnn.tasks import get_task

from ..ops import roi_align_reference

SIZE = 64
TINY = {
    "fpn_channels": 16,
    "box_head_units": 32,
    "roi_batch_size": 64,
    "rpn_post_nms_top_k_test": 50,
    "score_threshold": 0.001,
    "max_detections": 10,
    "mask_head_filters": 16,
    "mask_head_convs": 2,
    "mask_pool_size": 7,
    "mask_rois_per_image": 8,
}


def _backbone():
    return build_backbone(
        "plain_cnn",
        input_shape=(SIZE, SIZE, 3),
        filters=(8, 8, 16, 16, 16, 16),
        convs_per_level=1,
        normalization=None,
    )


@pytest.fixture(scope="module")
def data():
    scenes = load_detection_data("shapes", image_size=SIZE, train_count=2, test_count=1, masks=True)
    targets = {"boxes": scenes.y_train.astype("float32"), "masks": scenes.masks_train}
    return scenes, scenes.x_train / np.float32(255), targets


@pytest.fixture(scope="module")
def trained(data):
    """A model fitted for 40 steps on two scenes (no batch norm: inference runs what
    training fitted), and its history."""
    scenes, images, targets = data
    keras.utils.set_random_seed(0)
    model = MaskRCNN(_backbone(), len(scenes.class_names), **TINY)
    model.compile(keras.optimizers.Adam(1e-2), loss=detection_loss(model, mask_weight=2.0))
    model.optimizer.build(model.trainable_variables)  # else fit traces its step twice
    history = model.fit(images, targets, batch_size=2, epochs=40, verbose=0)
    return model, history.history


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _mask_logits(model, images, boxes):
    """The mask head's logits `(B, R, m, m, K)` on per-image boxes `(B, R, 4)`."""
    features = model.feature_pyramid(images)
    flat, indices = model.mask_roi_boxes(np.asarray(boxes, "float32"))
    logits = model.mask_head(model.mask_roi_align([features, flat, indices]))
    m = model.mask_size
    return np.asarray(logits, np.float64).reshape(len(images), -1, m, m, model.num_classes)


def test_each_detection_carries_its_class_mask_read_at_its_box(trained, data):
    model, _ = trained
    _, images, _ = data
    raw = np.asarray(model.predict(images, verbose=0))
    m = model.mask_size
    assert raw.shape == (2, 10, 6 + m * m)
    rows, masks = raw[..., :6], raw[..., 6:].reshape(2, 10, m, m)
    logits = _mask_logits(model, images, rows[..., :4])
    classes = rows[..., 5].astype(int)
    assert (classes >= 0).sum() > 2
    for b, d in np.ndindex(2, 10):
        if classes[b, d] < 0:
            np.testing.assert_array_equal(masks[b, d], 0.0)
        else:
            expected = _sigmoid(logits[b, d, :, :, classes[b, d]])
            np.testing.assert_allclose(masks[b, d], expected, atol=1e-5)

    decoded = {k: np.asarray(v) for k, v in detection_decoder(model)(raw).items()}
    assert isinstance(detection_decoder(model), MaskRCNNDecoder)
    np.testing.assert_array_equal(
        decoded["masks"], np.where(classes[..., None, None] >= 0, masks, 0)
    )
    np.testing.assert_array_equal(decoded["boxes"][classes >= 0], rows[..., :4][classes >= 0])


def test_detection_masks_layer_reads_the_class_channel_and_zeros_padding():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2 * 3, 4, 4, 5)).astype("float32")
    detections = rng.random((2, 3, 6)).astype("float32")
    detections[..., 5] = [[4, 0, -1], [2, -1, -1]]
    rows = np.asarray(DetectionMasks()(detections, logits))
    assert rows.shape == (2, 3, 6 + 16)
    np.testing.assert_array_equal(rows[..., :6], detections)
    for b, d in np.ndindex(2, 3):
        k = int(detections[b, d, 5])
        expected = 0.0 if k < 0 else _sigmoid(logits[b * 3 + d, :, :, k].astype(np.float64))
        np.testing.assert_allclose(rows[b, d, 6:].reshape(4, 4), expected, atol=1e-6)


def test_train_step_mask_term_equals_a_numpy_float64_reference(data):
    scenes, images, targets = data
    keras.utils.set_random_seed(1)
    # Every foreground RoI in the mask branch, the ground truth of every object among them.
    model = MaskRCNN(_backbone(), len(scenes.class_names), **{**TINY, "mask_rois_per_image": None})
    model.compile(keras.optimizers.Adam(1e-3), loss=detection_loss(model, mask_weight=3.0))
    # A predictor far from its near-zero start, so that the loss depends on the targets.
    kernel = model.mask_head.predictor.kernel
    kernel.assign(np.random.default_rng(0).normal(0, 0.5, kernel.shape).astype("float32"))

    # The RoIs of step 0 (training proposals, step 0's seed), as the Faster R-CNN test does.
    features = model.feature_pyramid(images, training=True)
    objectness, deltas = model.rpn_head([features[level] for level in model.levels])
    proposals, _, valid = generate_proposals(
        list(objectness), list(deltas), model.region_proposals.anchors, SIZE, 1000, 500
    )
    _, roi_seed = model.sampling_seeds(0)
    rois = sample_rois(proposals, valid, targets["boxes"], 64, 0.25, seed=roi_seed)
    count = model.mask_rois
    assert count == 16
    boxes = np.asarray(rois["rois"], np.float64)[:, :count]
    classes = np.asarray(rois["classes"])[:, :count]
    matched = np.asarray(rois["matched"])[:, :count]
    assert (classes > 0).sum() >= 3 and len(np.unique(matched[1][classes[1] > 0])) == 3

    logits = _mask_logits(model, images, boxes)
    m, total, foreground = model.mask_size, 0.0, 0
    for b, r in zip(*np.nonzero(classes > 0), strict=True):
        mask = targets["masks"][b, matched[b, r]].astype(np.float64)[None, :, :, None]
        pooled = roi_align_reference.roi_align(mask, boxes[b, r][None], [0], (m, m), 1.0, 2, True)
        target = pooled[0, :, :, 0] >= 0.5
        p = _sigmoid(logits[b, r, :, :, classes[b, r] - 1])
        total += np.mean(np.where(target, -np.log(p), -np.log(1.0 - p)))
        foreground += 1
    expected = total / foreground

    logs = model.train_on_batch(images, targets, return_dict=True)
    assert logs["mask_loss"] == pytest.approx(expected, rel=1e-4)
    others = sum(logs[name] for name in model.LOSS_TERMS[:4])
    assert logs["loss"] == pytest.approx(others + 3.0 * expected, rel=1e-4)


def test_fit_learns_the_shapes_of_two_scenes_masks(trained, data):
    # Read at the ground-truth boxes, the learned masks overlap the objects better than the
    # filled boxes do (occluded shapes and circles, triangles and stars do not fill theirs).
    model, history = trained
    _, images, targets = data
    assert set(history) == {"loss", *model.LOSS_TERMS}
    assert history["mask_loss"][-1] < 0.85 * history["mask_loss"][0]
    boxes = targets["boxes"]
    logits = _mask_logits(model, images, boxes[..., :4])
    learned, filled = [], []
    for b, row in zip(*np.nonzero(boxes[..., 4] >= 0), strict=True):
        truth = targets["masks"][b, row] > 0
        box = boxes[b, row, :4][None]
        probabilities = _sigmoid(logits[b, row, :, :, int(boxes[b, row, 4])])
        for masks, ious in ((probabilities[None], learned), (np.ones((1, 28, 28)), filled)):
            mask = paste_masks(masks, box, (SIZE, SIZE))[0]
            ious.append(np.logical_and(mask, truth).sum() / np.logical_or(mask, truth).sum())
    assert len(learned) >= 3
    assert np.mean(learned) > np.mean(filled) + 0.05, (learned, filled)


def test_keras_file_round_trip(trained, data, tmp_path):
    model, _ = trained
    _, images, _ = data
    path = tmp_path / "mask_rcnn.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert type(reloaded) is MaskRCNN
    assert json.dumps(reloaded.get_config()) == json.dumps(model.get_config())
    assert reloaded.loss.weights == (1.0, 1.0, 1.0, 1.0, 2.0)
    np.testing.assert_array_equal(np.asarray(reloaded(images)), np.asarray(model(images)))


def test_litert_detects_and_masks_as_keras(trained, data, tmp_path):
    model, _ = trained
    _, images, _ = data
    full = detector_with_decoder(model)
    path = export_tflite(full, tmp_path / "mask_rcnn.tflite")
    assert b"Flex" not in path.read_bytes()
    litert = LiteRTRunner(path).all_outputs(images)
    expected = {name: np.asarray(value) for name, value in full(images).items()}
    assert expected["count"].min() > 0
    task = get_task("instance_segmentation")
    comparison = task.compare_exports(expected, litert)
    assert "mismatch" not in comparison, comparison
    assert comparison["min_mask_iou"] >= 0.99
    np.testing.assert_allclose(litert["masks"], expected["masks"], atol=1e-4)
    # A wrong mask is caught: the best detection's mask emptied.
    broken = {**litert, "masks": litert["masks"].copy()}
    broken["masks"][0, 0] = 0.0
    assert "masks overlap" in task.compare_exports(expected, broken)["mismatch"]


def test_bad_targets_and_arguments_are_named(trained, data):
    model, _ = trained
    _, images, targets = data
    with pytest.raises(ValueError, match="trains on targets"):
        model.compute_loss_terms(images, targets["boxes"])
    with pytest.raises(ValueError, match="trains on targets"):
        model.compute_loss_terms(images, {"boxes": targets["boxes"]})
    for argument in ("mask_pool_size", "mask_head_filters", "mask_head_convs"):
        with pytest.raises(ValueError, match=argument):
            MaskRCNN(_backbone(), 2, **{argument: 0})
    with pytest.raises(ValueError, match="mask_weight"):
        detection_loss(model, mask_weight=-1.0)
    with pytest.raises(ValueError, match=r"\(batch, D, 202\)"):
        MaskRCNNDecoder(2, SIZE, max_detections=4, mask_size=14)(np.zeros((1, 4, 6)))


def test_loss_takes_every_faster_rcnn_setting_and_the_mask_weight(trained):
    model, _ = trained
    loss = detection_loss(model, rpn_box_weight=2.0, roi_box_beta=0.5, mask_weight=3.0)
    assert loss.weights == (1.0, 2.0, 1.0, 1.0, 3.0) and loss.roi_box_beta == 0.5
    assert type(keras.losses.deserialize(keras.losses.serialize(loss))) is type(loss)
    assert keras.losses.deserialize(keras.losses.serialize(loss)).get_config() == loss.get_config()
