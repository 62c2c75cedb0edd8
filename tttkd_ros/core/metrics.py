"""Segmentation scores from an accumulated confusion matrix."""
from __future__ import annotations

import numpy as np

from .labels import IGNORE_INDEX


class ConfusionMatrix:
    """Accumulates a C x C matrix (rows: ground truth, columns: prediction).

    Ground truth equal to IGNORE_INDEX is skipped; predictions outside 0..C-1 (e.g. the
    65535 of unlabeled points) count as wrong for their ground-truth class.
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.matrix = np.zeros((num_classes, num_classes + 1), dtype=np.int64)

    def update(self, truth: np.ndarray, pred: np.ndarray) -> None:
        truth = np.asarray(truth).astype(np.int64).ravel()
        pred = np.asarray(pred).astype(np.int64).ravel()
        keep = (truth >= 0) & (truth < self.num_classes) & (truth != IGNORE_INDEX)
        truth, pred = truth[keep], pred[keep]
        pred = np.where((pred >= 0) & (pred < self.num_classes), pred, self.num_classes)
        np.add.at(self.matrix, (truth, pred), 1)

    def iou(self) -> np.ndarray:
        """Per-class IoU in [0, 1]; NaN for classes absent from both truth and prediction."""
        tp = np.diag(self.matrix[:, : self.num_classes]).astype(np.float64)
        gt = self.matrix.sum(axis=1)
        predicted = self.matrix[:, : self.num_classes].sum(axis=0)
        union = gt + predicted - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / union, np.nan)

    def present(self) -> np.ndarray:
        """Classes that occur in the ground truth."""
        return self.matrix.sum(axis=1) > 0

    def miou(self) -> float:
        """Mean IoU in percent over the classes present in the ground truth."""
        present = self.present()
        if not present.any():
            return float("nan")
        return float(np.nanmean(self.iou()[present]) * 100.0)
