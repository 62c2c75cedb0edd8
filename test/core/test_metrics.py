"""Confusion-matrix IoU against hand-counted cases."""
from __future__ import annotations

import numpy as np

from tttkd_ros.core.labels import IGNORE_INDEX
from tttkd_ros.core.metrics import ConfusionMatrix


def test_iou_counts_by_hand() -> None:
    cm = ConfusionMatrix(3)
    truth = np.array([0, 0, 1, 1, 2, IGNORE_INDEX])
    pred = np.array([0, 1, 1, 1, 65535, 0])
    cm.update(truth, pred)
    iou = cm.iou()
    # class 0: tp 1, gt 2, pred 1 -> 1/2; class 1: tp 2, gt 2, pred 3 -> 2/3; class 2: 0/1
    np.testing.assert_allclose(iou, [0.5, 2 / 3, 0.0])
    assert np.isclose(cm.miou(), (0.5 + 2 / 3 + 0.0) / 3 * 100)


def test_classes_absent_from_truth_do_not_count() -> None:
    cm = ConfusionMatrix(4)
    cm.update(np.array([0, 0, 1]), np.array([0, 0, 1]))
    assert cm.miou() == 100.0
    assert list(cm.present()) == [True, True, False, False]


def test_accumulates_over_updates() -> None:
    a, b = ConfusionMatrix(2), ConfusionMatrix(2)
    t, p = np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0])
    a.update(t, p)
    b.update(t[:2], p[:2])
    b.update(t[2:], p[2:])
    np.testing.assert_array_equal(a.matrix, b.matrix)
