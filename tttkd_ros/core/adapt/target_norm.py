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
reset to the source forgets the averages.
"""
from __future__ import annotations

from ..model.norm import RunningTarget
from ..model.segmentation import SegModel


class TargetNorm:
    """The running target statistics of `model`'s encoder levels (0 = the stem)."""

    def __init__(self, model: SegModel) -> None:
        norms = model.backbone.encoder_norms()
        self.levels = [[RunningTarget() for _ in level] for level in norms]
        for level, targets in zip(norms, self.levels):
            for norm, target in zip(level, targets):
                norm.target = target
        self.targets = [t for level in self.levels for t in level]
        self.pending = False  # this frame's statistics are still to be taken in

    def select(self, levels: int, momentum: float) -> None:
        """Normalise the first `levels` levels with their averages (0 = none), each frame
        weighing `momentum` in the average; the others use the source statistics."""
        for index, level in enumerate(self.levels):
            for target in level:
                target.use, target.momentum = index < levels, momentum

    def new_frame(self) -> None:
        self.pending = True

    def arm(self) -> None:
        """The next forward's batch joins the averages of the levels in use, once a frame
        (after `new_frame` or `clear`)."""
        if self.pending:
            self.pending = False
            for target in self.targets:
                target.armed = target.use

    def clear(self) -> None:
        """Forget the averages (a reset to the source); the next armed batch starts them."""
        for target in self.targets:
            target.clear()
            target.armed = False
        self.pending = True
