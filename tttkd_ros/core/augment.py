"""Transforms applied to the points and, consistently, to the projection: the training
augmentations, and a cloud moved into the sensor frame the model was trained in.

The training augmentations cover what varies between sensors and scenes: the mounting
(rotation, tilt, height), the scale, the intensity calibration (gain, gamma), the density
(point dropout) and the noise (jitter).

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
    tilt_deg: float = 2.0  # pitch and roll, each uniform in +-tilt (mount, slope)
    height_m: float = 0.15  # vertical shift, uniform in +-height (mount height)
    jitter_m: float = 0.01  # std of per-point Gaussian noise, metres
    # intensity' = clip(gain * intensity ** gamma), gain log-uniform, gamma uniform
    intensity_gain: tuple[float, float] = (0.6, 1.6)
    intensity_gamma: tuple[float, float] = (0.7, 1.4)
    dropout: tuple[float, float] = (0.0, 0.3)  # share of points dropped, uniform


def random_transform(cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """A 4 x 4 transform drawn from the config (rotation about z, y flip, tilt, scale,
    height)."""
    angle = rng.uniform(0.0, 2.0 * math.pi) if cfg.rotate_z else 0.0
    c, s = math.cos(angle), math.sin(angle)
    scale = rng.uniform(*cfg.scale)
    flip = -1.0 if rng.random() < cfg.flip_y else 1.0
    pitch, roll = np.radians(rng.uniform(-cfg.tilt_deg, cfg.tilt_deg, 2))
    cp, sp, cr, sr = math.cos(pitch), math.sin(pitch), math.cos(roll), math.sin(roll)
    tilt = np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]]) @ np.array(
        [[1.0, 0.0, 0.0], [0.0, cr, -sr], [0.0, sr, cr]])
    A = np.eye(4)
    A[:3, :3] = scale * tilt @ np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ np.diag(
        [1.0, flip, 1.0]
    )
    A[2, 3] = rng.uniform(-cfg.height_m, cfg.height_m)
    return A


def random_intensity(cfg: AugmentConfig, intensity: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
    """Intensity as another sensor's calibration might report it (values in 0..1)."""
    lo, hi = np.log(cfg.intensity_gain[0]), np.log(cfg.intensity_gain[1])
    gain, gamma = math.exp(rng.uniform(lo, hi)), rng.uniform(*cfg.intensity_gamma)
    out = gain * np.power(np.clip(intensity, 0.0, 1.0), gamma)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def random_keep(cfg: AugmentConfig, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices (sorted) of the points a sparser sensor would have returned; at least one."""
    keep = np.nonzero(rng.random(n) >= rng.uniform(*cfg.dropout))[0]
    return keep if keep.size else np.arange(min(n, 1))


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
