import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from kcnn.detection import DetectionLoss, varifocal_loss


def reference_varifocal(logit, q, alpha=0.75, gamma=2.0):
    """VarifocalNet eq. 2 in float64."""
    p = 1 / (1 + math.exp(-logit))
    if q > 0:
        return -q * (q * math.log(p) + (1 - q) * math.log(1 - p))
    return -alpha * p**gamma * math.log(1 - p)


def reference_ciou(a, b):
    iou = (min(a[2], b[2]) - max(a[0], b[0])) * (min(a[3], b[3]) - max(a[1], b[1]))
    iou /= (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iou
    rho2 = ((a[0] + a[2] - b[0] - b[2]) / 2) ** 2 + ((a[1] + a[3] - b[1] - b[3]) / 2) ** 2
    c2 = (max(a[2], b[2]) - min(a[0], b[0])) ** 2 + (max(a[3], b[3]) - min(a[1], b[1])) ** 2
    v = (
        4
        / math.pi**2
        * (math.atan((b[2] - b[0]) / (b[3] - b[1])) - math.atan((a[2] - a[0]) / (a[3] - a[1]))) ** 2
    )
    return iou - rho2 / c2 - v / ((1 - iou) + v) * v


def test_varifocal_matches_paper_formula():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(4, 5))
    targets = np.where(rng.random((4, 5)) < 0.5, 0.0, rng.random((4, 5)))
    expected = np.vectorize(reference_varifocal)(logits, targets)
    np.testing.assert_allclose(varifocal_loss(logits, targets), expected, rtol=1e-10)
    expected = np.vectorize(lambda x, q: reference_varifocal(x, q, 0.25, 1.0))(logits, targets)
    np.testing.assert_allclose(varifocal_loss(logits, targets, 0.25, 1.0), expected, rtol=1e-10)
    # Large logits do not overflow.
    assert np.all(np.isfinite(varifocal_loss([[80.0, -80.0]], [[0.0, 0.5]])))


def tiny_case():
    """A 16x16 image, one level of stride 8 -> points (4, 4), (12, 4), (4, 12), (12, 12).

    One ground truth (0, 0, 8, 8) of class 0 (of 2) per image, plus a padding row. Only the
    point (4, 4) lies strictly inside it, so it is the only candidate whatever the top-k.
    At that point the distances (0.5, 0.5, 0.25, 0.5) strides predict (0, 0, 6, 8):
    IoU 48 / 64 = 0.75, and with t = s * u^6 the normalised target is t / t * 0.75 = 0.75.
    """
    y_true = np.array([[[0, 0, 8, 8, 0], [0, 0, 0, 0, -1]]] * 2, "float32")
    y_pred = np.zeros((2, 4, 6), "float32")
    y_pred[:, :, :4] = [[0.5, 0.5, 0.25, 0.5], [1, 2, 3, 4], [5, 1, 1, 1], [0.1, 0.2, 0.3, 0.4]]
    logits = np.array([[0.0, -1.0], [2.0, 0.5], [-3.0, 1.0], [0.3, -0.2]], "float32")
    y_pred[:, :, 4:] = logits
    return y_true, y_pred, logits


def test_loss_matches_hand_computation():
    y_true, y_pred, logits = tiny_case()
    q = 0.75
    # Per image: VFL(0, 0.75) at the foreground point's class 0, VFL(logit, 0) elsewhere.
    per_image_classification = reference_varifocal(0.0, q) + sum(
        reference_varifocal(float(logit), 0.0)
        for (point, klass), logit in np.ndenumerate(logits)
        if (point, klass) != (0, 0)
    )
    per_image_box = q * (1 - reference_ciou([0, 0, 6, 8], [0, 0, 8, 8]))
    normaliser = 2 * q  # sum of target scores over the batch of 2 images (> 1)
    classification = 2 * per_image_classification / normaliser
    box = 2 * per_image_box / normaliser

    loss = DetectionLoss(num_classes=2, image_size=16, strides=(8,))
    terms = loss.loss_terms(y_true, y_pred)
    assert float(terms["classification"]) == pytest.approx(classification, rel=1e-5)
    assert float(terms["box"]) == pytest.approx(box, rel=1e-5)
    assert float(loss(y_true, y_pred)) == pytest.approx(classification + 2.5 * box, rel=1e-5)
    weighted = DetectionLoss(2, 16, strides=(8,), classification_weight=0.5, box_weight=4.0)
    assert float(weighted(y_true, y_pred)) == pytest.approx(
        0.5 * classification + 4.0 * box, rel=1e-5
    )
    # GIoU variant: hull = the ground truth itself, so GIoU = IoU = 0.75.
    giou = DetectionLoss(2, 16, strides=(8,), box_loss="giou").loss_terms(y_true, y_pred)
    assert float(giou["box"]) == pytest.approx(2 * q * (1 - 0.75) / normaliser, rel=1e-5)


def test_background_only_batch():
    # No boxes: no foreground, normaliser max(0, 1) = 1, only the negatives' VFL remains.
    _, y_pred, logits = tiny_case()
    y_true = np.full((2, 3, 5), -1.0, "float32")
    terms = DetectionLoss(2, 16, strides=(8,)).loss_terms(y_true, y_pred)
    expected = 2 * sum(reference_varifocal(float(x), 0.0) for x in logits.ravel())
    assert float(terms["classification"]) == pytest.approx(expected, rel=1e-5)
    assert float(terms["box"]) == 0.0


def test_gradient_is_finite_and_reaches_both_outputs():
    y_true, y_pred, _ = tiny_case()
    y_pred[1, 2, :4] = 0.0  # a degenerate (zero-size) predicted box
    variable = tf.Variable(y_pred)
    loss = DetectionLoss(2, 16, strides=(8,))
    with tf.GradientTape() as tape:
        value = loss(y_true, variable)
    gradient = tape.gradient(value, variable).numpy()
    assert np.all(np.isfinite(gradient))
    # The foreground point's distances get a box gradient; background distances get none.
    assert np.abs(gradient[:, 0, :4]).min() > 0
    np.testing.assert_array_equal(gradient[:, 1:, :4], 0.0)
    assert np.abs(gradient[..., 4:]).min() > 0


def test_config_round_trip_and_bad_arguments():
    loss = DetectionLoss(3, (32, 64), strides=(8, 16), top_k=5, box_loss="giou")
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(restored) is DetectionLoss and restored.get_config() == loss.get_config()
    assert restored.points.shape == (32 * 64 // 64 + 32 * 64 // 256, 2)
    with pytest.raises(ValueError, match=r"`box_loss` must be one of"):
        DetectionLoss(3, 32, box_loss="diou")
    with pytest.raises(ValueError, match=r"`num_classes` must be a positive int.*=0"):
        DetectionLoss(0, 32)
    with pytest.raises(ValueError, match=r"`top_k` must be a positive int"):
        DetectionLoss(3, 32, top_k=0)
    with pytest.raises(ValueError, match=r"y_pred` must have shape \(batch, 4, 6\).*\(1, 5, 6\)"):
        DetectionLoss(2, 16, strides=(8,))(np.zeros((1, 1, 5)), np.zeros((1, 5, 6)))
