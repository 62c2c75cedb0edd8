"""The self-supervised objective of one adaptation step, per mode (METHOD.md).

KD targets come from the frozen teacher once per frame; the OCL views are the cloud and its
mirror, stacked as a batch of two, so point i of view 0 and point N + i of view 1 are the
same physical point.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from ..config import AdaptConfig
from ..frame import CameraView
from ..geometry import project_view, sample_grid
from ..model.teacher_probe import TeacherProbe, class_balance_weights
from .losses import entropy_loss, kd_loss, ocl_loss


@dataclass
class KdTargets:
    """Every visible (point, camera) pair: point_index (M,) into the model's points, and the
    teacher feature (M, D) sampled at that point's pixel; the rows of camera k are the
    counts[k] after those of cameras 0..k-1 (the frame's camera order). labels: (M,) the
    teacher probe's sure class per row, -1 where it is unsure; None without a probe."""

    point_index: torch.Tensor
    features: torch.Tensor
    counts: tuple[int, ...] = ()
    labels: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.point_index.numel())

    def only(self, keep: list[bool]) -> KdTargets:
        """The rows of the cameras whose `keep` is True (one flag per camera)."""
        rows = torch.repeat_interleave(
            torch.tensor(keep, device=self.point_index.device),
            torch.tensor(self.counts, device=self.point_index.device))
        return KdTargets(self.point_index[rows], self.features[rows],
                         tuple(c if k else 0 for c, k in zip(self.counts, keep)),
                         None if self.labels is None else self.labels[rows])

    def with_labels(self, probe: TeacherProbe, confidence: float) -> KdTargets:
        """These targets with the probe's sure labels of their features."""
        return replace(self, labels=probe.sure_labels(self.features, confidence))


@dataclass
class SourceLabels:
    """The source model's sure labels on this frame (guard.sure_labels): index (M,) into the
    model's points and their labels (M,)."""

    index: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.index.numel())


def uses_kd(mode: str) -> bool:
    return mode in ("kd", "kd+ocl")


def uses_ocl(mode: str) -> bool:
    return mode in ("ocl", "kd+ocl")


def teacher_targets(teacher, xyz: torch.Tensor, cameras: list[CameraView],
                    use: list[bool] | None = None) -> KdTargets:
    """xyz: (N, 3) LiDAR-frame points on the teacher's device. A camera whose `use` is False
    gives no rows (count 0) and costs no teacher pass."""
    index, feats, counts = [], [], []
    for k, view in enumerate(cameras):
        if use is not None and not use[k]:
            counts.append(0)
            continue
        grid = teacher.features(view.image)
        proj = project_view(xyz, view)
        visible = proj.visible.nonzero().squeeze(1)
        index.append(visible)
        counts.append(len(visible))
        feats.append(sample_grid(grid.to(xyz.dtype), proj.uv[visible], view.size))
    if not index:
        return KdTargets(torch.zeros(0, dtype=torch.long, device=xyz.device),
                         torch.zeros(0, 1, device=xyz.device), tuple(counts))
    return KdTargets(torch.cat(index), torch.cat(feats), tuple(counts))


def adaptation_loss(
    cfg: AdaptConfig, logits: torch.Tensor, feat2d: torch.Tensor, n_points: int,
    targets: KdTargets | None, source: SourceLabels | None = None, kd_center: bool = False,
) -> tuple[torch.Tensor, dict[str, float]]:
    """logits (V*N, C) and feat2d (V*N, D) for V = 1 or 2 views of N points; `source`: the
    source model's sure labels, for the source consistency term (w_source), in every view;
    `kd_center`: the model's ModelConfig.kd_center (how its rho_2D was trained).

    Returns the weighted loss and its parts as floats (for ~/stats).
    """
    parts: dict[str, torch.Tensor] = {}
    total = logits.new_zeros(())
    if uses_kd(cfg.mode) and targets is not None and len(targets) > 0:
        parts["kd"] = kd_loss(feat2d[targets.point_index], targets.features, kd_center)
        total = total + cfg.w_kd * parts["kd"]
    if uses_ocl(cfg.mode):
        loss, l_pos, l_neg = ocl_loss(
            logits[:n_points], logits[n_points:2 * n_points],
            pos_coeff=cfg.ocl_pos_coeff, neg_coeff=cfg.ocl_neg_coeff,
        )
        parts.update(ocl=loss, ocl_pos=l_pos, ocl_neg=l_neg)
        total = total + cfg.w_ocl * loss
    if cfg.mode == "tent":
        parts["entropy"] = entropy_loss(logits[:n_points])
        total = total + parts["entropy"]
    if cfg.w_source > 0 and source is not None and len(source) > 0:
        parts["source"] = _views_cross_entropy(logits, n_points, source.index, source.labels)
        total = total + cfg.w_source * parts["source"]
    if (uses_kd(cfg.mode) and cfg.w_probe > 0 and targets is not None
            and targets.labels is not None):
        sure = targets.labels >= 0
        labels = targets.labels[sure]
        weight = class_balance_weights(
            torch.bincount(labels, minlength=logits.shape[1]).float(), cfg.probe_balance)
        parts["probe"] = _views_cross_entropy(logits, n_points, targets.point_index[sure],
                                              labels, weight)
        total = total + cfg.w_probe * parts["probe"]
    # one read of the device for all parts, not one per part
    values = torch.stack([v.detach().float() for v in parts.values()]).tolist() if parts else []
    return total, dict(zip(parts, values))


def _views_cross_entropy(logits: torch.Tensor, n_points: int, index: torch.Tensor,
                         labels: torch.Tensor, weight: torch.Tensor | None = None
                         ) -> torch.Tensor:
    """Cross-entropy of points `index` towards `labels` in every view of `logits` (point i of
    view v is row v * N + i); a zero that backpropagates when there is no point."""
    if len(index) == 0:
        return logits.sum() * 0
    views = len(logits) // n_points
    rows = torch.cat([index + v * n_points for v in range(views)])
    return F.cross_entropy(logits[rows].float(), labels.repeat(views), weight=weight)


def has_signal(cfg: AdaptConfig, targets: KdTargets | None) -> bool:
    """False when the mode's only loss has nothing to act on (KD with no visible point)."""
    if cfg.mode == "none":
        return False
    if cfg.mode == "kd":
        return targets is not None and len(targets) > 0
    return True
