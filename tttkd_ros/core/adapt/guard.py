"""The harm guard: tell adaptation that helps from adaptation that hurts, from unlabeled signals.

Adaptation gains where the LiDAR shifted and the camera is intact, and loses where the
camera or the scene changed; no loss value alone tells the two apart. The guard compares the
adapted model with the source model on the same fresh frame (CoTTA / RDumb keep the source
for the same reason):

- `SourceReference`: a frozen copy of the source model that predicts the frame too.
- Teacher reliability (`camera_kd_ratios`): per camera, the source model's KD loss on that
  camera's targets over the KD loss the checkpoint reached in training; a camera far from 1
  either way teaches nothing on the frame (the engine drops its targets). Far above: noise,
  glare, an over-exposed image (measured on the demo checkpoint: clean 1.2-1.4, noise 4.4,
  white 5.8); far below: a black or dark image, whose near-constant features are too easy
  to match (0.12-0.16). The source model is the yardstick, not the adapted one: the adapted
  model learns whatever a camera shows, so its own loss on a bad camera moves towards the
  training level until the camera looks trustworthy; the source's does not move.
- Exposure (`mean_brightness`): a camera under `guard_min_brightness` (night, a covered or
  under-exposed lens) teaches nothing on the frame, before any teacher pass. The KD ratio
  cannot catch it: a dark image's ratio (0.80-0.90 with the demo's teacher) lies among
  those of other scenes under a clean camera (0.89-1.04), while its brightness (0.08-0.10
  against 0.26 and more for every other condition) stands apart.
- Source consistency (`sure_labels`): the points the source model labels with a probability
  of at least `source_confidence`. Its confidence is well calibrated on the calibrated world
  (those labels are 96-99 % correct), so they are what adaptation must not change; with
  `w_source` the objective pulls the adapted model towards them (objective.py).
- `HarmGuard`: the rollback rule. A check FAILS when adaptation changed more than
  `guard_flip` of the source's sure labels on the fresh frame. Why not the objective: the
  adapted model always beats the source at its own objective on a new frame (it was trained
  for it), also while its mIoU falls (measured: +0.03 to +0.11 on drives where it lost 4-7
  points), so the objective's gain is reported (`guard_gain`) but does not decide; nor the
  share of all changed labels, since a helpful adaptation changes many of the labels the
  source was unsure of. `patience` failed checks in a row roll back: to the weights of the
  last passed check (`last_good`), or to the source when so configured or when a rollback
  is followed by `patience` failures again without a passed check in between (the last good
  state is no good either). A passed check makes the checked weights the last good state.
"""
from __future__ import annotations

import copy
import enum
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..config import AdaptConfig
from ..model.norm import set_bn_prior
from ..model.segmentation import SegModel, SegOutput
from ..model.voxelize import voxelize
from .losses import kd_distances
from .objective import KdTargets
from .restore import copy_into, snapshot


class SourceReference:
    """A frozen copy of the source model.

    A second model rather than swapping the source weights in and out of the engine's model
    for each check: the copy never changes (its heads are frozen and BN statistics are never
    written), so it needs no syncing, not even at a reset; a swap would cost two full weight
    copies per check and, under the async schedule, would have to wait for the adaptation
    that owns the model. Its parameters double as the engine's source snapshot, so the copy
    costs no more memory than the snapshot the engine keeps anyway (the buffers are small).
    """

    def __init__(self, model: SegModel) -> None:
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
            p.grad = None  # a gradient the original held is not the copy's

    @property
    def params(self) -> list[torch.Tensor]:
        """The source values of every model parameter, in `model.parameters()` order."""
        return [p.detach() for p in self.model.parameters()]

    @torch.no_grad()
    def forward(self, clouds: Sequence[torch.Tensor], bn_prior: float | None) -> SegOutput:
        """The source model's outputs on `clouds`, normalised as the adaptation step is (same
        BN prior), so that its objective is comparable with the step's."""
        set_bn_prior(self.model, bn_prior)
        try:
            return self.model(voxelize(list(clouds), self.model.cfg.voxel_size))
        finally:
            set_bn_prior(self.model, None)


def mean_brightness(image: np.ndarray) -> float:
    """Mean brightness of an H x W x 3 uint8 image, 0..1; from every 4th row and column (the
    mean of a natural image barely moves, and a full-size frame costs 16 times less)."""
    return float(image[::4, ::4].mean()) / 255.0


