"""The task-aligned assigner on a hand-made scene whose assignment is worked out below.

Two classes. Image 0 has two real boxes and one padding row (class -1) whose box covers
everything, so padding that leaked into the assignment would show; image 1 is all padding.

    GT0 = (0, 0, 4, 4) class 0        GT1 = (2, 0, 8, 4) class 1

Six points (x, y), with the box predicted at each and its IoU with GT0 / GT1:

    p0 (1, 1)  pred (0, 0, 4, 4)  inside GT0         IoU0 = 1      IoU1 = 8/32 = 1/4
    p1 (3, 1)  pred (2, 0, 6, 4)  inside GT0, GT1    IoU0 = 8/24   IoU1 = 16/24
    p2 (5, 1)  pred (4, 0, 8, 4)  inside GT1         IoU0 = 0      IoU1 = 16/24
    p3 (7, 1)  pred (6, 0, 8, 2)  inside GT1         IoU0 = 0      IoU1 = 4/24
    p4 (1, 6)  pred (0, 4, 2, 8)  inside neither
    p5 (3, 3)  pred (1, 1, 5, 4)  inside GT0, GT1    IoU0 = 9/19   IoU1 = 9/27

(p5: overlap with GT0 is (1, 1, 4, 4) = 9, union 16 + 12 - 9 = 19; with GT1 it is
(2, 1, 5, 4) = 9, union 24 + 12 - 9 = 27.)
"""

import numpy as np
import pytest

from kcnn.detection import task_aligned_assign

POINTS = np.array([[1, 1], [3, 1], [5, 1], [7, 1], [1, 6], [3, 3]], "float64")
PREDICTED = np.array(
    [[0, 0, 4, 4], [2, 0, 6, 4], [4, 0, 8, 4], [6, 0, 8, 2], [0, 4, 2, 8], [1, 1, 5, 4]],
    "float64",
)
SCORES = np.array(  # (class 0, class 1) probabilities per point
    [[0.8, 0.1], [0.6, 0.9], [0.2, 0.4], [0.1, 0.9], [0.9, 0.9], [0.5, 0.95]], "float64"
)
GT0, GT1, PADDING = [0, 0, 4, 4], [2, 0, 8, 4], [0, 0, 8, 8]
GT_BOXES = np.array([[GT0, GT1, PADDING], [PADDING, PADDING, PADDING]], "float64")
GT_CLASSES = np.array([[0, 1, -1], [-1, -1, -1]])
IOU0 = {"p0": 1.0, "p1": 8 / 24, "p5": 9 / 19}
IOU1 = {"p1": 16 / 24, "p2": 16 / 24, "p3": 4 / 24, "p5": 9 / 27}


def assign(top_k, alpha, beta, gt_mask=None):
    outputs = task_aligned_assign(
        np.stack([SCORES, SCORES]),
        np.stack([PREDICTED, PREDICTED]),
        POINTS,
        GT_BOXES,
        GT_CLASSES,
        gt_mask=gt_mask,
        top_k=top_k,
        alpha=alpha,
        beta=beta,
    )
    return [np.asarray(value) for value in outputs]


def test_hand_made_assignment_with_conflict():
    # alpha = 1, beta = 1, top_k = 2: t = s * u.
    # GT0 (class 0) candidates: p0 0.8 * 1 = 0.8, p1 0.6 / 3 = 0.2, p5 0.5 * 9/19 = 0.237
    #   -> top 2: p0, p5.
    # GT1 (class 1) candidates: p1 0.9 * 2/3 = 0.6, p2 0.4 * 2/3 = 0.267, p3 0.9 / 6 = 0.15,
    #   p5 0.95 / 3 = 0.317 -> top 2: p1, p5.
    # p5 is claimed by both; its IoU is 9/19 with GT0 and 1/3 with GT1 -> GT0.
    # Foreground: p0, p5 -> GT0; p1 -> GT1. p2 is inside GT1 but not in its top 2.
    # Scores: GT0 keeps p0 (t 0.8, u 1) and p5 -> t / 0.8 * 1; GT1 keeps p1 -> t / 0.6 * 2/3.
    scores, boxes, foreground = assign(top_k=2, alpha=1.0, beta=1.0)
    np.testing.assert_array_equal(
        foreground, [[True, True, False, False, False, True], [False] * 6]
    )
    expected = np.zeros((2, 6, 2))
    expected[0, 0, 0] = 1.0
    expected[0, 5, 0] = 0.5 * IOU0["p5"] / 0.8
    expected[0, 1, 1] = 2 / 3
    np.testing.assert_allclose(scores, expected, atol=1e-12)
    np.testing.assert_array_equal(boxes[0, [0, 5]], [GT0, GT0])
    np.testing.assert_array_equal(boxes[0, 1], GT1)


