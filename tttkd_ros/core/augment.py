"""Transforms applied to the points and, consistently, to the projection: the training
augmentations, and a cloud moved into the sensor frame the model was trained in.

A rigid-plus-scale transform A moves the points (p' = A p); a camera that saw p now sees
p' through T_cam_lidar' = T_cam_lidar @ A^-1, so the KD targets stay on the same pixels.
Jitter is per-point noise and is deliberately not propagated (it is noise, not motion).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .frame import Frame


@dataclass
class AugmentConfig:
    rotate_z: bool = True  # uniform rotation about z
    scale: tuple[float, float] = (0.95, 1.05)
    flip_y: float = 0.5  # probability of mirroring y
    jitter_m: float = 0.01  # std of per-point Gaussian noise, metres


def random_transform(cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """A 4 x 4 transform drawn from the config (rotation about z, scale, y flip)."""
    angle = rng.uniform(0.0, 2.0 * math.pi) if cfg.rotate_z else 0.0
    c, s = math.cos(angle), math.sin(angle)
    scale = rng.uniform(*cfg.scale)
    flip = -1.0 if rng.random() < cfg.flip_y else 1.0
    A = np.eye(4)
    A[:3, :3] = scale * np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ np.diag(
        [1.0, flip, 1.0]
    )
    return A


def apply_transform(points: np.ndarray, A: np.ndarray, jitter_m: float = 0.0,
                    rng: np.random.Generator | None = None) -> np.ndarray:
    """points: (N, 4) x, y, z, intensity -> transformed copy, intensity untouched (rng: for
    the jitter, needed when jitter_m > 0)."""
    out = points.astype(np.float32, copy=True)
    out[:, :3] = points[:, :3] @ A[:3, :3].T.astype(np.float32) + A[:3, 3].astype(np.float32)
    if jitter_m > 0:
        out[:, :3] += rng.normal(0.0, jitter_m, size=(len(out), 3)).astype(np.float32)
    return out


def moved_extrinsic(T_cam_lidar: np.ndarray, A: np.ndarray) -> np.ndarray:
    """The camera extrinsic that sees the transformed points where it saw the originals."""
    return np.asarray(T_cam_lidar, dtype=np.float64) @ np.linalg.inv(A)


def moved_frame(frame: Frame, A: np.ndarray) -> Frame:
    """The frame with its points moved by A (e.g. from Autoware's base_link cloud into the
    LiDAR frame a model was trained in) and every camera seeing them where it saw them; the
    frame itself when A is the identity."""
    if np.array_equal(A, np.eye(4)):
        return frame
    cameras = [replace(v, T_cam_lidar=moved_extrinsic(v.T_cam_lidar, A)) for v in frame.cameras]
    return replace(frame, points=apply_transform(frame.points, A), cameras=cameras)
