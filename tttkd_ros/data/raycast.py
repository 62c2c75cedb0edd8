"""Vectorised ray casting of one sensor's rays against the ground plane and the primitives.

All rays of a sensor start at one origin, so each primitive is tested only against the rays
of its screen-space window (the sensor grid tells which rays can possibly hit the
primitive's bounding box), nearest primitives first, and a primitive whose window is already
entirely covered by nearer hits is skipped. The cost is then close to that of rasterising.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from .scene import BOX, CYLINDER, Primitives
from .terrain import ground_height, ground_normal

if TYPE_CHECKING:
    from .town import TownConfig

GROUND, SKY = -1, -2  # values of Hits.prim that are not a primitive index
_EPS = 1e-6
_GROUND_ITERATIONS = 6


class RayGrid(Protocol):
    """A sensor's rays: a single world origin and unit world directions."""

    origin: np.ndarray  # (3,)
    dirs: np.ndarray  # (R, 3)

    def window(self, corners: np.ndarray) -> np.ndarray:
        """Flat indices of every ray that may hit the convex hull of corners (8, 3)."""


@dataclass
class Hits:
    """Nearest hit per ray. t: (R,) distance (inf = none); normal: (R, 3) outward unit world
    normal (zero where nothing was hit); prim: (R,) primitive index, GROUND or SKY."""

    t: np.ndarray
    normal: np.ndarray
    prim: np.ndarray

    def points(self, grid: RayGrid) -> np.ndarray:
        """(R, 3) world hit points (NaN rows where nothing was hit)."""
        finite = np.isfinite(self.t)
        points = grid.origin + np.where(finite, self.t, 0.0)[:, None] * grid.dirs
        points[~finite] = np.nan
        return points


def cast(grid: RayGrid, prims: Primitives, max_t: float, town: TownConfig | None = None
         ) -> Hits:
    """Intersect every ray of `grid` with the ground (the town's height field, or z = 0
    without a town; at any distance: it is analytic and reaches the horizon) and with the
    primitives closer than max_t."""
    o, dirs = grid.origin, grid.dirs
    n_rays = dirs.shape[0]
    t = np.full(n_rays, np.inf)
    prim = np.full(n_rays, SKY, dtype=np.int32)
    normal = np.zeros((n_rays, 3), dtype=np.float32)
    t_ground = ground_distance(o, dirs, max_t, town)
    ground = np.isfinite(t_ground)
    t[ground], prim[ground] = t_ground[ground], GROUND
    if town is None:
        normal[ground, 2] = 1.0
    else:
        hit = o + t_ground[ground, None] * dirs[ground]
        normal[ground] = ground_normal(town, hit[:, 0], hit[:, 1])

    dist = np.linalg.norm(prims.center - o, axis=1)
    near = dist - prims.radius()
    corners = prims.corners()
    won: dict[int, np.ndarray] = {}  # primitive -> rays it hit first (some lost later)
    for i in np.argsort(near):
        if near[i] > max_t:
            break
        idx = grid.window(corners[i])
        if idx.size == 0 or t[idx].max() < near[i]:
            continue  # off-sensor, or hidden behind nearer hits
        t_hit = intersect(prims, i, o, dirs[idx])
        closer = t_hit < np.minimum(t[idx], max_t)
        if closer.any():
            sel = idx[closer]
            t[sel], prim[sel] = t_hit[closer], i
            won[i] = sel
    # Normals only for the rays each primitive finally kept.
    for i, sel in won.items():
        sel = sel[prim[sel] == i]
        if sel.size:
            normal[sel] = surface_normal(prims, i, o + t[sel, None] * dirs[sel])
    return Hits(t=t, normal=normal, prim=prim)


def ground_distance(o: np.ndarray, dirs: np.ndarray, max_t: float,
                    town: TownConfig | None) -> np.ndarray:
    """(R,) distance along each downward ray to the ground, inf for the others.

    The height field is found by fixed point from the plane at the height below the origin:
    t <- (h(o + t d) - o_z) / d_z converges while the ground's slope relative to the ray is
    below the ray's own (gentle terrain, rays within ~100 m); beyond `max_t` (nothing is
    kept there but the camera's far ground) the plane's estimate stands."""
    down = dirs[:, 2] < -_EPS
    dz = np.where(down, dirs[:, 2], -1.0)
    base = 0.0 if town is None else float(ground_height(town, o[:1], o[1:2])[0])
    t = np.where(down, (base - o[2]) / dz, np.inf)
    if town is None or town.ground.flat():
        return t
    near = np.nonzero(down & (t < 2.0 * max_t))[0]
    tn, dn = t[near], dirs[near]
    for _ in range(_GROUND_ITERATIONS):
        p = o + tn[:, None] * dn
        tn = np.maximum((ground_height(town, p[:, 0], p[:, 1]) - o[2]) / dn[:, 2], _EPS)
    t[near] = tn
    return t


