"""Synthetic drives: frames along an ego path through the town, seeded and deterministic.

Each frame depends only on (config, seed, index): the ego path is a closed-form function of
time, the town is a function of its own layout seed, and each frame's sensor noise comes
from a generator seeded with (seed, index). Consecutive frames are 0.6-1.1 m apart at 10 Hz,
so they overlap heavily, as continual adaptation needs.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.frame import CameraView, Frame
from . import LIDAR_FRAME_ID
from .camera import render
from .layout import Town
from .lidar import beam_gains, scan
from .noise import rng_for
from .shifts import SynthConfig, get_shift
from .terrain import ground_height

_PATH, _LIDAR, _CAMERA, _GAINS = 1, 2, 3, 4


@dataclass
class SynthFrame:
    """One synthetic frame.

    points: (N, 4) float32 x, y, z, intensity (0..1) in the LiDAR frame.
    labels: (N,) uint32 raw SemanticKITTI ids (no instance bits).
    cameras: rendered images with calibration; label_images: camera name -> H x W uint32
    raw ids of what each pixel shows (0 = sky).  pose: 4 x 4 world_from_lidar (world z 0 is
    the road's mean height; terrain.py has the ground).  stamp_ns: acquisition time.
    index: frame number in the drive.
    """

    points: np.ndarray
    labels: np.ndarray
    cameras: list[CameraView]
    label_images: dict[str, np.ndarray]
    pose: np.ndarray
    stamp_ns: int
    index: int = 0
    frame_id: str = LIDAR_FRAME_ID

    def to_frame(self) -> Frame:
        """The engine's input for this frame (labels stay with the SynthFrame)."""
        return Frame(points=self.points, cameras=list(self.cameras), stamp_ns=self.stamp_ns,
                     frame_id=self.frame_id)


class EgoPath:
    """The ego vehicle's LiDAR pose as a function of time: along the inner right-hand lane
    with gentle speed and lateral variations drawn from the drive seed, its wheels on the
    ground (pitching and rolling with the road) and its LiDAR mounted with a small tilt of
    its own (drawn per drive: no two installations are level alike)."""

    def __init__(self, config: SynthConfig, seed: int) -> None:
        rng = rng_for(seed, _PATH)
        self.town, self.height = config.town, config.lidar.mount_height
        self.s0 = rng.uniform(0.0, 5000.0)
        self.speed = rng.uniform(*config.speed)
        self.surge = (rng.uniform(0.3, 0.8), rng.uniform(0.2, 0.5), rng.uniform(0, 2 * np.pi))
        self.sway = (0.25, rng.uniform(0.1, 0.3), rng.uniform(0, 2 * np.pi))
        self.tilt = rng.normal(0.0, np.radians(config.lidar.mount_tilt_deg), 2)  # pitch, roll

    def pose(self, t: float) -> np.ndarray:
        """4 x 4 world_from_lidar at time t seconds after the drive's start."""
        amp, omega, phase = self.surge
        s = self.s0 + self.speed * t + amp * np.sin(omega * t + phase)
        ds = self.speed + amp * omega * np.cos(omega * t + phase)
        amp, omega, phase = self.sway
        d = -self.town.lane_width / 2 + amp * np.sin(omega * t + phase)
        dd = amp * omega * np.cos(omega * t + phase)
        x, y, heading = self.town.to_world(s, d)
        yaw = float(heading) + np.arctan2(dd, ds)
        pitch, roll = self._attitude(float(x), float(y), yaw)
        rotation = _rot_z(yaw) @ _rot_y(pitch + self.tilt[0]) @ _rot_x(roll + self.tilt[1])
        ground = float(ground_height(self.town, np.array([x]), np.array([y]))[0])
        pose = np.eye(4)
        pose[:3, :3] = rotation
        pose[:3, 3] = np.array([float(x), float(y), ground]) + rotation[:, 2] * self.height
        return pose

    def _attitude(self, x: float, y: float, yaw: float) -> tuple[float, float]:
        """(pitch, roll) of a car with wheelbase 2.7 m and track 1.6 m standing at (x, y)."""
        f = np.array([np.cos(yaw), np.sin(yaw)])
        left = np.array([-f[1], f[0]])
        px = np.array([x + 1.35 * f[0], x - 1.35 * f[0], x + 0.8 * left[0], x - 0.8 * left[0]])
        py = np.array([y + 1.35 * f[1], y - 1.35 * f[1], y + 0.8 * left[1], y - 0.8 * left[1]])
        front, back, lft, rgt = ground_height(self.town, px, py)
        # nose up is a negative rotation about y; left side up a positive one about x
        return -float(np.arctan2(front - back, 2.7)), float(np.arctan2(lft - rgt, 1.6))


def _rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def render_frame(config: SynthConfig, seed: int, index: int, town: Town | None = None,
                 path: EgoPath | None = None) -> SynthFrame:
    """Frame `index` of the drive (config, seed); pass `town`/`path` to reuse their caches."""
    town = Town(config.town) if town is None else town
    path = EgoPath(config, seed) if path is None else path
    t = index / config.rate_hz
    pose = path.pose(t)
    cameras = [c.scaled(config.image_scale) for c in config.cameras]
    reach = max([config.lidar.max_range, *[c.far for c in cameras]])
    prims = town.primitives(float(pose[0, 3]), reach + 10.0, t)
    gains = beam_gains(config.lidar, rng_for(seed, _GAINS))
    points, labels = scan(prims, config.town, pose, config.lidar, config.weather, gains,
                          rng_for(seed, index, _LIDAR))
    views, label_images = [], {}
    for i, cam in enumerate(cameras):
        view, label_image = render(prims, config.town, pose, cam, config.weather,
                                   config.imaging, rng_for(seed, index, _CAMERA, i))
        views.append(view)
        label_images[cam.name] = label_image
    stamp = config.start_ns + round(index * 1e9 / config.rate_hz)
    return SynthFrame(points=points, labels=labels, cameras=views, label_images=label_images,
                      pose=pose, stamp_ns=int(stamp), index=index)


def generate_drive(shift: str = "clean", frames: int = 10, seed: int = 0, every: int = 1,
                   **overrides: Any) -> Iterator[SynthFrame]:
    """Lazily yield `frames` frames of a drive in the `shift` preset: consecutive ones, or
    every `every`-th (training sets want frames metres apart, adaptation wants them 10 Hz).

    overrides: see `shifts.apply_overrides`, e.g. lidar_beams=16, image_scale=0.25.
    """
    if every < 1:
        raise ValueError(f"every must be at least 1, got {every}")
    config = get_shift(shift, **overrides)
    town = Town(config.town)
    path = EgoPath(config, seed)
    for index in range(0, frames * every, every):
        yield render_frame(config, seed, index, town, path)
