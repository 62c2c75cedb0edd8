"""The data that crosses the engine boundary: one frame in, one prediction out.

Plain numpy on both sides so that the ROS node, the offline evaluator, the demo and the
benchmark all feed the same engine the same way.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

UNLABELED = 65535  # label of a point the model gave no class (non-finite, or a no-return)
MASK_NONE = 255  # mask value of a pixel no point landed on


@dataclass
class CameraView:
    """One camera image with its calibration.

    image: H x W x 3 uint8 RGB.
    K: 3 x 3 intrinsics.  D: distortion coefficients (plumb_bob: k1, k2, p1, p2, k3);
    empty means none.  T_cam_lidar: 4 x 4, maps LiDAR-frame points to the camera's
    optical frame (z forward, x right, y down).
    """

    name: str
    image: np.ndarray
    K: np.ndarray
    T_cam_lidar: np.ndarray
    D: np.ndarray = field(default_factory=lambda: np.zeros(0))
    distortion_model: str = "plumb_bob"
    frame_id: str = ""

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the image."""
        return int(self.image.shape[0]), int(self.image.shape[1])


@dataclass
class Frame:
    """points: N x 4 float32 (x, y, z, intensity) in the LiDAR frame, intensity in the
    driver's units. intensity_max: the largest value the driver's intensity field can hold
    when its type says so (255 for UINT8, 65535 for UINT16), else None."""

    points: np.ndarray
    cameras: list[CameraView] = field(default_factory=list)
    stamp_ns: int = 0
    frame_id: str = ""
    intensity_max: float | None = None


@dataclass
class FrameStats:
    """What the engine did with one frame; published on ~/stats as JSON."""

    steps: int = 0
    adapt_ms: float = 0.0
    infer_ms: float = 0.0
    teacher_ms: float = 0.0
    budget_ms: float = 0.0
    over_budget: bool = False
    no_return_points: int = 0  # finite points at the origin or within min_range: unlabeled
    losses: dict[str, float] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)  # e.g. "nonfinite_step_discarded"
    # The harm guard (core/adapt/guard.py): its source pass's time (inside budget_ms), whether
    # it compared the adapted model with the source on this frame and what it found: share of
    # points whose label differs, mean KL(source || adapted), source objective minus adapted
    # objective (> 0: it still beats the source at its own objective), share of the source's
    # sure labels changed (what the rule judges); None when not compared.
    guard_ms: float = 0.0
    guard_checked: bool = False
    guard_drift: float | None = None
    guard_kl: float | None = None
    guard_gain: float | None = None
    guard_flip: float | None = None
    guard_rollback: bool = False  # the check rolled the weights back (events say to what)
    # Per camera: its KD loss under the source model over the checkpoint's training level;
    # the cameras outside adaptation.guard_kd_ratio or under guard_min_brightness had their
    # KD targets dropped
    camera_kd_ratio: dict[str, float] = field(default_factory=dict)
    cameras_untrusted: list[str] = field(default_factory=list)

    # what an adaptation produces (async: copied from the worker's stats at swap-in)
    ADAPTATION_FIELDS = ("steps", "adapt_ms", "teacher_ms", "losses", "over_budget",
                         "guard_ms", "guard_checked", "guard_drift", "guard_kl", "guard_gain",
                         "guard_flip", "guard_rollback", "camera_kd_ratio", "cameras_untrusted")


@dataclass
class Prediction:
    """labels: N uint16 train ids (UNLABELED for points without a class).
    confidence: N float32 softmax probability of the chosen class (0 where unlabeled).
    masks: camera name -> H x W uint8 class ids (MASK_NONE where no point projects).
    """

    labels: np.ndarray
    confidence: np.ndarray
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    stats: FrameStats = field(default_factory=FrameStats)