def intersect(prims: Primitives, i: int, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Rays origin + t dirs (n, 3) against primitive i: (n,) distances, inf where missed."""
    rel = origin - prims.center[i]
    half = prims.half[i]
    kind = prims.kind[i]
    if kind == BOX:
        return _box(rel, dirs, half, float(prims.yaw[i]))
    if kind == CYLINDER:
        return _cylinder(rel, dirs, float(half[0]), float(half[2]))
    return _ellipsoid(rel, dirs, half)


def surface_normal(prims: Primitives, i: int, points: np.ndarray) -> np.ndarray:
    """Outward unit normals (n, 3) of primitive i at world points (n, 3) on its surface."""
    p = points - prims.center[i]
    half = prims.half[i]
    kind = prims.kind[i]
    if kind == BOX:
        c, s = np.cos(prims.yaw[i]), np.sin(prims.yaw[i])
        rot = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])  # world -> box frame
        local = (p @ rot.T) / half
        axis = np.abs(local).argmax(axis=1)  # the face the point lies on
        n_local = np.zeros_like(local)
        n_local[np.arange(len(p)), axis] = np.sign(local[np.arange(len(p)), axis])
        return n_local @ rot
    if kind == CYLINDER:
        normal = np.zeros_like(p)
        normal[:, :2] = p[:, :2] / half[0]
        cap = np.abs(p[:, 2]) >= half[2] - 1e-6
        normal[cap] = 0.0
        normal[cap, 2] = np.sign(p[cap, 2])
        return normal
    grad = p / half**2
    return grad / np.maximum(np.linalg.norm(grad, axis=1, keepdims=True), 1e-12)


def _box(rel: np.ndarray, dirs: np.ndarray, half: np.ndarray, yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    # Ray origin and directions in the box frame (yaw only), one axis at a time: per-axis
    # 1D arrays are much faster than reductions over a length-3 axis.
    o_local = (c * rel[0] + s * rel[1], -s * rel[0] + c * rel[1], rel[2])
    d_local = (c * dirs[:, 0] + s * dirs[:, 1], -s * dirs[:, 0] + c * dirs[:, 1], dirs[:, 2])
    t_enter, t_exit = None, None
    for o, d, h in zip(o_local, d_local, half):
        # Slab method; a zero direction component becomes a tiny one so 1/d stays finite.
        inv = 1.0 / np.where(np.abs(d) < 1e-12, 1e-12, d)
        ta, tb = (-h - o) * inv, (h - o) * inv
        lo, hi = np.minimum(ta, tb), np.maximum(ta, tb)
        t_enter = lo if t_enter is None else np.maximum(t_enter, lo)
        t_exit = hi if t_exit is None else np.minimum(t_exit, hi)
    return np.where((t_enter <= t_exit) & (t_enter > _EPS), t_enter, np.inf)


def _cylinder(rel: np.ndarray, dirs: np.ndarray, radius: float, half_h: float) -> np.ndarray:
    dx, dy, dz = dirs[:, 0], dirs[:, 1], dirs[:, 2]
    a = dx * dx + dy * dy
    b = 2.0 * (rel[0] * dx + rel[1] * dy)
    c = rel[0] ** 2 + rel[1] ** 2 - radius**2
    disc = b * b - 4.0 * a * c
    a_safe = np.where(a > 1e-12, a, 1.0)
    t_side = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2.0 * a_safe)
    side = (disc >= 0) & (a > 1e-12) & (t_side > _EPS) & (np.abs(rel[2] + t_side * dz) <= half_h)
    t = np.where(side, t_side, np.inf)
    if abs(rel[2]) > half_h:  # the origin is above or below the cylinder: its near cap
        dz_safe = np.where(np.abs(dz) > 1e-12, dz, 1e-12)
        t_cap = (np.sign(rel[2]) * half_h - rel[2]) / dz_safe
        cx, cy = rel[0] + t_cap * dx, rel[1] + t_cap * dy
        cap = (t_cap > _EPS) & (cx * cx + cy * cy <= radius**2)
        t = np.where(cap, np.minimum(t, t_cap), t)
    return t


def _ellipsoid(rel: np.ndarray, dirs: np.ndarray, semi: np.ndarray) -> np.ndarray:
    o_s = rel / semi
    d_s = dirs / semi
    a = np.einsum("ij,ij->i", d_s, d_s)
    b = 2.0 * d_s @ o_s
    c = float(o_s @ o_s) - 1.0
    disc = b * b - 4.0 * a * c
    t_hit = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2.0 * a)
    return np.where((disc >= 0) & (t_hit > _EPS), t_hit, np.inf)
