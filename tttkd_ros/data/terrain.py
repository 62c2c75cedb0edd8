"""The ground's height: a rolling road with camber, raised sidewalks behind a kerb, uneven
terrain and the odd pothole; a pure function of world (x, y) and the town.

Real streets are not flat: SemanticKITTI's road spans 33 cm of height between its 10th
and 90th percentile as seen from the sensor, its sidewalks sit a kerb above the road, and
its terrain is lower and rougher. Both sensors ray cast this same surface (raycast.py),
and objects stand on it (layout.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .noise import hash01

if TYPE_CHECKING:
    from .town import TownConfig

_SALT_GRADE, _SALT_POTHOLE = 21, 22
_POTHOLE_CELL = 4.0  # metres; at most one pothole per cell


@dataclass(frozen=True)
class GroundShape:
    """Height field parameters; all zero gives the flat plane z = 0."""

    grade_amplitude: float = 2.0  # metres; the road rises and falls along s
    grade_wavelength: float = 200.0  # metres (max grade 2 pi A / L: 6 %)
    camber: float = 0.02  # the road falls this much per metre from its crown
    kerb: float = 0.13  # metres, sidewalk above the road edge
    sidewalk_cross_slope: float = 0.015  # sidewalks drain towards the road
    terrain_drop: float = 0.2  # metres, terrain below the sidewalk's outer edge
    # Slopes stay gentle (a few %) so that rays at grazing angles find the surface by fixed
    # point (raycast.py); fine roughness is the LiDAR's range noise, not geometry.
    terrain_relief: float = 0.12  # metres, amplitude of terrain's slow undulation
    pothole_prob: float = 0.04  # per 4 m x 4 m cell of road
    pothole_depth: float = 0.06

    def flat(self) -> bool:
        return not any((self.grade_amplitude, self.camber, self.kerb,
                        self.sidewalk_cross_slope, self.terrain_drop, self.terrain_relief,
                        self.pothole_prob))


def ground_height(town: TownConfig, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Height (N,) of the ground at world (x, y) (N,)."""
    g = town.ground
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if g.flat():
        return np.zeros(np.broadcast(x, y).shape)
    s, d = town.to_road(x, y)
    ad = np.abs(d)
    segment = np.floor(s / town.segment_length).astype(np.int64)
    curb = town.curb(segment, (d > 0).astype(np.int64))
    phase = float(hash01(town.seed, _SALT_GRADE)[0]) * 2.0 * np.pi
    h = g.grade_amplitude * np.sin(2.0 * np.pi * s / g.grade_wavelength + phase)
    edge = -g.camber * town.half_road  # road edge and parking lane below the crown
    road = np.where(ad < town.half_road, -g.camber * ad, edge)
    walk_out = curb + town.sidewalk_width
    sidewalk = edge + g.kerb + g.sidewalk_cross_slope * (ad - curb)
    # terrain drops from the sidewalk's outer edge over a metre, then undulates
    beyond = ad - walk_out
    terrain = (edge + g.kerb + g.sidewalk_cross_slope * town.sidewalk_width
               - g.terrain_drop * np.clip(beyond, 0.0, 1.0))
    relief = g.terrain_relief * np.sin(0.07 * s + 0.11 * ad) * np.sin(0.09 * ad - 0.04 * s)
    terrain = terrain + relief * np.clip(beyond / 8.0, 0.0, 1.0)
    h = h + np.where(ad < curb, road, np.where(ad < walk_out, sidewalk, terrain))
    return h - _potholes(town, s, d) * (ad < town.half_road)


def _potholes(town: TownConfig, s: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Depth (N,) of the potholes at road (s, d): round dips of 0.3-0.7 m radius."""
    g = town.ground
    if g.pothole_prob <= 0:
        return np.zeros(s.shape)
    cs = np.floor(s / _POTHOLE_CELL).astype(np.int64)
    cd = np.floor(d / _POTHOLE_CELL).astype(np.int64)
    has = hash01(town.seed, _SALT_POTHOLE, cs, cd) < g.pothole_prob
    cx = (cs + 0.2 + 0.6 * hash01(town.seed, _SALT_POTHOLE + 1, cs, cd)) * _POTHOLE_CELL
    cy = (cd + 0.2 + 0.6 * hash01(town.seed, _SALT_POTHOLE + 2, cs, cd)) * _POTHOLE_CELL
    radius = 0.3 + 0.4 * hash01(town.seed, _SALT_POTHOLE + 3, cs, cd)
    r = np.hypot(s - cx, d - cy) / radius
    return np.where(has & (r < 1.0), g.pothole_depth * (1.0 - r * r), 0.0)


def ground_normal(town: TownConfig, x: np.ndarray, y: np.ndarray,
                  step: float = 0.05) -> np.ndarray:
    """Upward unit normals (N, 3) of the ground at (x, y), by central differences."""
    if town.ground.flat():
        n = np.zeros((np.size(x), 3))
        n[:, 2] = 1.0
        return n
    hx = (ground_height(town, x + step, y) - ground_height(town, x - step, y)) / (2 * step)
    hy = (ground_height(town, x, y + step) - ground_height(town, x, y - step)) / (2 * step)
    n = np.stack((-hx, -hy, np.ones_like(hx)), axis=1)
    return n / np.linalg.norm(n, axis=1, keepdims=True)
