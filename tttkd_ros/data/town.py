"""The town's street plan: one gently curving road and the ground classes either side.

Road coordinates: s runs along the road (equal to world x), d is the lateral offset from the
centreline, positive to the left of the driving direction +s. The centreline is
y = A sin(2 pi x / wavelength + phase); its slope stays below ~0.1, so the first-order
conversions below are accurate to centimetres, far below anything a class boundary needs.
Vehicles drive on the right.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .noise import hash01
from .terrain import GroundShape

ROAD, LANE_MARKING, PARKING, SIDEWALK, TERRAIN = 40, 60, 44, 48, 72

_SALT_PHASE, _SALT_PARKING, _SALT_CROSSWALK = 11, 12, 13


@dataclass(frozen=True)
class TownConfig:
    """Layout parameters. `seed` is the layout seed, separate from a drive's seed."""

    seed: int = 0
    lanes: int = 1  # per direction
    lane_width: float = 3.5
    parking_width: float = 2.5
    sidewalk_width: float = 3.0
    parking_prob: float = 0.3  # per segment and side
    crosswalk_prob: float = 0.2  # per segment
    curve_amplitude: float = 6.0
    curve_wavelength: float = 400.0
    segment_length: float = 40.0
    building_prob: float = 0.8  # a frontage slot holds a building, else a small park
    building_height: tuple[float, float] = (6.0, 22.0)
    building_depth: tuple[float, float] = (8.0, 16.0)
    setback: tuple[float, float] = (2.0, 7.0)  # front garden between sidewalk and building
    hedge_prob: float = 0.75  # a front garden is hedged along the sidewalk (else maybe fenced)
    garden_bushes: float = 0.6  # shrubs per metre of front garden
    tree_spacing: float = 9.0
    fence_prob: float = 0.4  # a park slot is fenced (else maybe hedged)
    parked_density: float = 0.35  # chance that a parking slot holds a vehicle
    truck_fraction: float = 0.05
    parked_bicycle_prob: float = 0.3  # per segment and side
    sign_prob: float = 0.5  # per segment
    pedestrians: float = 1.5  # standing, per segment and side (Poisson mean)
    walkers: float = 0.8  # walking, per segment and side
    oncoming_cars: float = 0.4  # per segment
    bicyclists: float = 0.3  # per segment
    ground: GroundShape = field(default_factory=GroundShape)
    sun_azimuth_deg: float = 135.0
    sun_elevation_deg: float = 40.0

    @property
    def half_road(self) -> float:
        return self.lanes * self.lane_width

    @property
    def phase(self) -> float:
        return float(hash01(self.seed, _SALT_PHASE)[0]) * 2.0 * np.pi

    def centreline(self, s: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """(y, heading) of the centreline at s; heading in radians from +x."""
        k = 2.0 * np.pi / self.curve_wavelength
        arg = k * np.asarray(s, dtype=np.float64) + self.phase
        y = self.curve_amplitude * np.sin(arg)
        heading = np.arctan(self.curve_amplitude * k * np.cos(arg))
        return y, heading

    def to_road(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World (x, y) -> road (s, d)."""
        yc, heading = self.centreline(x)
        return np.asarray(x, dtype=np.float64), (y - yc) * np.cos(heading)

    def to_world(self, s: np.ndarray | float, d: np.ndarray | float) -> tuple[np.ndarray, ...]:
        """Road (s, d) -> world (x, y, heading at s)."""
        yc, heading = self.centreline(s)
        return s - d * np.sin(heading), yc + d * np.cos(heading), heading

    def parking(self, segment: np.ndarray, left: np.ndarray) -> np.ndarray:
        """Whether a segment side has a parking lane between road and sidewalk."""
        return hash01(self.seed, segment, left, _SALT_PARKING) < self.parking_prob

    def curb(self, segment: np.ndarray, left: np.ndarray) -> np.ndarray:
        """|d| of the kerb (road + parking lane) for a segment side."""
        return self.half_road + self.parking(segment, left) * self.parking_width

    def ground_labels(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Raw SemanticKITTI ids of the ground plane at world (x, y): (N,) uint32."""
        s, d = self.to_road(x, y)
        ad = np.abs(d)
        segment = np.floor(s / self.segment_length).astype(np.int64)
        left = (d > 0).astype(np.int64)
        curb = self.curb(segment, left)
        labels = np.full(ad.shape, TERRAIN, dtype=np.uint32)
        labels[ad < curb + self.sidewalk_width] = SIDEWALK
        labels[ad < curb] = PARKING
        labels[ad < self.half_road] = ROAD
        labels[self._markings(s, d, segment)] = LANE_MARKING
        return labels

    def _markings(self, s: np.ndarray, d: np.ndarray, segment: np.ndarray) -> np.ndarray:
        ad = np.abs(d)
        half = self.half_road
        dashed = np.mod(s, 9.0) < 3.0
        mark = (ad > half - 0.35) & (ad < half - 0.2)  # edge lines
        if self.lanes == 1:
            mark |= (ad < 0.075) & dashed
        else:
            mark |= (ad > 0.05) & (ad < 0.2)  # double solid centre line
            for k in range(1, self.lanes):
                mark |= (np.abs(ad - k * self.lane_width) < 0.075) & dashed
        local = s - segment * self.segment_length
        crosswalk = hash01(self.seed, segment, _SALT_CROSSWALK) < self.crosswalk_prob
        mark |= (crosswalk & (local > 3.0) & (local < 7.0) & (ad < half - 0.4)
                 & (np.mod(d, 1.2) < 0.6))
        return mark
