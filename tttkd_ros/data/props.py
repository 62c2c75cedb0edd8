"""Street objects built from primitives, one function per object type.

Each builder draws its sizes and colours from `rng` and adds its parts, all with the raw
SemanticKITTI id of the object's class (moving variants pass their own id). Positions are
world (x, y) on the ground; `yaw` is the object's heading.
"""
from __future__ import annotations

import numpy as np

from .scene import BOX, CYLINDER, ELLIPSOID, PrimitiveBuilder

CAR, BICYCLE, TRUCK, PERSON, BICYCLIST = 10, 11, 18, 30, 31
BUILDING, FENCE, VEGETATION, TRUNK, POLE, TRAFFIC_SIGN = 50, 51, 70, 71, 80, 81

_PAINTS = np.array([[0.92, 0.92, 0.92], [0.08, 0.08, 0.09], [0.62, 0.64, 0.67],
                    [0.62, 0.08, 0.07], [0.10, 0.20, 0.52], [0.33, 0.34, 0.36],
                    [0.12, 0.30, 0.18], [0.80, 0.62, 0.20]])
_FACADES = np.array([[0.76, 0.69, 0.55], [0.55, 0.55, 0.56], [0.56, 0.28, 0.21],
                     [0.86, 0.85, 0.82], [0.80, 0.70, 0.42], [0.45, 0.47, 0.52]])
_CLOTHES = np.array([[0.10, 0.10, 0.12], [0.20, 0.25, 0.45], [0.55, 0.10, 0.10],
                     [0.75, 0.75, 0.72], [0.30, 0.35, 0.25], [0.50, 0.40, 0.30]])
_SIGNS = np.array([[0.85, 0.10, 0.10], [0.10, 0.25, 0.75], [0.95, 0.80, 0.10],
                   [0.92, 0.92, 0.92]])
_GLASS = np.array([0.10, 0.12, 0.15])
_SKIN = np.array([0.80, 0.62, 0.52])


def _pick(rng: np.random.Generator, palette: np.ndarray, jitter: float = 0.04) -> np.ndarray:
    colour = palette[rng.integers(len(palette))] + rng.normal(0.0, jitter, 3)
    return np.clip(colour, 0.0, 1.0)


def _offset(x: float, y: float, yaw: float, forward: float) -> tuple[float, float]:
    return x + forward * np.cos(yaw), y + forward * np.sin(yaw)


def car(b: PrimitiveBuilder, rng: np.random.Generator, x: float, y: float, yaw: float,
        label: int = CAR) -> float:
    """A car (body + glass cabin); returns its length."""
    length, width = rng.uniform(3.9, 4.8), rng.uniform(1.7, 1.9)
    paint = _pick(rng, _PAINTS)
    # Glossy paint sends most laser energy away (SemanticKITTI's cars are darker than its
    # road); light paint still returns more than dark paint.
    refl = 0.06 + 0.22 * float(paint.mean())
    b.add(BOX, (x, y, 0.6), (length / 2, width / 2, 0.4), label, paint, refl, yaw)
    cx, cy = _offset(x, y, yaw, -0.05 * length)
    b.add(BOX, (cx, cy, 1.22), (0.28 * length, width / 2 - 0.06, 0.22), label,
          0.6 * _GLASS + 0.4 * paint, 0.04, yaw)
    return length


def truck(b: PrimitiveBuilder, rng: np.random.Generator, x: float, y: float, yaw: float,
          label: int = TRUCK) -> float:
    """A box truck (cab + cargo box) centred at (x, y); returns its length."""
    cargo, width = rng.uniform(5.0, 8.0), rng.uniform(2.2, 2.5)
    length = cargo + 2.2
    fx, fy = _offset(x, y, yaw, length / 2 - 1.0)
    b.add(BOX, (fx, fy, 1.7), (1.0, width / 2, 1.3), label, _pick(rng, _PAINTS), 0.4, yaw)
    bx, by = _offset(x, y, yaw, -length / 2 + cargo / 2)
    b.add(BOX, (bx, by, 2.05), (cargo / 2, width / 2 + 0.05, 1.45), label,
          _pick(rng, _FACADES[[1, 3]]), 0.55, yaw)
    return length


def person(b: PrimitiveBuilder, rng: np.random.Generator, x: float, y: float,
           label: int = PERSON) -> None:
    """A standing or walking person: body cylinder and head."""
    height, radius = rng.uniform(1.55, 1.9), rng.uniform(0.2, 0.27)
    body = height - 0.24
    b.add(CYLINDER, (x, y, body / 2), (radius, radius, body / 2), label, _pick(rng, _CLOTHES),
          0.3)
    b.add(ELLIPSOID, (x, y, height - 0.12), (0.11, 0.11, 0.12), label, _SKIN, 0.3)


def bicycle(b: PrimitiveBuilder, rng: np.random.Generator, x: float, y: float, yaw: float,
            label: int = BICYCLE) -> None:
    """A bicycle as a thin slab."""
    b.add(BOX, (x, y, 0.5), (0.85, 0.05, 0.45), label, _pick(rng, _PAINTS, 0.08), 0.35, yaw)


def bicyclist(b: PrimitiveBuilder, rng: np.random.Generator, x: float, y: float, yaw: float,
              label: int = BICYCLIST) -> None:
    """A rider on a bicycle; SemanticKITTI labels rider and bicycle alike."""
    bicycle(b, rng, x, y, yaw, label)
    b.add(CYLINDER, (x, y, 1.3), (0.22, 0.22, 0.4), label, _pick(rng, _CLOTHES), 0.3)
    b.add(ELLIPSOID, (x, y, 1.83), (0.11, 0.11, 0.12), label, _SKIN, 0.3)


