"""The ground height field: its shape, the rays that find it, and what stands on it."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from tttkd_ros.data.layout import Town
from tttkd_ros.data.props import BUILDING, CAR, TRUNK
from tttkd_ros.data.raycast import GROUND, cast, ground_distance
from tttkd_ros.data.scene import PrimitiveBuilder
from tttkd_ros.data.terrain import GroundShape, ground_height
from tttkd_ros.data.town import PARKING, ROAD, SIDEWALK, TERRAIN, TownConfig

FLAT = GroundShape(grade_amplitude=0, camber=0, kerb=0, sidewalk_cross_slope=0,
                   terrain_drop=0, terrain_relief=0, pothole_prob=0)


class _Fan:
    """Rays from one origin towards points on a half-disc ahead, any window."""

    def __init__(self, origin: np.ndarray, n: int = 4000, reach: float = 60.0) -> None:
        rng = np.random.default_rng(0)
        r, a = rng.uniform(3.0, reach, n), rng.uniform(-1.4, 1.4, n)
        target = np.stack((origin[0] + r * np.cos(a), origin[1] + r * np.sin(a),
                           np.zeros(n)), axis=1)
        d = target - origin
        self.origin, self.dirs = origin, d / np.linalg.norm(d, axis=1, keepdims=True)

    def window(self, corners: np.ndarray) -> np.ndarray:
        return np.arange(len(self.dirs))


def test_flat_shape_is_the_plane() -> None:
    town = TownConfig(ground=FLAT)
    x = np.linspace(-50, 50, 101)
    assert np.all(ground_height(town, x, x * 0.3) == 0.0)
    fan = _Fan(np.array([10.0, -1.75, 1.73]))
    t = ground_distance(fan.origin, fan.dirs, 120.0, town)
    np.testing.assert_allclose(t, -1.73 / fan.dirs[:, 2])


def test_kerb_camber_and_terrain_levels() -> None:
    town = TownConfig(seed=3, parking_prob=0.0, ground=replace(GroundShape(), pothole_prob=0.0,
                                                               grade_amplitude=0.0))
    s = np.full(4, 100.0)
    d = np.array([0.5, -3.4, -3.6, -3.5 - town.sidewalk_width - 3.0])
    x, y, _ = town.to_world(s, d)
    crown, edge, walk, terrain = ground_height(town, x, y)
    labels = town.ground_labels(x, y)
    assert labels.tolist() == [ROAD, ROAD, SIDEWALK, TERRAIN]
    assert crown > edge  # the road falls away from its crown
    assert walk - edge > 0.1  # a kerb above the road edge
    assert abs(terrain - walk) < 0.5 and terrain != walk


def test_rays_land_on_the_height_field() -> None:
    town = TownConfig(seed=1, ground=replace(GroundShape(), pothole_prob=0.0))
    origin = np.array([250.0, 0.0, 0.0])
    origin[2] = ground_height(town, origin[:1], origin[1:2])[0] + 1.73
    fan = _Fan(origin)
    hits = cast(fan, PrimitiveBuilder().build(), 120.0, town)
    assert np.all(hits.prim == GROUND)
    p = hits.points(fan)
    gap = p[:, 2] - ground_height(town, p[:, 0], p[:, 1])
    # kerbs are steps: a ray that meets one may end on either side of it
    labels = town.ground_labels(p[:, 0], p[:, 1])
    smooth = np.isin(labels, [ROAD, PARKING, TERRAIN])
    assert np.percentile(np.abs(gap[smooth]), 99) < 0.02
    up = hits.normal[smooth, 2]
    assert np.all(up > 0.95) and np.any(up < 0.9999)  # upward, tilted by the slopes


def test_objects_stand_on_the_ground() -> None:
    config = TownConfig(seed=2)
    prims = Town(config).primitives(400.0, 60.0, t=0.0)
    bottom = prims.center[:, 2] - prims.half[:, 2]
    clearance = bottom - ground_height(config, prims.center[:, 0], prims.center[:, 1])
    trunks, buildings = prims.label == TRUNK, prims.label == BUILDING
    car_bodies = (prims.label == CAR) & (prims.half[:, 2] == 0.4)
    assert trunks.any() and buildings.any() and car_bodies.any()
    # what stands on the ground reaches into it; a car body keeps its 20 cm clearance
    np.testing.assert_allclose(clearance[trunks | buildings], -0.5, atol=1e-9)
    np.testing.assert_allclose(clearance[car_bodies], 0.2, atol=1e-9)
