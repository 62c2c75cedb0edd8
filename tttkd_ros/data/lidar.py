"""A spinning multi-beam LiDAR, ray cast analytically against the scene.

LiDAR frame: x forward, y left, z up. Rays form a (beams x columns) grid: row 0 is the
highest beam, column j points at azimuth -pi + (j + 0.5) * resolution. A sweep is
instantaneous (no rolling-shutter motion), which matches motion-compensated data.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .appearance import surface
from .props import VEGETATION
from .raycast import cast
from .scene import Primitives
from .town import TownConfig
from .weather import OUTLIER, WeatherConfig, lidar_weather


@dataclass(frozen=True)
class LidarConfig:
    beams: int = 64
    fov_up_deg: float = 2.0
    fov_down_deg: float = -24.8
    layout: str = "kitti"  # "kitti": HDL-64E's two blocks (denser upper block), or "uniform"
    azimuth_res_deg: float = 0.18
    max_range: float = 120.0
    min_range: float = 2.5  # returns closer than this (the ego vehicle) are discarded
    mount_height: float = 1.73
    mount_tilt_deg: float = 0.5  # sigma of a drive's mounting pitch and roll
    range_noise: float = 0.02  # metres, Gaussian sigma
    foliage_depth: float = 0.15  # metres, mean extra range of a return from inside foliage
    dropout: float = 0.0  # chance that any return is lost
    # A return is detected with probability sigmoid(log(P / detect_threshold) / detect_softness)
    # of its power P = reflectivity * cos(incidence) * min(1, (detect_range / range)^2):
    # dark surfaces at grazing angles and far away thin out, as on an HDL-64E.
    detect_threshold: float = 0.001
    detect_softness: float = 0.5
    detect_range: float = 10.0
    intensity_gain: float = 1.0
    intensity_gamma: float = 1.0  # measured = gain * beam_gain * true ** gamma
    # true = reflectivity * (incidence_floor + (1 - incidence_floor) * cos(incidence)): the
    # sensor's intensity depends only weakly on the angle (SemanticKITTI's road, seen at
    # grazing angles, is as bright as its sidewalks)
    incidence_floor: float = 0.6
    beam_gain_sigma: float = 0.08  # spread of the per-beam intensity calibration
    weak_beam_fraction: float = 0.1  # lasers that read far too low (gain 0.05-0.35)
    intensity_noise: float = 0.02

    def elevations(self) -> np.ndarray:
        """(beams,) beam elevations in radians, highest first."""
        up, down, n = self.fov_up_deg, self.fov_down_deg, self.beams
        if self.layout == "uniform" or n < 4:
            deg = np.linspace(up, down, n)
        elif self.layout == "kitti":
            # HDL-64E: the upper half of the lasers spans the top 38.5 % of the field of view.
            split = up + 0.385 * (down - up)
            n_up = n // 2
            lower_step = (split - down) / (n - n_up)
            deg = np.concatenate([np.linspace(up, split, n_up),
                                  split - lower_step * np.arange(1, n - n_up + 1)])
        else:
            raise ValueError(f"unknown beam layout {self.layout!r}")
        return np.radians(deg)

    @property
    def columns(self) -> int:
        return round(360.0 / self.azimuth_res_deg)


@lru_cache(maxsize=8)
def _beam_dirs(config: LidarConfig) -> np.ndarray:
    """(beams * columns, 3) unit ray directions in the LiDAR frame, row-major."""
    elev = config.elevations()
    az = -np.pi + (np.arange(config.columns) + 0.5) * (2.0 * np.pi / config.columns)
    ce = np.cos(elev)[:, None]
    se = np.broadcast_to(np.sin(elev)[:, None], (elev.size, az.size))
    return np.stack((ce * np.cos(az), ce * np.sin(az), se), axis=-1).reshape(-1, 3)


class SpinningGrid:
    """The rays of one sweep from pose (4 x 4 world_from_lidar)."""

    def __init__(self, config: LidarConfig, pose: np.ndarray) -> None:
        self.elev = config.elevations()
        self.cols = config.columns
        self.step = 2.0 * np.pi / self.cols
        self.dirs_local = _beam_dirs(config)
        self.rotation = pose[:3, :3]
        self.origin = pose[:3, 3].astype(np.float64)
        self.dirs = self.dirs_local @ self.rotation.T

    def window(self, corners: np.ndarray) -> np.ndarray:
        """Flat ray indices whose azimuth and elevation fall within the box's angular span."""
        c = (corners - self.origin) @ self.rotation  # LiDAR frame
        x, y, z = c[:, 0], c[:, 1], c[:, 2]
        nearest_x = np.clip(0.0, x.min(), x.max())
        nearest_y = np.clip(0.0, y.min(), y.max())
        rho_min = np.hypot(nearest_x, nearest_y)  # 0 when the sensor is above/below/inside
        rho_max = np.hypot(x, y).max()
        z_lo, z_hi = z.min(), z.max()
        elev_lo = min(np.arctan2(z_lo, rho_min), np.arctan2(z_lo, rho_max))
        elev_hi = max(np.arctan2(z_hi, rho_min), np.arctan2(z_hi, rho_max))
        rows = np.nonzero((self.elev >= elev_lo - 1e-9) & (self.elev <= elev_hi + 1e-9))[0]
        if rows.size == 0:
            return rows
        if rho_min == 0.0:
            cols = np.arange(self.cols)
        else:
            # Outside the footprint the span is below pi, so angles relative to one corner
            # do not wrap.
            az = np.arctan2(y, x)
            rel = np.mod(az - az[0] + np.pi, 2.0 * np.pi) - np.pi
            lo, hi = az[0] + rel.min(), az[0] + rel.max()
            first = int(np.ceil((lo + np.pi) / self.step - 0.5 - 1e-9))
            last = int(np.floor((hi + np.pi) / self.step - 0.5 + 1e-9))
            cols = np.mod(np.arange(first, min(last, first + self.cols - 1) + 1), self.cols)
        return (rows[:, None] * self.cols + cols[None, :]).ravel()