def camera_kd_ratios(feat2d: torch.Tensor, targets: KdTargets, reference: float,
                     center: bool = False) -> list[float | None]:
    """Per camera of `targets`: the mean KD distance of `feat2d` ((N, D), the source model's
    rho_2D outputs at the frame's points) to its targets, over `reference`; None for a camera
    no point is visible in. `center`: the model's ModelConfig.kd_center, as the reference
    was measured in training. One read of the device."""
    if not targets.counts:
        return []
    distances = kd_distances(feat2d[targets.point_index], targets.features, center)
    counts = torch.tensor(targets.counts, device=distances.device)
    camera = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
    sums = torch.zeros(len(counts), device=distances.device).index_add_(0, camera, distances)
    means = (sums / counts.clamp(min=1) / reference).tolist()
    return [m if c else None for m, c in zip(means, targets.counts)]


def sure_labels(source_logits: torch.Tensor, confidence: float
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, labels) of the points whose source softmax probability is at least
    `confidence`, from source logits (N, C)."""
    prob, labels = F.softmax(source_logits.float(), dim=1).max(dim=1)
    index = (prob >= confidence).nonzero().squeeze(1)
    return index, labels[index]


@dataclass
class Drift:
    """How far the adapted predictions are from the source's on the same points, as 0-d
    tensors: share of all labels changed, mean KL(source || adapted) of the softmax, and
    share of the source's sure labels changed (0 when it is sure of no point)."""

    share: torch.Tensor
    kl: torch.Tensor
    sure_flip: torch.Tensor


def drift(source_logits: torch.Tensor, adapted_logits: torch.Tensor, confidence: float
          ) -> Drift:
    """The Drift of logits (N, C) of the same points; `confidence`: source_confidence."""
    log_s = F.log_softmax(source_logits.float(), dim=1)
    log_a = F.log_softmax(adapted_logits.float(), dim=1)
    prob, label_s = log_s.exp().max(dim=1)
    changed = (label_s != log_a.argmax(dim=1)).float()
    sure = (prob >= confidence).float()
    kl = (log_s.exp() * (log_s - log_a)).sum(dim=1).mean()
    return Drift(changed.mean(), kl, (changed * sure).sum() / sure.sum().clamp(min=1.0))


class Verdict(enum.Enum):
    PASSED = "passed"
    FAILED = "failed"  # harmful, patience not yet exhausted
    ROLLBACK = "rollback"  # back to the last good state
    SOURCE = "source"  # back to the source weights


class HarmGuard:
    """When to check, the rollback rule (module doc) and the last good state."""

    def __init__(self, cfg: AdaptConfig, params: Sequence[torch.Tensor]) -> None:
        self.every, self.patience = cfg.guard_every, cfg.guard_patience
        self.max_flip = cfg.guard_flip
        self.to_source = cfg.guard_restore == "source"
        self.good = snapshot(params)  # the weights of the last passed check
        self.restart(params)

    def restart(self, params: Sequence[torch.Tensor]) -> None:
        """The current weights are the last good state; no failures, no frames counted."""
        copy_into(self.good, params)
        self.frames = 0
        self.failed_in_a_row = 0
        self.rolled_back = False  # a rollback since the last passed check

    def due(self) -> bool:
        """Count an adapted frame; True when a check is due (guard_every frames since the
        last judged check; a check that could not be judged stays due)."""
        self.frames += 1
        return self.every > 0 and self.frames >= self.every

    def judge(self, sure_flip: float, checked: Sequence[torch.Tensor]) -> Verdict:
        """The verdict on the weights `checked` (those `sure_flip` was measured with)."""
        self.frames = 0
        if sure_flip <= self.max_flip:
            copy_into(self.good, checked)
            self.failed_in_a_row, self.rolled_back = 0, False
            return Verdict.PASSED
        self.failed_in_a_row += 1
        if self.failed_in_a_row < self.patience:
            return Verdict.FAILED
        self.failed_in_a_row = 0
        if self.to_source or self.rolled_back:
            self.rolled_back = False
            return Verdict.SOURCE
        self.rolled_back = True
        return Verdict.ROLLBACK
