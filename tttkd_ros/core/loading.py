"""Build a ready-to-run AdaptationEngine from a checkpoint path and the configs.

Used by the node (and by any tool that starts from a checkpoint file): loads the model, checks
that it fits the configured teacher, loads the teacher, and warms everything up so that the
first real frame does not pay for kernel selection and allocator growth.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace

import numpy as np
import torch

from .adapt.budget import BudgetPlanner
from .adapt.engine import AdaptationEngine
from .config import DEFAULT_TEACHER_HEIGHT, AdaptConfig, TeacherConfig
from .frame import CameraView, Frame
from .model.checkpoint import load_checkpoint
from .model.teacher import DinoTeacher, teacher_fingerprint
from .model.teacher_probe import TeacherProbe


@dataclass
class LoadedEngine:
    """The engine plus the checkpoint facts an output needs (class names, palette)."""

    engine: AdaptationEngine
    class_names: list[str]
    palette: np.ndarray  # (C, 3) uint8 RGB


def load_engine(checkpoint: str, adapt: AdaptConfig, teacher: TeacherConfig,
                device: torch.device | str, dino=None) -> LoadedEngine:
    """Load the checkpoint and the teacher onto `device` and build the engine. `dino`: an
    already loaded teacher for `teacher` (anything with `features(image)`), shared by
    engines that run on the same images.

    Raises FileNotFoundError / ValueError whose message says what to change.
    """
    if not checkpoint:
        raise ValueError("no checkpoint given: set the parameter `checkpoint` to a model file "
                         "written by `tttkd train` (e.g. -p checkpoint:=/path/model.pt)")
    try:
        loaded = load_checkpoint(checkpoint, device, expect={
            "teacher_name": teacher.name, "feat_dim": teacher.feat_dim})
    except ValueError as exc:
        raise ValueError(f"{exc}. Set teacher.name to the teacher the checkpoint was trained "
                         "with, or use a checkpoint trained for this teacher.") from exc
    teacher = resolved_teacher(teacher, loaded.teacher)
    same_teacher = check_teacher(checkpoint, loaded.teacher, teacher)
    dino = DinoTeacher(teacher, device) if dino is None else dino
    # the KD level reached in training is a yardstick only for the teacher it was reached with
    kd_reference = (loaded.teacher or {}).get("kd_loss") if same_teacher else None
    probe = TeacherProbe.from_extra(loaded.extra) if same_teacher else None
    normalises = adapt.mode != "none" and adapt.target_norm_levels > 0
    if normalises and adapt.target_norm_balance and loaded.class_shares is None:
        warnings.warn(f"{checkpoint} records no training class shares, so target_norm_balance "
                      "has no class mix to weigh towards and the test-time statistics stay "
                      "plain; add them with `tttkd probe --checkpoint FILE --data "
                      "TRAINING_DATA --shares-only` (tttkd train records them)",
                      stacklevel=2)
    engine = AdaptationEngine(loaded.model, adapt, dino, device, loaded.intensity, kd_reference,
                              probe, loaded.class_shares)
    return LoadedEngine(engine, loaded.class_names, loaded.palette)


def resolved_teacher(teacher: TeacherConfig, trained: dict | None) -> TeacherConfig:
    """`teacher` with image_height 0 replaced by the height the checkpoint was trained with
    (DEFAULT_TEACHER_HEIGHT when it records none), so that a checkpoint runs as trained
    without the user repeating its settings."""
    if teacher.image_height:
        return teacher
    height = (trained or {}).get("image_height") or DEFAULT_TEACHER_HEIGHT
    return replace(teacher, image_height=int(height))


def check_teacher(checkpoint: str, trained: dict | None, teacher: TeacherConfig) -> bool:
    """The configured teacher must be the one the checkpoint was trained with (same weights,
    same image height): its rho_2D head learned those features. Raises ValueError naming
    each difference and the fix, unless `teacher.allow_mismatch` (then a warning). Returns
    whether the checkpoint records this very teacher."""
    if trained is None:
        return False  # a checkpoint from before teachers were recorded: nothing to check
    given = {"weights": teacher_fingerprint(teacher), "image_height": teacher.image_height}
    differ = [f"{key}: trained with {trained.get(key)!r}, configured {value!r}"
              for key, value in given.items() if trained.get(key) != value]
    if not differ:
        return True
    text = (f"the teacher does not match the one {checkpoint} was trained with ("
            + "; ".join(differ) + "). Set teacher.weights to the file it was trained with "
            f"({trained.get('weights_file') or 'random weights: empty'}) and "
            f"teacher.image_height to {trained.get('image_height')}, or train a checkpoint "
            "for this teacher (tttkd train --teacher-weights FILE --teacher-height H); "
            "teacher.allow_mismatch: true starts anyway")
    if not teacher.allow_mismatch:
        raise ValueError(text)
    warnings.warn(text.replace("; teacher.allow_mismatch: true starts anyway", ""),
                  stacklevel=3)
    return False


def build_engine(checkpoint: str, adapt: AdaptConfig, teacher: TeacherConfig,
                 device: torch.device | str) -> AdaptationEngine:
    """`load_engine` for callers that need only the engine."""
    return load_engine(checkpoint, adapt, teacher, device).engine


def forward_camera(name: str, image_hw: tuple[int, int], rng: np.random.Generator,
                   yaw_deg: float = 0.0) -> CameraView:
    """A camera at the LiDAR's origin looking along its +x axis turned left by `yaw_deg`
    (90 deg horizontal field of view) with a noise image drawn from `rng`."""
    h, w = image_hw
    K = np.array([[w / 2, 0, w / 2], [0, w / 2, h / 2], [0, 0, 1]], dtype=np.float64)
    c, s = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    optical = np.array([[0, -1, 0], [0, 0, -1], [1, 0, 0]])  # LiDAR (x fwd, z up) -> optical
    T = np.eye(4)
    T[:3, :3] = optical @ np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]])  # undo the yaw
    image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    return CameraView(name=name, image=image, K=K, T_cam_lidar=T)


def warm_up_frame(points: int = 2048, image_hw: tuple[int, int] = (64, 128),
                  seed: int = 0) -> Frame:
    """A synthetic frame: `points` random points ahead of the sensor (x forward) and one
    camera looking along +x that sees most of them, so the teacher and KD path run too."""
    rng = np.random.default_rng(seed)
    xyz = rng.uniform((2.0, -6.0, -2.0), (30.0, 6.0, 2.0), size=(points, 3))
    cloud = np.concatenate([xyz, rng.uniform(0, 1, size=(points, 1))], axis=1)
    view = forward_camera("warm_up", image_hw, rng)
    return Frame(points=cloud.astype(np.float32), cameras=[view])


def warm_up(engine: AdaptationEngine, frame: Frame | None = None) -> None:
    """Run one frame through the engine (teacher, forward, backward, optimizer step), then
    put it back as it was: source weights, fresh optimizer, no step-time history, reset
    count, frame count and restoration RNG unchanged. Warm-up step times are not
    representative (first calls select kernels), so they must not steer the budget planner."""
    frame = frame or warm_up_frame()
    resets, enabled, frames = engine.resets, engine.enabled, engine.adapted_frames
    if engine.teacher is not None:
        engine.teacher.features(frame.cameras[0].image)  # also when the mode has no KD
    engine.enabled = True  # adaptation may be switched on later: warm its backward pass too
    try:
        engine.process(frame)
    finally:
        engine.enabled = enabled
    engine.reset()
    engine.resets, engine.adapted_frames = resets, frames
    engine.planner = BudgetPlanner()
    engine.generator.manual_seed(engine.cfg.seed)
