"""Guards that keep the adaptation engine safe whatever the sensor sends and the loss does.

- `grid_subsample`: bounded work on a huge cloud. At most `max_points` representatives go to
  the model (one per occupied grid cell; the cell grows from the voxel size until few enough
  are occupied) and every point knows its cell's representative, so each still gets a label.
- `LossSpikeDetector`: an adaptation loss far above its recent level (a diverging step).
- `CollapseDetector`: the dominant predicted class's share of a frame jumping above its
  recent level (the model starting to predict one class everywhere).
"""
from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Mapping

import torch

MIN_HISTORY = 8  # values a detector needs before it judges (fewer when its window is smaller)
_MAD_TO_STD = 1.4826  # median absolute deviation -> standard deviation of normal noise
_MAX_CELLS_PER_AXIS = 2**20  # keeps the int64 cell key of any finite extent from overflowing


def grid_subsample(xyz: torch.Tensor, max_points: int, cell: float
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick at most `max_points` of the points, spread evenly over space.

    xyz: (N, 3) finite coordinates; cell: the starting cell size (the model's voxel size),
    doubled until at most `max_points` cells are occupied. Returns `keep` (M,) int64 indices
    of the chosen points (the first point of each occupied cell, in input order) and `owner`
    (N,) int64: for each point, the row of `keep` holding its cell's representative, so a
    per-representative result r (M, ...) reads back per point as r[owner].
    """
    if max_points < 1:
        raise ValueError(f"max_points must be >= 1, got {max_points}")
    if cell <= 0:
        raise ValueError(f"cell must be > 0, got {cell}")
    n = xyz.shape[0]
    index = torch.arange(n, device=xyz.device)
    if n <= max_points:
        return index, index
    xyz = xyz.double()  # float32 extents of extreme finite values can overflow to inf
    rel = xyz - xyz.min(dim=0).values
    cell = max(cell, float(rel.max()) / _MAX_CELLS_PER_AXIS)
    while True:
        ijk = torch.floor(rel / cell).long()
        dims = ijk.max(dim=0).values + 1
        key = (ijk[:, 0] * dims[1] + ijk[:, 1]) * dims[2] + ijk[:, 2]
        cells, owner = torch.unique(key, return_inverse=True)
        if len(cells) <= max_points:
            break
        cell *= 2
    keep = torch.full((len(cells),), n, dtype=torch.long, device=xyz.device)
    keep.scatter_reduce_(0, owner, index, reduce="amin")
    return keep, owner


def _min_history(window: int) -> int:
    return min(window, MIN_HISTORY)


class LossSpikeDetector:
    """Flags a step whose loss is far above its recent level, part by part.

    Each loss part (kd, ocl, ...) keeps its own history, because the parts present change from
    frame to frame (no camera: no kd). A value is a spike when it exceeds the median of that
    part's last `window` recorded values by more than max(factor * robust spread, min_delta);
    the robust spread is 1.4826 * the median absolute deviation. Nothing is judged before a
    part has `MIN_HISTORY` values (or `window`, if smaller). The engine records only the first
    step of each frame (fresh data on the current weights: comparable from frame to frame,
    whereas later steps fit the frame and fall). A flagged step records nothing; after
    `patience` flagged steps in a row the new level is accepted as normal (the history
    restarts from it), so a lasting change of scene cannot stop adaptation for good.
    factor 0 turns the detector off.
    """

    def __init__(self, factor: float, min_delta: float, window: int, patience: int) -> None:
        self.factor = factor
        self.min_delta = min_delta
        self.window = window
        self.patience = patience
        self.history: dict[str, deque[float]] = {}
        self.flagged_in_a_row = 0

    def check(self, parts: Mapping[str, float], record: bool = True) -> str | None:
        """The name of the first part that spikes, or None (then the values are recorded when
        `record`). Values must be finite."""
        if self.factor <= 0:
            return None
        spiking = next((name for name, value in parts.items() if self._spikes(name, value)),
                       None)
        if spiking is not None:
            self.flagged_in_a_row += 1
            if self.flagged_in_a_row < self.patience:
                return spiking
            self.clear()  # a lasting new level, not a spike
            record = True
        self.flagged_in_a_row = 0
        if not record:
            return None
        for name, value in parts.items():
            self.history.setdefault(name, deque(maxlen=self.window)).append(float(value))
        return None

    def _spikes(self, name: str, value: float) -> bool:
        recent = self.history.get(name)
        if recent is None or len(recent) < _min_history(self.window):
            return False
        median = statistics.median(recent)
        spread = _MAD_TO_STD * statistics.median(abs(v - median) for v in recent)
        return value - median > max(self.factor * spread, self.min_delta)

    def clear(self) -> None:
        self.history.clear()
        self.flagged_in_a_row = 0


class CollapseDetector:
    """Flags a collapse from the share of a frame's points given its most frequent class.

    A frame is suspicious when that share is at least `jump` above the median share of the
    last `window` unsuspicious frames; `frames` suspicious frames in a row are a collapse.
    Nothing is judged before `MIN_HISTORY` frames (or `window`, if smaller). jump 0 turns the
    detector off. The caller resets the model on a collapse and then `clear()`s the detector.
    """

    def __init__(self, jump: float, window: int, frames: int) -> None:
        self.jump = jump
        self.frames = frames
        self.window = window
        self.history: deque[float] = deque(maxlen=window)
        self.suspicious_in_a_row = 0

    def update(self, share: float) -> bool:
        """Record one frame's dominant-class share (0..1); True when it completes a collapse."""
        if self.jump <= 0:
            return False
        if (len(self.history) >= _min_history(self.window)
                and share >= statistics.median(self.history) + self.jump):
            self.suspicious_in_a_row += 1
            return self.suspicious_in_a_row >= self.frames
        self.suspicious_in_a_row = 0
        self.history.append(float(share))
        return False

    def clear(self) -> None:
        self.history.clear()
        self.suspicious_in_a_row = 0


def dominant_share(labels: torch.Tensor, num_classes: int) -> float:
    """labels: (N,) int64 class ids in [0, num_classes). The most frequent class's share."""
    if labels.numel() == 0:
        return 0.0
    return float(torch.bincount(labels, minlength=num_classes).max()) / labels.numel()