def test_beta_six_changes_the_ranking():
    # The paper's beta = 6 favours IoU: GT1 now ranks p1 0.9 (2/3)^6 = 0.079,
    # p2 0.4 (2/3)^6 = 0.035, p3 0.9 (1/6)^6, p5 0.95 (1/3)^6 = 0.0013 -> p1, p2;
    # GT0 ranks p0 0.8, p5 0.5 (9/19)^6 = 0.0056, p1 0.6 (1/3)^6 = 0.0008 -> p0, p5.
    # No conflict. GT1: p2 gets (0.4 (2/3)^6) / (0.9 (2/3)^6) * 2/3.
    scores, boxes, foreground = assign(top_k=2, alpha=1.0, beta=6.0)
    np.testing.assert_array_equal(foreground[0], [True, True, True, False, False, True])
    expected = np.zeros((6, 2))
    expected[0, 0] = 1.0
    expected[5, 0] = 0.5 * IOU0["p5"] ** 6 / 0.8
    expected[1, 1] = 2 / 3
    expected[2, 1] = 0.4 / 0.9 * 2 / 3
    np.testing.assert_allclose(scores[0], expected, atol=1e-12)
    np.testing.assert_array_equal(boxes[0, 2], GT1)


def test_large_top_k_keeps_every_candidate_and_alpha_weights_scores():
    # top_k = 10 > candidates: every point inside a box is kept. p1 and p5 are in both;
    # p1 has IoU 1/3 with GT0 and 2/3 with GT1 -> GT1; p5 -> GT0 (9/19 > 1/3).
    # GT0: p0, p5 with t = s^2 u (alpha = 2): 0.64, 0.25 * 9/19; max u = 1.
    # GT1: p1, p2, p3 with t = 0.81 * 2/3, 0.16 * 2/3, 0.81 / 6; max u = 2/3.
    scores, _, foreground = assign(top_k=10, alpha=2.0, beta=1.0)
    np.testing.assert_array_equal(foreground[0], [True, True, True, True, False, True])
    t1 = {"p1": 0.81 * 2 / 3, "p2": 0.16 * 2 / 3, "p3": 0.81 / 6}
    np.testing.assert_allclose(scores[0, [0, 5], 0], [1.0, 0.25 * IOU0["p5"] / 0.64])
    np.testing.assert_allclose(
        scores[0, [1, 2, 3], 1], [t1[p] / t1["p1"] * 2 / 3 for p in ("p1", "p2", "p3")]
    )
    assert np.all(scores[0, [1, 2, 3], 0] == 0) and np.all(scores[0, [0, 5], 1] == 0)


def test_gt_mask_drops_a_box():
    # Masking GT1 out leaves GT0 alone: its top 2 are p0, p5 as before, and nothing is
    # class 1.
    mask = np.array([[True, False, True], [True, True, True]])
    scores, _, foreground = assign(top_k=2, alpha=1.0, beta=1.0, gt_mask=mask)
    np.testing.assert_array_equal(foreground[0], [True, False, False, False, False, True])
    assert np.all(scores[..., 1] == 0)
    assert not foreground[1].any()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_follows_scores(dtype):
    scores, boxes, foreground = task_aligned_assign(
        SCORES[None].astype(dtype), PREDICTED[None], POINTS, GT_BOXES[:1], GT_CLASSES[:1]
    )
    assert str(np.asarray(scores).dtype) == dtype
    assert np.asarray(boxes).shape == (1, 6, 4) and np.asarray(foreground).dtype == bool
