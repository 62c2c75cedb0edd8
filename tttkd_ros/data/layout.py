"""Populating the town: static street furniture per road segment, and moving agents.

The road is cut into segments of `segment_length` metres; segment k's content depends only on
(town seed, k), so any stretch is generated on demand and cached. Moving agents (oncoming
cars, bicyclists, walkers) are spawned per segment and move at constant speed along the road;
their SemanticKITTI ids are the moving-* ones (252 car, 253 bicyclist, 254 person).
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from . import props
from .noise import rng_for
from .scene import ELLIPSOID, PrimitiveBuilder, Primitives
from .terrain import ground_height
from .town import TownConfig

MOVING_CAR, MOVING_BICYCLIST, MOVING_PERSON = 252, 253, 254
_MAX_SPEED = 14.0  # m/s, bounds how far a mover can have travelled from its spawn segment
_STATIC, _MOVERS = 1, 2
_FOOTING = 0.5  # metres below ground of everything that stands on it


class Town:
    """The primitives of a `TownConfig` near a place at a time, generated lazily."""

    def __init__(self, config: TownConfig, cache_size: int = 256) -> None:
        self.config = config
        self._cache: OrderedDict[tuple[int, int], object] = OrderedDict()
        self._cache_size = cache_size

    def primitives(self, x: float, radius: float, t: float) -> Primitives:
        """Everything whose position is within `radius` metres (in s) of world x at time t."""
        length = self.config.segment_length
        lo, hi = int(np.floor((x - radius) / length)), int(np.floor((x + radius) / length))
        parts = [self._cached(_STATIC, k) for k in range(lo, hi + 1)]
        reach = radius + _MAX_SPEED * abs(t)
        b = PrimitiveBuilder()
        for k in range(int(np.floor((x - reach) / length)),
                       int(np.floor((x + reach) / length)) + 1):
            for kind, s0, d, v, seed in self._cached(_MOVERS, k):
                s = s0 + v * t
                if abs(s - x) <= radius:
                    self._place_mover(b, kind, s, d, v, seed)
        return Primitives.concat([*parts, self._grounded(b.build())])

    def _cached(self, what: int, k: int):
        key = (what, k)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        value = self._static(k) if what == _STATIC else self._movers(k)
        self._cache[key] = value
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return value

    def _static(self, k: int) -> Primitives:
        b = PrimitiveBuilder()
        for left in (0, 1):
            rng = rng_for(self.config.seed, k, left, _STATIC)
            _Side(self.config, b, rng, k, left).populate()
        return self._grounded(b.build())

    def _grounded(self, prims: Primitives) -> Primitives:
        """The primitives (built on z = 0) standing on the ground under their centres; what
        touches z = 0 reaches _FOOTING metres into the ground, so that a slope under a
        building's footprint leaves no gap beneath it."""
        if len(prims) == 0:
            return prims
        standing = (prims.center[:, 2] - prims.half[:, 2] < 0.05) & (prims.kind != ELLIPSOID)
        prims.center[:, 2] += ground_height(self.config, prims.center[:, 0], prims.center[:, 1])
        prims.half[standing, 2] += _FOOTING / 2
        prims.center[standing, 2] -= _FOOTING / 2
        return prims

    def _movers(self, k: int) -> list[tuple[int, float, float, float, int]]:
        """(kind, spawn s, lateral d, speed along s, shape seed) of segment k's movers."""
        c = self.config
        rng = rng_for(c.seed, k, _MOVERS)
        s0 = k * c.segment_length
        movers = []
        for _ in range(rng.poisson(c.oncoming_cars)):
            lane = rng.integers(c.lanes)
            movers.append((MOVING_CAR, s0 + rng.uniform(0, c.segment_length),
                           (lane + 0.5) * c.lane_width, -rng.uniform(8.0, _MAX_SPEED)))
        for _ in range(rng.poisson(c.oncoming_cars / 2) if c.lanes > 1 else 0):
            lane = rng.integers(1, c.lanes)  # overtaking lanes only: the ego keeps lane 0
            movers.append((MOVING_CAR, s0 + rng.uniform(0, c.segment_length),
                           -(lane + 0.5) * c.lane_width, rng.uniform(6.0, _MAX_SPEED)))
        for _ in range(rng.poisson(c.bicyclists)):
            movers.append((MOVING_BICYCLIST, s0 + rng.uniform(0, c.segment_length),
                           -(c.half_road - 0.7), rng.uniform(4.0, 7.0)))
        for left in (0, 1):
            for _ in range(rng.poisson(c.walkers)):
                # d is measured outward from the kerb and resolved where the walker is.
                movers.append((MOVING_PERSON, s0 + rng.uniform(0, c.segment_length),
                               (1 if left else -1) * rng.uniform(0.7, c.sidewalk_width - 0.9),
                               rng.choice([-1.0, 1.0]) * rng.uniform(1.0, 1.6)))
        return [(*m, int(rng.integers(1 << 62))) for m in movers]

    def _place_mover(self, b: PrimitiveBuilder, kind: int, s: float, d: float, v: float,
                     seed: int) -> None:
        c = self.config
        rng = np.random.default_rng(seed)
        if kind == MOVING_PERSON:
            segment = int(np.floor(s / c.segment_length))
            d = np.sign(d) * (float(c.curb(segment, int(d > 0))[0]) + abs(d))
        x, y, heading = c.to_world(s, d)
        yaw = float(heading) + (np.pi if v < 0 else 0.0)
        if kind == MOVING_CAR:
            props.car(b, rng, float(x), float(y), yaw, MOVING_CAR)
        elif kind == MOVING_BICYCLIST:
            props.bicyclist(b, rng, float(x), float(y), yaw, MOVING_BICYCLIST)
        else:
            props.person(b, rng, float(x), float(y), MOVING_PERSON)


