"""Ray/primitive intersection is exact, and window culling never loses a hit."""
from __future__ import annotations

import numpy as np
import pytest

from tttkd_ros.data.camera import CameraConfig, PinholeGrid
from tttkd_ros.data.layout import Town
from tttkd_ros.data.lidar import LidarConfig, SpinningGrid
from tttkd_ros.data.raycast import GROUND, SKY, cast, intersect, surface_normal
from tttkd_ros.data.scene import BOX, CYLINDER, ELLIPSOID, PrimitiveBuilder
from tttkd_ros.data.town import TownConfig


def _one(kind: int, center, half, yaw: float = 0.0):
    b = PrimitiveBuilder()
    b.add(kind, center, half, 50, np.zeros(3), 0.5, yaw)
    return b.build()


def _hit(prims, origin, direction) -> tuple[float, np.ndarray]:
    d = np.asarray(direction, float)[None] / np.linalg.norm(direction)
    o = np.asarray(origin, float)
    t = float(intersect(prims, 0, o, d)[0])
    if not np.isfinite(t):
        return t, np.full(3, np.nan)
    return t, surface_normal(prims, 0, o + t * d)[0]


def test_box_yawed() -> None:
    # A 4 x 2 x 2 box turned 90 degrees: its 4 m side now runs along y.
    box = _one(BOX, (10.0, 0.0, 1.0), (2.0, 1.0, 1.0), yaw=np.pi / 2)
    t, n = _hit(box, (0.0, 0.0, 1.0), (1, 0, 0))
    assert t == pytest.approx(9.0)
    np.testing.assert_allclose(n, [-1, 0, 0], atol=1e-12)
    t, _ = _hit(box, (0.0, 1.9, 1.0), (1, 0, 0))  # inside the turned footprint
    assert t == pytest.approx(9.0)
    assert _hit(box, (0.0, 2.1, 1.0), (1, 0, 0))[0] == np.inf
    assert _hit(box, (0.0, 0.0, 1.0), (-1, 0, 0))[0] == np.inf  # behind the origin


def test_cylinder_side_and_cap() -> None:
    pole = _one(CYLINDER, (5.0, 0.0, 1.0), (0.5, 0.5, 1.0))
    t, n = _hit(pole, (0.0, 0.0, 1.0), (1, 0, 0))
    assert t == pytest.approx(4.5)
    np.testing.assert_allclose(n, [-1, 0, 0], atol=1e-12)
    t, n = _hit(pole, (5.0, 0.2, 10.0), (0, 0, -1))  # from above: the top cap
    assert t == pytest.approx(8.0)
    np.testing.assert_allclose(n, [0, 0, 1], atol=1e-12)
    assert _hit(pole, (0.0, 0.0, 2.5), (1, 0, 0))[0] == np.inf  # passes over it


def test_ellipsoid() -> None:
    crown = _one(ELLIPSOID, (0.0, 0.0, 5.0), (2.0, 2.0, 1.0))
    t, n = _hit(crown, (0.0, 0.0, 0.0), (0, 0, 1))
    assert t == pytest.approx(4.0)
    np.testing.assert_allclose(n, [0, 0, -1], atol=1e-12)
    t, _ = _hit(crown, (-10.0, 0.0, 5.0), (1, 0, 0))
    assert t == pytest.approx(8.0)


class _AllRays:
    """A grid that offers every ray to every primitive: brute force."""

    def __init__(self, grid) -> None:
        self.origin, self.dirs = grid.origin, grid.dirs

    def window(self, corners: np.ndarray) -> np.ndarray:
        return np.arange(len(self.dirs))


@pytest.mark.parametrize("sensor", ["lidar", "camera"])
def test_window_culling_matches_brute_force(sensor: str) -> None:
    town = TownConfig(seed=1)
    pose = np.eye(4)
    x, y, heading = town.to_world(220.0, -1.75)
    pose[:2, :2] = [[np.cos(heading), -np.sin(heading)], [np.sin(heading), np.cos(heading)]]
    pose[:3, 3] = (x, y, 1.73)
    prims = Town(town).primitives(220.0, 60.0, t=0.0)
    if sensor == "lidar":
        grid = SpinningGrid(LidarConfig(beams=24, azimuth_res_deg=1.5), pose)
    else:
        grid = PinholeGrid(CameraConfig(D=(-0.2, 0.05, 0.0, 0.0, 0.0)).scaled(0.15), pose)
    fast, slow = cast(grid, prims, 60.0), cast(_AllRays(grid), prims, 60.0)
    np.testing.assert_array_equal(fast.prim, slow.prim)
    np.testing.assert_allclose(fast.t, slow.t)
    assert (fast.prim >= 0).mean() > 0.2
    assert (fast.prim == GROUND).any() and (fast.prim == SKY).any()