def tree(b: PrimitiveBuilder, rng: np.random.Generator, x: float, y: float,
         max_crown: float = 2.5) -> None:
    """A trunk with an ellipsoidal crown whose bottom swallows the trunk's top."""
    trunk_h, trunk_r = rng.uniform(2.2, 3.5), rng.uniform(0.12, 0.25)
    crown_r, crown_h = rng.uniform(1.3, max_crown), rng.uniform(1.3, 2.6)
    b.add(CYLINDER, (x, y, trunk_h / 2), (trunk_r, trunk_r, trunk_h / 2), TRUNK,
          np.array([0.36, 0.26, 0.16]) + rng.normal(0, 0.03, 3), 0.37)
    green = np.array([0.20, 0.40, 0.12]) + rng.normal(0, 0.04, 3)
    b.add(ELLIPSOID, (x, y, trunk_h + 0.6 * crown_h), (crown_r, crown_r, crown_h), VEGETATION,
          np.clip(green, 0, 1), 0.41)
    # a lobe or two off the main crown: real crowns are not ellipsoids
    for _ in range(rng.integers(1, 3)):
        r = crown_r * rng.uniform(0.45, 0.7)
        angle = rng.uniform(0.0, 2.0 * np.pi)
        lx, ly = _offset(x, y, angle, min(crown_r * 0.6, max_crown - r))
        b.add(ELLIPSOID, (lx, ly, trunk_h + crown_h * rng.uniform(0.3, 1.0)),
              (r, r, r * rng.uniform(0.8, 1.2)), VEGETATION,
              np.clip(green + rng.normal(0, 0.03, 3), 0, 1), 0.41)


def bush(b: PrimitiveBuilder, rng: np.random.Generator, x: float, y: float,
         size: float = 1.0) -> None:
    """A shrub of one to three overlapping ellipsoids, about `size` metres high."""
    green = np.array([0.18, 0.36, 0.12]) + rng.normal(0, 0.04, 3)
    for _ in range(rng.integers(1, 4)):
        r = size * rng.uniform(0.4, 0.8)
        h = size * rng.uniform(0.35, 0.6)
        ox, oy = x + rng.normal(0, 0.4 * size), y + rng.normal(0, 0.4 * size)
        b.add(ELLIPSOID, (ox, oy, h * 0.8), (r, r, h), VEGETATION,
              np.clip(green + rng.normal(0, 0.03, 3), 0, 1), 0.41)


def streetlight(b: PrimitiveBuilder, rng: np.random.Generator, x: float, y: float,
                arm_yaw: float) -> None:
    """A lamp post with a horizontal arm pointing along `arm_yaw` (over the road)."""
    height = rng.uniform(6.0, 8.0)
    grey = np.array([0.45, 0.46, 0.47])
    b.add(CYLINDER, (x, y, height / 2), (0.09, 0.09, height / 2), POLE, grey, 0.2)
    ax, ay = _offset(x, y, arm_yaw, 0.8)
    b.add(BOX, (ax, ay, height - 0.1), (0.8, 0.05, 0.05), POLE, grey, 0.2, arm_yaw)


def sign(b: PrimitiveBuilder, rng: np.random.Generator, x: float, y: float,
         yaw: float) -> None:
    """A traffic sign: post (pole) and a panel facing along `yaw` (its retro-reflective face
    and its plain back average to SemanticKITTI's signs)."""
    b.add(CYLINDER, (x, y, 1.05), (0.04, 0.04, 1.05), POLE, np.array([0.5, 0.5, 0.5]), 0.2)
    b.add(BOX, (x, y, 2.4), (0.02, 0.32, 0.32), TRAFFIC_SIGN, _pick(rng, _SIGNS, 0.02), 0.45,
          yaw)


def building(b: PrimitiveBuilder, rng: np.random.Generator, x: float, y: float, yaw: float,
             length: float, depth: float, height: float) -> None:
    """A block building centred at (x, y); windows are a texture (see appearance)."""
    b.add(BOX, (x, y, height / 2), (length / 2, depth / 2, height / 2), BUILDING,
          _pick(rng, _FACADES), rng.uniform(0.38, 0.6), yaw)


def fence(b: PrimitiveBuilder, rng: np.random.Generator, x: float, y: float, yaw: float,
          length: float) -> None:
    """A thin fence panel run along `yaw`."""
    colour = np.array([0.50, 0.50, 0.48]) + rng.normal(0, 0.05, 3)
    b.add(BOX, (x, y, 0.6), (length / 2, 0.03, 0.6), FENCE, np.clip(colour, 0, 1), 0.36, yaw)


def hedge(b: PrimitiveBuilder, rng: np.random.Generator, x: float, y: float, yaw: float,
          length: float) -> None:
    """A hedge (vegetation) along `yaw`, centred at (x, y): sections of 1-3 m whose height
    and depth wander, as an untrimmed garden hedge does."""
    green = np.array([0.16, 0.33, 0.10]) + rng.normal(0, 0.03, 3)
    base_h = rng.uniform(0.9, 2.4)
    s = -length / 2
    while s < length / 2 - 0.3:
        piece = min(rng.uniform(1.0, 3.0), length / 2 - s)
        h = max(0.5, base_h + rng.normal(0, 0.15))
        sx, sy = _offset(x, y, yaw, s + piece / 2)
        depth = rng.uniform(0.5, 1.0)
        b.add(BOX, (sx, sy, h / 2), (piece / 2 + 0.1, depth / 2, h / 2), VEGETATION,
              np.clip(green + rng.normal(0, 0.02, 3), 0, 1), 0.41, yaw)
        s += piece