class _Side:
    """One side of one segment: frontage, street furniture, parked vehicles, pedestrians."""

    def __init__(self, config: TownConfig, b: PrimitiveBuilder, rng: np.random.Generator,
                 k: int, left: int) -> None:
        self.c, self.b, self.rng = config, b, rng
        self.sign = 1.0 if left else -1.0
        self.start = k * config.segment_length
        self.end = self.start + config.segment_length
        self.has_parking = bool(config.parking(k, left)[0])
        self.curb = float(config.curb(k, left)[0])
        self.walk_out = self.curb + config.sidewalk_width  # outer edge of the sidewalk

    def at(self, s: float, d_abs: float) -> tuple[float, float, float]:
        """World (x, y, road heading) at s, |d| on this side."""
        x, y, heading = self.c.to_world(s, self.sign * d_abs)
        return float(x), float(y), float(heading)

    def populate(self) -> None:
        self.frontage()
        self.furniture()
        if self.has_parking:
            self.parked_vehicles()
        self.pedestrians()

    def frontage(self) -> None:
        c, rng = self.c, self.rng
        s = self.start + rng.uniform(0.0, 3.0)
        while s < self.end - 6.0:
            if rng.random() < c.building_prob:
                length = min(rng.uniform(10.0, 28.0), self.end - s - 1.0)
                if length < 5.0:
                    break
                setback = rng.uniform(*c.setback)
                self.block(s + length / 2, self.walk_out + setback, length)
                self.garden(s, length, setback)
                s += length + rng.uniform(2.0, 8.0)
            else:
                length = min(rng.uniform(12.0, 25.0), self.end - s - 1.0)
                self.park(s, length)
                s += length + rng.uniform(1.0, 4.0)

    def garden(self, s: float, length: float, setback: float) -> None:
        """The front garden before a building: a hedge or a fence along the sidewalk, or
        neither, and shrubs."""
        c, rng = self.c, self.rng
        edge = rng.random()
        x, y, h = self.at(s + length / 2, self.walk_out + 0.5)
        if edge < c.hedge_prob:
            props.hedge(self.b, rng, x, y, h, length)
        elif edge < c.hedge_prob + 0.5 * c.fence_prob * (1.0 - c.hedge_prob):
            props.fence(self.b, rng, x, y, h, length)
        for _ in range(rng.poisson(c.garden_bushes * length * min(1.0, setback / 3.0))):
            x, y, _ = self.at(s + rng.uniform(0, length),
                              self.walk_out + rng.uniform(0.8, max(1.0, setback - 0.6)))
            props.bush(self.b, rng, x, y, size=rng.uniform(0.6, 1.6))

    def block(self, s_mid: float, d_front: float, length: float) -> None:
        c, rng = self.c, self.rng
        depth = rng.uniform(*c.building_depth)
        x, y, heading = self.at(s_mid, d_front + depth / 2)
        props.building(self.b, rng, x, y, heading, length, depth,
                       rng.uniform(*c.building_height))

    def park(self, s: float, length: float) -> None:
        c, rng, b = self.c, self.rng, self.b
        x, y, heading = self.at(s + length / 2, self.walk_out + 0.3)
        edge = rng.random()
        if edge < c.fence_prob:
            props.fence(b, rng, x, y, heading, length)
        elif edge < c.fence_prob + 0.3:
            props.hedge(b, rng, x, y, heading, length)
        for _ in range(rng.poisson(length / 6.0)):
            tx, ty, _ = self.at(s + rng.uniform(0, length), self.walk_out + rng.uniform(3, 18))
            props.tree(b, rng, tx, ty, max_crown=2.8)
        for _ in range(rng.poisson(length / 3.0)):
            bx, by, _ = self.at(s + rng.uniform(0, length), self.walk_out + rng.uniform(1, 12))
            props.bush(b, rng, bx, by, size=rng.uniform(0.6, 2.0))
        if rng.random() < 0.6:
            self.block(s + length / 2, self.walk_out + rng.uniform(22.0, 30.0), length)

    def furniture(self) -> None:
        c, rng, b = self.c, self.rng, self.b
        # Tree pits at the outer sidewalk edge; crowns stay clear of the driving lanes.
        s = self.start + rng.uniform(0.0, c.tree_spacing)
        while s < self.end:
            if rng.random() < 0.45:
                x, y, _ = self.at(s, self.walk_out - 0.5)
                props.tree(b, rng, x, y, max_crown=min(2.5, self.walk_out - 0.5 - c.half_road))
            s += c.tree_spacing * rng.uniform(0.7, 1.3)
        lamp_s = self.start + c.segment_length * (0.75 if self.sign > 0 else 0.25)
        x, y, heading = self.at(lamp_s, self.curb + 0.4)
        props.streetlight(b, rng, x, y, heading - self.sign * np.pi / 2)
        if rng.random() < c.sign_prob * (1.0 if self.sign < 0 else 0.5):
            x, y, heading = self.at(self.start + rng.uniform(5.0, 35.0), self.curb + 0.3)
            # Panels face the traffic of their side: right side faces -s, left side +s.
            props.sign(b, rng, x, y, heading + (np.pi if self.sign < 0 else 0.0))
        if rng.random() < c.parked_bicycle_prob:
            for i in range(rng.integers(1, 4)):
                x, y, heading = self.at(self.start + 20.0 + 0.8 * i, self.walk_out - 1.2)
                props.bicycle(b, rng, x, y, heading + np.pi / 2 + rng.normal(0, 0.1))

    def parked_vehicles(self) -> None:
        c, rng = self.c, self.rng
        d = c.half_road + c.parking_width / 2
        s = self.start + rng.uniform(0.0, 3.0)
        while s < self.end - 5.0:
            if rng.random() < c.parked_density:
                build = props.truck if rng.random() < c.truck_fraction else props.car
                # A dry run with the same shape seed gives the length; then build centred.
                seed = int(rng.integers(1 << 62))
                length = build(PrimitiveBuilder(), np.random.default_rng(seed), 0.0, 0.0, 0.0)
                if s + length > self.end:
                    break
                mx, my, mh = self.at(s + length / 2, d)
                build(self.b, np.random.default_rng(seed), mx, my,
                      mh + (np.pi if self.sign > 0 else 0.0))
                s += length + rng.uniform(0.8, 4.0)
            else:
                s += rng.uniform(3.0, 6.0)

    def pedestrians(self) -> None:
        c, rng = self.c, self.rng
        for _ in range(rng.poisson(c.pedestrians)):
            x, y, _ = self.at(self.start + rng.uniform(0, c.segment_length),
                              self.curb + rng.uniform(0.7, c.sidewalk_width - 0.9))
            props.person(self.b, rng, x, y)
