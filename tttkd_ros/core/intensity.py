"""Intensity units: what the checkpoint was trained on, and the factor that brings a sensor's
intensities to it.

Drivers publish intensity in their own units: KITTI and this package's synthetic world
0..1, Velodyne and nuScenes 0..255, Ouster 16-bit counts. A model trained on 0..1 that gets
0..255 sees every surface as a retro-reflector. The checkpoint records the range its training
intensities lay in and their 99th percentile; `scale_factor` maps an input onto that range,
and `out_of_range` tells when the scaled input still disagrees with it.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

# the intensity ranges drivers publish: reflectance 0..1, 8-bit, 16-bit
SENSOR_RANGES = (1.0, 255.0, 65535.0)
# the scaled input's 99th percentile may differ from the training one by this factor either
# way before it counts as a unit mismatch (scenes differ; units differ by 255x or more)
TOLERANCE = 8.0


def covering_range(value: float) -> float:
    """The smallest of SENSOR_RANGES that holds `value` (the value itself above them all)."""
    return next((r for r in SENSOR_RANGES if value <= r * 1.0001), float(value))


@dataclass(frozen=True)
class IntensityReference:
    """The intensities a checkpoint was trained on: the sensor range they lay in and their
    99th percentile (None for checkpoints from before it was recorded: 0..1 assumed)."""

    range: float = 1.0
    p99: float | None = None

    @classmethod
    def of(cls, intensities: Iterable[np.ndarray]) -> IntensityReference:
        """From the training frames' intensity columns."""
        values = np.concatenate([np.asarray(v, np.float32).ravel() for v in intensities])
        values = values[np.isfinite(values)]
        if len(values) == 0:
            return cls()
        return cls(covering_range(float(values.max())), float(np.percentile(values, 99)))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> IntensityReference:
        return cls(**data) if data else cls()


def scale_factor(setting: float, reference: IntensityReference, intensity: np.ndarray,
                 type_max: float | None) -> float:
    """The factor for a cloud's intensities. setting > 0: that factor. 0 (auto): the
    reference range over the input's range, which is the field type's full range for an
    integer field (`type_max`), else the smallest sensor range that holds the cloud's
    largest value."""
    if setting > 0:
        return float(setting)
    if type_max is not None:
        source = float(type_max)
    else:
        finite = intensity[np.isfinite(intensity)]
        source = covering_range(float(finite.max())) if len(finite) else reference.range
    return reference.range / source


def out_of_range(scaled: np.ndarray, reference: IntensityReference) -> float | None:
    """The scaled intensities' 99th percentile when it disagrees with the reference (above
    its range, or TOLERANCE times off its p99), else None."""
    finite = scaled[np.isfinite(scaled)]
    if len(finite) == 0:
        return None
    p99 = float(np.percentile(finite, 99))
    high = p99 > reference.range * 1.5 or (reference.p99 is not None
                                            and p99 > reference.p99 * TOLERANCE)
    low = reference.p99 is not None and reference.p99 > 0 and p99 < reference.p99 / TOLERANCE
    return p99 if high or low else None
