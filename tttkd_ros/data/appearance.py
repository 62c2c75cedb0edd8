"""What a hit surface looks like: class, colour, LiDAR reflectivity, texture and lighting.

The same procedural texture modulates the image colour and the LiDAR reflectivity, so the
two sensors see correlated detail (as real paint, grass and asphalt give).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .noise import block_noise
from .props import BUILDING, FENCE, POLE, TRAFFIC_SIGN, TRUNK, VEGETATION
from .raycast import GROUND, Hits
from .scene import Primitives
from .town import LANE_MARKING, PARKING, ROAD, SIDEWALK, TERRAIN, TownConfig

_IDS = 260  # raw ids used here are all below this

# raw id -> (RGB albedo, LiDAR reflectivity) of the ground classes; reflectivities (here and
# in props.py) are set so that the intensity medians per class match SemanticKITTI's
# (`tttkd synth --stats --compare`)
GROUND_STYLE: dict[int, tuple[tuple[float, float, float], float]] = {
    ROAD: ((0.30, 0.30, 0.32), 0.36), LANE_MARKING: ((0.88, 0.88, 0.84), 0.80),
    PARKING: ((0.40, 0.38, 0.40), 0.45), SIDEWALK: ((0.62, 0.60, 0.57), 0.47),
    TERRAIN: ((0.36, 0.48, 0.20), 0.53),
}
# raw id -> (texture cell size in metres, relative amplitude)
TEXTURE: dict[int, tuple[float, float]] = {
    ROAD: (0.4, 0.25), LANE_MARKING: (0.5, 0.10), PARKING: (0.5, 0.30),
    SIDEWALK: (0.8, 0.25), TERRAIN: (0.3, 0.55), BUILDING: (1.2, 0.20), FENCE: (0.15, 0.35),
    VEGETATION: (0.4, 0.60), TRUNK: (0.25, 0.35), POLE: (1.0, 0.10),
    TRAFFIC_SIGN: (1.0, 0.05),
}


def _lut(table: dict, default, width: int | None = None) -> np.ndarray:
    shape = (_IDS,) if width is None else (_IDS, width)
    lut = np.full(shape, default, dtype=np.float32)
    for raw, value in table.items():
        lut[raw] = value
    return lut


_GROUND_RGB = _lut({k: v[0] for k, v in GROUND_STYLE.items()}, 0.5, 3)
_GROUND_REFL = _lut({k: v[1] for k, v in GROUND_STYLE.items()}, 0.3)
_CELL = _lut({k: v[0] for k, v in TEXTURE.items()}, 0.5)
_AMP = _lut({k: v[1] for k, v in TEXTURE.items()}, 0.12)
_GLASS = np.array([0.15, 0.18, 0.22], dtype=np.float32)


@dataclass
class Surface:
    """Per ray: labels (R,) uint32 raw ids (0 where nothing was hit), albedo (R, 3) RGB in
    0..1, reflectivity (R,) in 0..1, hit (R,) bool."""

    labels: np.ndarray
    albedo: np.ndarray
    reflectivity: np.ndarray
    hit: np.ndarray


def surface(hits: Hits, points: np.ndarray, prims: Primitives, town: TownConfig) -> Surface:
    """Class, albedo and reflectivity of every hit; points (R, 3) world hit points."""
    n = hits.t.shape[0]
    labels = np.zeros(n, dtype=np.uint32)
    albedo = np.zeros((n, 3), dtype=np.float32)
    refl = np.zeros(n, dtype=np.float32)
    ground = hits.prim == GROUND
    obj = hits.prim >= 0
    labels[ground] = town.ground_labels(points[ground, 0], points[ground, 1])
    albedo[ground] = _GROUND_RGB[labels[ground]]
    refl[ground] = _GROUND_REFL[labels[ground]]
    index = hits.prim[obj]
    labels[obj], albedo[obj], refl[obj] = prims.label[index], prims.color[index], \
        prims.reflectivity[index]
    hit = ground | obj
    lab = labels[hit]
    tex = block_noise(points[hit], _CELL[lab][:, None], salt=town.seed)
    factor = (1.0 + 2.0 * _AMP[lab] * (tex - 0.5)).astype(np.float32)
    albedo[hit] *= factor[:, None]
    refl[hit] *= factor
    _windows(labels, hits.normal, points, albedo, refl)
    return Surface(labels, np.clip(albedo, 0, 1), np.clip(refl, 0, 1), hit)


def _windows(labels: np.ndarray, normal: np.ndarray, points: np.ndarray, albedo: np.ndarray,
             refl: np.ndarray) -> None:
    """Paint a grid of dark glass windows on building walls above the ground floor."""
    wall = np.nonzero((labels == BUILDING) & (np.abs(normal[:, 2]) < 0.5))[0]
    if wall.size == 0:
        return
    p, nrm = points[wall], normal[wall]
    along = p[:, 0] * -nrm[:, 1] + p[:, 1] * nrm[:, 0]  # coordinate along the wall
    fu, fz = np.mod(along / 3.0, 1.0), np.mod(p[:, 2] / 3.2, 1.0)
    glass = (fu > 0.2) & (fu < 0.7) & (fz > 0.35) & (fz < 0.8) & (p[:, 2] > 2.5)
    albedo[wall[glass]] = _GLASS
    refl[wall[glass]] = 0.08  # glass returns little laser energy


def sun_direction(town: TownConfig) -> np.ndarray:
    """Unit vector towards the sun in the world frame."""
    az, el = np.radians(town.sun_azimuth_deg), np.radians(town.sun_elevation_deg)
    return np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])


def shade(albedo: np.ndarray, normal: np.ndarray, sun: np.ndarray) -> np.ndarray:
    """Lambert sun plus a sky term that favours up-facing surfaces: (R, 3) -> (R, 3)."""
    direct = np.clip(normal @ sun, 0.0, None)[:, None]
    sky = 0.35 + 0.15 * normal[:, 2:3]
    return albedo * (sky + 0.7 * direct * np.array([1.0, 0.97, 0.9]))


def sky(dirs: np.ndarray) -> np.ndarray:
    """Sky colour by elevation: pale at the horizon, deeper blue overhead. (R, 3) RGB."""
    up = np.sqrt(np.clip(dirs[:, 2:3], 0.0, 1.0))
    horizon, zenith = np.array([0.80, 0.85, 0.92]), np.array([0.33, 0.52, 0.84])
    return horizon + (zenith - horizon) * up
