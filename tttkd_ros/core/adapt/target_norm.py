"""Test-time normalisation: the encoder's first levels normalise with a moving average of
the statistics of the frames the model sees now, instead of the source's.

A changed sensor (fewer beams, range noise, fog, another intensity response) shifts the
statistics of the early features, which the source's batch norms then mis-normalise; a scene
change shifts the deep features more. Validation drives (README, "How the shipped defaults were
chosen", test-time normalisation): the stem and the first two encoder stages recover 1.0-4.6
points on the sensor shifts and stay within 0.2 of the source on another town and the clean
drive over 30 frames, while every layer's statistics lost 5 points on another town. Over
500 frames of another town a fast average (each frame weighing 0.1) followed the scene's
class mix and, with distillation, ended 3.0 points below the source model in the last
window; the shipped 0.01 ends 1.7 below, most of it from the first encoder stages, whose
statistics move with the scene as well as the sensor (README, "500 frames with test-time
normalisation"). No gradient is involved: the average is updated once per frame, by the
forward whose prediction serves (`arm`), over that frame's cloud; every copy of the model
(the source reference, the moving average, the serving copy) normalises with the same
averages (norm.RunningTarget), so the harm guard compares weights, not normalisations. A
reset to the source forgets the averages. With `target_norm_balance` a frame's statistics
weigh its voxels towards the training class mix (class_mix.py) and join the averages once
that forward has predicted the frame.

The teacher's check (`target_norm_check`): a changed sensor moves every level's statistics,
a changed scene (its class mix) mostly the deeper levels', and normalising those away then
removes some of what tells the classes apart. The statistics alone do not tell the two
apart (how far the stem's moved on another town overlaps range noise, where the deeper
levels help). The teacher might: on the cameras the harm guard trusts, the source model's
KD loss with the deeper levels on their averages minus the loss with them on the source's
statistics. The source pass measures that difference each frame; its average (weighted as
the statistics' own) opens the levels after the stem while it is not positive. Its sign
matched the mIoU change on ten validation drives without a gradient, but with adaptation it
held the levels on the reported `beams32` drive, where they gain 3.4 points, so it is off
by default (README, "The teacher's check on the normalisation").
"""
from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ..model.norm import RunningTarget, average_weight
from ..model.segmentation import SegModel
from .class_mix import ClassMixCommit


class DeepLevelCheck:
    """Whether the levels after the stem use their averages: the average of the recorded KD
    differences (on minus off) is not positive, or the check is off, or nothing is recorded.
    A comparison forward may force either answer on its own thread (`forced`): under the
    async schedule the serving thread keeps the real one."""

    def __init__(self) -> None:
        self.enabled = False
        self.momentum = 0.01
        self.difference: float | None = None  # the average of the recorded differences
        self.count = 0
        self._local = threading.local()

    def __call__(self) -> bool:
        forced = getattr(self._local, "forced", None)
        return self.verdict() if forced is None else forced

    def verdict(self) -> bool:
        return not self.enabled or self.difference is None or self.difference <= 0.0

    @contextmanager
    def forced(self, open_: bool) -> Iterator[None]:
        self._local.forced = open_
        try:
            yield
        finally:
            self._local.forced = None

    def record(self, difference: float) -> None:
        """One frame's KD loss with the deeper levels on their averages minus without,
        weighted as a frame is in the statistics (`average_weight`). A non-finite one
        (targets with NaNs) says nothing and would stay in the average for good: skipped."""
        if not math.isfinite(difference):
            return
        self.count += 1
        if self.difference is None:
            self.difference = difference
        else:
            weight = average_weight(self.momentum, self.count)
            self.difference += weight * (difference - self.difference)

    def clear(self) -> None:
        self.difference, self.count = None, 0


class TargetNorm:
    """The running target statistics of `model`'s encoder levels (0 = the stem)."""

    def __init__(self, model: SegModel, class_shares: torch.Tensor | None = None) -> None:
        """class_shares: the training data's class shares (the checkpoint's), which
        `balance` weighs the statistics towards; None = no balancing."""
        norms = model.backbone.encoder_norms()
        self.levels = [[RunningTarget() for _ in level] for level in norms]
        for level, targets in zip(norms, self.levels):
            for norm, target in zip(level, targets):
                norm.target = target
        self.targets = [t for level in self.levels for t in level]
        self.class_shares = class_shares
        self.commit = ClassMixCommit(self.levels)
        model.after_forward = self.commit
        self.check = DeepLevelCheck()
        for level in self.levels[1:]:
            for target in level:
                target.gate = self.check
        self.pending = False  # this frame's statistics are still to be taken in

    def select(self, levels: int, momentum: float, check: bool = False,
               balance: bool = False) -> None:
        """Normalise the first `levels` levels with their averages (0 = none), each frame
        weighing `momentum` in the average, the levels after the stem only while the
        teacher's check (`check` on) finds them helping; the others use the source
        statistics. `balance`: each frame's statistics weighted towards the training class
        mix (class_mix.py), when the training class shares are known."""
        deferred = balance and self.class_shares is not None
        self.commit.reference = self.class_shares if deferred else None
        for index, level in enumerate(self.levels):
            for target in level:
                target.use, target.momentum = index < levels, momentum
                target.deferred = deferred
        self.check.enabled = check and levels > 1
        self.check.momentum = momentum

    def gated(self) -> bool:
        """Whether the check now holds the levels after the stem at the source statistics."""
        return not self.check.verdict()

    def new_frame(self) -> None:
        self.pending = True

    def arm(self) -> None:
        """The next forward's batch joins the averages of the levels in use, once a frame
        (after `new_frame` or `clear`)."""
        if self.pending:
            self.pending = False
            for target in self.targets:
                target.armed, target.pending = target.use, None

    def clear(self) -> None:
        """Forget the averages (a reset to the source); the next armed batch starts them."""
        for target in self.targets:
            target.clear()
            target.armed = False
        self.check.clear()
        self.pending = True