def beam_gains(config: LidarConfig, rng: np.random.Generator) -> np.ndarray:
    """(beams,) per-beam intensity gains of one sensor unit (constant over a drive): a spread
    about 1, and a few weak lasers (real units read zero on dark surfaces on some beams)."""
    gains = np.clip(1.0 + config.beam_gain_sigma * rng.standard_normal(config.beams), 0.2, 3.0)
    weak = rng.random(config.beams) < config.weak_beam_fraction
    gains[weak] = rng.uniform(0.05, 0.35, int(weak.sum()))
    return gains


def scan(
    prims: Primitives, town: TownConfig, pose: np.ndarray, config: LidarConfig,
    weather: WeatherConfig, gains: np.ndarray, rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """One sweep from pose (4 x 4 world_from_lidar).

    Returns points (N, 4) float32 x, y, z, intensity in 0..1 in the LiDAR frame, and labels
    (N,) uint32 raw SemanticKITTI ids, in (beam, azimuth) order.
    """
    grid = SpinningGrid(config, pose)
    hits = cast(grid, prims, config.max_range, town)
    surf = surface(hits, hits.points(grid), prims, town)
    cos_inc = np.abs(np.einsum("ij,ij->i", hits.normal, grid.dirs))
    floor = config.incidence_floor
    true = surf.reflectivity * (floor + (1.0 - floor) * cos_inc)
    beam = np.repeat(np.arange(config.beams), grid.cols)
    intensity = config.intensity_gain * gains[beam] * true**config.intensity_gamma
    n = hits.t.shape[0]
    intensity = intensity + config.intensity_noise * rng.standard_normal(n)
    t = np.where(surf.hit & (hits.t <= config.max_range), hits.t, np.inf)
    t = t + rng.exponential(config.foliage_depth, n) * (surf.labels == VEGETATION)
    t, labels, intensity = lidar_weather(t, surf.labels, intensity, weather, config.min_range,
                                         rng)
    detected = rng.random(n) < detection_probability(config, surf.reflectivity, cos_inc, t)
    detected |= labels == OUTLIER  # droplets return by definition
    t = t + config.range_noise * rng.standard_normal(n)
    keep = (np.isfinite(t) & (t >= config.min_range) & (rng.random(n) >= config.dropout)
            & detected)
    xyz = t[keep, None] * grid.dirs_local[keep]
    points = np.concatenate((xyz, np.clip(intensity[keep], 0.0, 1.0)[:, None]), axis=1)
    return points.astype(np.float32), labels[keep].astype(np.uint32)


def detection_probability(config: LidarConfig, reflectivity: np.ndarray, cos_inc: np.ndarray,
                          t: np.ndarray) -> np.ndarray:
    """(R,) chance that each return is strong enough to be detected."""
    falloff = np.minimum(1.0, (config.detect_range / np.maximum(t, 1e-3)) ** 2)
    power = np.maximum(reflectivity * cos_inc * falloff, 1e-12)
    score = np.log(power / config.detect_threshold) / config.detect_softness
    return 1.0 / (1.0 + np.exp(-np.clip(score, -50.0, 50.0)))
