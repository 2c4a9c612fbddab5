import keras
import numpy as np
import pytest

from kcnn.tasks import (
    CrossEntropyLoss,
    DiceLoss,
    FocalLoss,
    JaccardLoss,
    SumLoss,
    segmentation_loss,
    segmentation_scores,
)

RNG = np.random.default_rng(0)
LABELS = RNG.integers(0, 3, (2, 5, 4))
PROBABILITIES = RNG.dirichlet(np.ones(3), size=(2, 5, 4)).astype("float32")


def dice_reference(labels, probabilities, ignore=None):
    valid = np.ones(labels.shape + (1,)) if ignore is None else (labels != ignore)[..., None]
    one_hot = np.eye(probabilities.shape[-1])[np.where(valid[..., 0] > 0, labels, 0)]
    p = probabilities.astype(np.float64)
    intersection = (one_hot * p * valid).sum(axis=(0, 1, 2))
    total = ((one_hot + p) * valid).sum(axis=(0, 1, 2))
    return 1 - np.mean((2 * intersection + 1) / (total + 1))


def test_dice_and_jaccard_match_numpy():
    assert float(DiceLoss()(LABELS, PROBABILITIES)) == pytest.approx(
        dice_reference(LABELS, PROBABILITIES), abs=1e-6
    )
    one_hot = np.eye(3)[LABELS]
    p = PROBABILITIES.astype(np.float64)
    intersection = (one_hot * p).sum(axis=(0, 1, 2))
    union = (one_hot + p).sum(axis=(0, 1, 2)) - intersection
    expected = 1 - np.mean((intersection + 1) / (union + 1))
    assert float(JaccardLoss()(LABELS, PROBABILITIES)) == pytest.approx(expected, abs=1e-6)


def test_focal_matches_numpy_and_reduces_to_crossentropy_at_gamma_zero():
    p_true = np.take_along_axis(PROBABILITIES, LABELS[..., None], -1)[..., 0].astype(np.float64)
    expected = np.mean(-((1 - p_true) ** 2) * np.log(p_true))
    assert float(FocalLoss()(LABELS, PROBABILITIES)) == pytest.approx(expected, rel=1e-5)
    assert float(FocalLoss(gamma=0)(LABELS, PROBABILITIES)) == pytest.approx(
        float(CrossEntropyLoss()(LABELS, PROBABILITIES)), rel=1e-5
    )


@pytest.mark.parametrize("loss", [DiceLoss, JaccardLoss, FocalLoss, CrossEntropyLoss])
def test_ignored_pixels_count_nowhere(loss):
    labels = LABELS.copy()
    labels[:, :2] = 255
    changed = PROBABILITIES.copy()
    changed[:, :2] = np.roll(changed[:, :2], 1, axis=-1)  # other predictions where ignored
    first = float(loss(ignore_index=255)(labels, PROBABILITIES))
    assert float(loss(ignore_index=255)(labels, changed)) == pytest.approx(first, abs=1e-6)
    if loss is DiceLoss:
        assert first == pytest.approx(dice_reference(labels, PROBABILITIES, 255), abs=1e-6)


def test_losses_add_up_and_serialize():
    total = DiceLoss() + 2.0 * FocalLoss()
    assert isinstance(total, SumLoss) and len(total.losses) == 2
    expected = float(DiceLoss()(LABELS, PROBABILITIES)) + 2 * float(
        FocalLoss()(LABELS, PROBABILITIES)
    )
    assert float(total(LABELS, PROBABILITIES)) == pytest.approx(expected, rel=1e-6)
    restored = keras.losses.deserialize(keras.losses.serialize(total))
    assert float(restored(LABELS, PROBABILITIES)) == pytest.approx(expected, rel=1e-6)
    named = segmentation_loss({"crossentropy": 1.0, "dice": 0.5})
    assert named.weights == [1.0, 0.5]
    with pytest.raises(ValueError, match="Unknown loss 'lovasz' in `train.loss`"):
        segmentation_loss({"lovasz": 1.0})


def test_binary_probability_maps_work():
    labels = RNG.integers(0, 2, (2, 4, 4))
    foreground = RNG.random((2, 4, 4, 1)).astype("float32")
    two_class = np.concatenate([1 - foreground, foreground], axis=-1)
    for loss in (DiceLoss(), FocalLoss(), CrossEntropyLoss()):
        assert float(loss(labels, foreground)) == pytest.approx(
            float(loss(labels, two_class)), rel=1e-5
        )


def test_scores_from_a_worked_confusion_matrix():
    # rows = truth, columns = prediction
    matrix = np.array([[50, 2, 0], [3, 20, 1], [0, 0, 0]])
    scores = segmentation_scores(matrix, ["background", "a", "b"])
    assert scores["per_class_iou"]["background"] == pytest.approx(50 / (50 + 3 + 2))
    assert scores["per_class_iou"]["a"] == pytest.approx(20 / (20 + 2 + 4))
    assert scores["per_class_iou"]["b"] == 0.0  # predicted once, never true
    assert scores["mean_iou"] == pytest.approx((50 / 55 + 20 / 26 + 0) / 3)
    assert scores["pixel_accuracy"] == pytest.approx(70 / 76)
    assert scores["per_class_dice"]["a"] == pytest.approx(40 / (40 + 2 + 4))
