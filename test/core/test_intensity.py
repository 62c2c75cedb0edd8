"""Intensity units: the reference a checkpoint records, the factor that maps a driver's
units onto it, and the check that tells when they still disagree; and the engine applying
them (the same labels for a 0..255 cloud as for its 0..1 twin)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tttkd_ros.core.adapt.engine import AdaptationEngine
from tttkd_ros.core.config import AdaptConfig, ModelConfig
from tttkd_ros.core.frame import Frame
from tttkd_ros.core.intensity import (
    IntensityReference,
    covering_range,
    out_of_range,
    scale_factor,
)
from tttkd_ros.core.model.segmentation import build_model

UNIT = IntensityReference(1.0, 0.9)  # trained on 0..1, 99th percentile 0.9
RNG = np.random.default_rng(0)


@pytest.mark.parametrize("value, expected", [(0.0, 1.0), (1.0, 1.0), (1.2, 255.0),
                                             (255.0, 255.0), (300.0, 65535.0),
                                             (70000.0, 70000.0)])
def test_covering_range_is_the_smallest_sensor_range_that_holds_the_value(value, expected):
    assert covering_range(value) == expected


def test_the_reference_is_read_off_the_training_intensities() -> None:
    ref = IntensityReference.of([np.linspace(0, 0.5, 101), np.array([1.0, np.nan])])
    assert ref.range == 1.0 and ref.p99 == pytest.approx(np.percentile(
        np.r_[np.linspace(0, 0.5, 101), 1.0], 99))
    assert IntensityReference.from_dict(ref.to_dict()) == ref
    assert IntensityReference.from_dict(None) == IntensityReference(1.0, None)  # old files


def test_auto_scale_follows_the_field_type_then_the_values() -> None:
    values = RNG.uniform(0, 200, 1000)
    assert scale_factor(0.0, UNIT, values, type_max=255.0) == pytest.approx(1 / 255)
    assert scale_factor(0.0, UNIT, values, type_max=65535.0) == pytest.approx(1 / 65535)
    assert scale_factor(0.0, UNIT, values, type_max=None) == pytest.approx(1 / 255)  # float
    assert scale_factor(0.0, UNIT, values / 255, type_max=None) == 1.0
    assert scale_factor(0.5, UNIT, values, type_max=255.0) == 0.5  # an explicit factor wins


def test_disagreement_is_flagged_both_ways_and_scenes_are_not() -> None:
    unit_cloud = RNG.uniform(0, 1, 1000)
    assert out_of_range(unit_cloud, UNIT) is None
    assert out_of_range(unit_cloud * 0.3, UNIT) is None  # a darker scene, same units
    assert out_of_range(unit_cloud * 255, UNIT) == pytest.approx(
        np.percentile(unit_cloud * 255, 99))  # 0..255 into a 0..1 model
    assert out_of_range(unit_cloud * 300 / 65535, UNIT) is not None  # 16-bit counts / 65535
    assert out_of_range(unit_cloud * 255, IntensityReference(255.0, None)) is None


def engine(**cfg) -> AdaptationEngine:
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="tiny", voxel_size=0.2), "cpu")
    return AdaptationEngine(model, AdaptConfig(mode="none", **cfg), None, "cpu", UNIT)


def test_the_engine_scales_a_driver_range_to_the_checkpoints() -> None:
    xyz = np.c_[RNG.uniform(2, 30, 3000), RNG.uniform(-8, 8, 3000), RNG.uniform(-2, 1, 3000)]
    counts = RNG.integers(0, 256, 3000)
    unit = Frame(np.c_[xyz, counts / 255.0].astype(np.float32))
    velodyne = Frame(np.c_[xyz, counts].astype(np.float32), intensity_max=255.0)
    expected, got = engine().process(unit), engine().process(velodyne)
    assert (got.labels == expected.labels).mean() > 0.99
    np.testing.assert_allclose(got.confidence, expected.confidence, atol=1e-4)
    assert "intensity_out_of_range" not in got.stats.events
    assert velodyne.points[:, 3].max() == 255.0  # the caller's array is left alone
    told = engine(intensity_scale=1.0)  # told the units are the model's
    assert "intensity_out_of_range" in told.process(velodyne).stats.events
    factor, p99 = told.intensity_mismatch  # the figures a warning quotes
    assert factor == 1.0 and p99 == pytest.approx(np.percentile(counts, 99), abs=1.0)
