"""Scene content as analytic primitives, stored structure-of-arrays.

Three primitive kinds cover a street: yawed boxes (buildings, vehicles, fences, signs),
vertical capped cylinders (poles, trunks, people) and vertical ellipsoids (tree crowns,
heads). The ground is not a primitive: it is a height field (terrain.py), classified by
`TownConfig`; objects are built standing on z = 0 and lifted onto it (layout.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BOX, CYLINDER, ELLIPSOID = 0, 1, 2

# Corner i of a bounding box has sign bit 0 -> x, 1 -> y, 2 -> z; an edge joins two corners
# that differ in exactly one bit.
CORNER_SIGNS = np.array([[(i & 1) * 2 - 1, (i >> 1 & 1) * 2 - 1, (i >> 2 & 1) * 2 - 1]
                         for i in range(8)], dtype=np.float64)
BOX_EDGES = np.array([(i, i | bit) for i in range(8) for bit in (1, 2, 4) if not i & bit])


@dataclass
class Primitives:
    """N primitives in world coordinates.

    kind: (N,) int8, one of BOX, CYLINDER, ELLIPSOID.  center: (N, 3).
    half: (N, 3) box half extents in the box frame; cylinder (radius, radius, half height);
    ellipsoid semi-axes (a, a, c).  yaw: (N,) rotation about z (boxes only).
    label: (N,) uint32 raw SemanticKITTI ids.  color: (N, 3) float32 RGB in 0..1.
    reflectivity: (N,) float32 LiDAR reflectivity in 0..1.
    """

    kind: np.ndarray
    center: np.ndarray
    half: np.ndarray
    yaw: np.ndarray
    label: np.ndarray
    color: np.ndarray
    reflectivity: np.ndarray

    def __len__(self) -> int:
        return int(self.kind.shape[0])

    @classmethod
    def concat(cls, parts: list[Primitives]) -> Primitives:
        if not parts:
            return PrimitiveBuilder().build()
        return cls(*[np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS])

    def select(self, index: np.ndarray) -> Primitives:
        """The primitives at `index` (int array or bool mask), in that order."""
        return Primitives(*[getattr(self, f)[index] for f in _FIELDS])

    def corners(self) -> np.ndarray:
        """(N, 8, 3) corners of each primitive's bounding box (yawed for boxes)."""
        local = CORNER_SIGNS[None] * self.half[:, None, :]
        yaw = np.where(self.kind == BOX, self.yaw, 0.0)[:, None]
        c, s = np.cos(yaw), np.sin(yaw)
        x = c * local[..., 0] - s * local[..., 1]
        y = s * local[..., 0] + c * local[..., 1]
        return np.stack((x, y, local[..., 2]), axis=-1) + self.center[:, None, :]

    def radius(self) -> np.ndarray:
        """(N,) radius of a sphere about `center` that contains each primitive."""
        return np.linalg.norm(self.half, axis=1)


_FIELDS = ("kind", "center", "half", "yaw", "label", "color", "reflectivity")


class PrimitiveBuilder:
    """Collects primitives one by one, then packs them into `Primitives`."""

    def __init__(self) -> None:
        self._rows: list[tuple] = []

    def add(self, kind: int, center: tuple[float, float, float],
            half: tuple[float, float, float], label: int, color: np.ndarray,
            reflectivity: float, yaw: float = 0.0) -> None:
        self._rows.append((kind, center, half, yaw, label, color, reflectivity))

    def build(self) -> Primitives:
        rows = self._rows
        return Primitives(
            kind=np.array([r[0] for r in rows], dtype=np.int8),
            center=np.array([r[1] for r in rows], dtype=np.float64).reshape(-1, 3),
            half=np.array([r[2] for r in rows], dtype=np.float64).reshape(-1, 3),
            yaw=np.array([r[3] for r in rows], dtype=np.float64),
            label=np.array([r[4] for r in rows], dtype=np.uint32),
            color=np.array([r[5] for r in rows], dtype=np.float32).reshape(-1, 3),
            reflectivity=np.array([r[6] for r in rows], dtype=np.float32),
        )
