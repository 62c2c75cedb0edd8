"""The source model's pass over a frame, before the frame's adaptation steps.

One forward pass of the frozen source model (guard.SourceReference) serves three users
(core/adapt/guard.py explains each): the per-camera trust test drops the KD targets of the
cameras far from the training-time level, the source consistency term gets the source's sure
labels, and a due harm-guard check gets the source's logits and objective on the fresh frame.
With `target_norm_check` a second forward, with the levels after the stem normalised the
other way, gives the teacher's check its difference (core/adapt/target_norm.py). The engine
pays for both from the frame's budget.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..config import AdaptConfig
from ..frame import Frame, FrameStats
from ..geometry import mirror_points
from .guard import SourceReference, camera_kd_ratios, sure_labels
from .losses import kd_loss
from .objective import KdTargets, SourceLabels, adaptation_loss, uses_ocl
from .target_norm import DeepLevelCheck


@dataclass
class SourceCheck:
    """The source model on a checked frame: view-averaged logits (N, C) and its objective."""

    logits: torch.Tensor
    loss: torch.Tensor


@dataclass
class SourcePass:
    """What the pass gives the steps: the KD targets of the trusted cameras, the source's
    sure labels (None unless w_source > 0) and, when a check is due, its SourceCheck."""

    targets: KdTargets | None
    labels: SourceLabels | None
    check: SourceCheck | None


def judges_cameras(cfg: AdaptConfig, kd_reference: float | None,
                   targets: KdTargets | None) -> bool:
    """Whether the frame's cameras are judged (guard_kd_ratio on, a training-time KD level
    known, and KD targets to judge)."""
    return (cfg.guard_kd_ratio > 0 and kd_reference is not None
            and targets is not None and len(targets) > 0)


def checks_levels(cfg: AdaptConfig, targets: KdTargets | None) -> bool:
    """Whether the teacher's check of the deeper normalised levels runs on this frame."""
    return (cfg.target_norm_check and cfg.target_norm_levels > 1
            and targets is not None and len(targets) > 0)


def needs_source_pass(cfg: AdaptConfig, kd_reference: float | None,
                      targets: KdTargets | None, judge: bool) -> bool:
    """Whether this frame needs the source model's pass (`judge`: a guard check is due)."""
    return (judge or cfg.w_source > 0 or judges_cameras(cfg, kd_reference, targets)
            or checks_levels(cfg, targets))


def source_pass(reference: SourceReference, cfg: AdaptConfig, kd_reference: float | None,
                pts: torch.Tensor, frame: Frame, targets: KdTargets | None, judge: bool,
                stats: FrameStats, event: Callable[[str], None],
                levels: DeepLevelCheck | None = None) -> SourcePass:
    """The source model on this frame (over both OCL views when a check is due, as the step
    sees them). `event(name)` records an event of the frame (`camera_untrusted`); `levels`:
    the teacher's check, given a difference when `checks_levels`."""
    n = len(pts)
    kd_center = reference.model.cfg.kd_center
    clouds = [pts, mirror_points(pts)] if judge and uses_ocl(cfg.mode) else [pts]
    out = reference.forward(clouds, cfg.step_bn_prior)
    if judges_cameras(cfg, kd_reference, targets):
        targets = _trusted(cfg, kd_reference, out.feat2d[:n], targets, kd_center, frame, stats,
                           event)
    if levels is not None and checks_levels(cfg, targets):
        levels.record(_levels_difference(reference, cfg, levels, pts, out.feat2d[:n], targets))
    labels = None
    if cfg.w_source > 0:
        labels = SourceLabels(*sure_labels(out.logits[:n], cfg.source_confidence))
    check = None
    if judge:
        loss, _ = adaptation_loss(cfg, out.logits, out.feat2d, n, targets, labels, kd_center)
        logits = out.logits
        logits = (logits[:n] + logits[n:]) / 2 if len(clouds) == 2 else logits
        check = SourceCheck(logits, loss.detach())
    return SourcePass(targets, labels, check)


def _levels_difference(reference: SourceReference, cfg: AdaptConfig, levels: DeepLevelCheck,
                       pts: torch.Tensor, feat2d: torch.Tensor, targets: KdTargets) -> float:
    """The source model's KD loss on the trusted targets with the levels after the stem on
    their averages minus with them on the source statistics; `feat2d` came from the forward
    with them as the check now has them."""
    center = reference.model.cfg.kd_center
    now = levels.verdict()
    with levels.forced(not now):
        other = reference.forward([pts], cfg.step_bn_prior).feat2d
    index = targets.point_index
    on, off = (kd_loss(feat2d[index], targets.features, center),
               kd_loss(other[index], targets.features, center))
    return float(on - off) if now else float(off - on)


def _trusted(cfg: AdaptConfig, kd_reference: float, feat2d: torch.Tensor, targets: KdTargets,
             kd_center: bool, frame: Frame, stats: FrameStats,
             event: Callable[[str], None]) -> KdTargets:
    """`targets` without the cameras whose KD loss under the source model is outside
    [1 / guard_kd_ratio, guard_kd_ratio] times the training-time level (event
    `camera_untrusted` each)."""
    ratios = camera_kd_ratios(feat2d, targets, kd_reference, kd_center)
    band = cfg.guard_kd_ratio
    keep = []
    for view, ratio in zip(frame.cameras, ratios):
        trusted = ratio is None or 1.0 / band <= ratio <= band
        if ratio is not None:
            stats.camera_kd_ratio[view.name] = ratio
        if not trusted:
            stats.cameras_untrusted.append(view.name)
            event("camera_untrusted")
        keep.append(trusted)
    return targets if all(keep) else targets.only(keep)
