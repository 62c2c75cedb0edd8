"""The safety guards on their own: grid subsampling, the loss-spike and collapse detectors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tttkd_ros.core.adapt.safety import (
    MIN_HISTORY,
    CollapseDetector,
    LossSpikeDetector,
    dominant_share,
    grid_subsample,
)


def check_subsample(xyz: torch.Tensor, max_points: int) -> tuple[torch.Tensor, torch.Tensor]:
    keep, owner = grid_subsample(xyz, max_points, 0.1)
    n = len(xyz)
    assert len(keep) <= max_points and owner.shape == (n,)
    assert len(torch.unique(keep)) == len(keep)
    assert torch.equal(owner[keep], torch.arange(len(keep)))  # a representative owns itself
    for row in range(len(keep)):  # and is the first point of its cell
        assert int(keep[row]) == int(torch.nonzero(owner == row)[0])
    return keep, owner


def test_small_clouds_are_kept_whole() -> None:
    xyz = torch.rand(50, 3)
    keep, owner = grid_subsample(xyz, 50, 0.1)
    assert torch.equal(keep, torch.arange(50)) and torch.equal(owner, torch.arange(50))


def test_subsampling_is_even_over_space_and_deterministic() -> None:
    gen = torch.Generator().manual_seed(0)
    cluster = torch.rand(2000, 3, generator=gen) * 0.05  # one dense blob
    lonely = torch.tensor([[100.0, 0, 0], [0, 100, 0], [0, 0, 100], [-100, 0, 0]])
    xyz = torch.cat([cluster, lonely])
    keep, owner = check_subsample(xyz, 10)
    assert set(range(2000, 2004)) <= set(keep.tolist())  # every isolated point survives
    assert len(torch.unique(owner[:2000])) <= 10 - 4
    again = grid_subsample(xyz, 10, 0.1)
    assert torch.equal(again[0], keep) and torch.equal(again[1], owner)


@pytest.mark.parametrize("max_points", [1, 7, 300])
def test_any_cap_is_met_on_a_random_cloud(max_points: int) -> None:
    xyz = torch.from_numpy(np.random.default_rng(max_points).normal(0, 20, (3000, 3)))
    check_subsample(xyz.float(), max_points)


def test_extreme_finite_coordinates_do_not_overflow() -> None:
    xyz = torch.tensor([[0.0, 0, 0], [1e30, -3e38, 3e38], [1.0, 1, 1], [2.0, 2, 2]])
    keep, _ = check_subsample(xyz, 2)
    assert len(keep) == 2


def flat_history(detector: LossSpikeDetector, values: list[float], name: str = "kd") -> None:
    for v in values:
        assert detector.check({name: v}) is None


def test_no_judgement_before_enough_history() -> None:
    d = LossSpikeDetector(factor=6.0, min_delta=0.1, window=32, patience=3)
    flat_history(d, [0.5] * (MIN_HISTORY - 1))
    assert d.check({"kd": 100.0}) is None  # too little history to call it a spike


def test_a_spike_is_named_and_not_recorded() -> None:
    d = LossSpikeDetector(factor=6.0, min_delta=0.1, window=32, patience=3)
    rng = np.random.default_rng(0)
    flat_history(d, list(0.5 + 0.01 * rng.standard_normal(20)))
    flat_history(d, [-2.0] * 20, name="ocl")
    assert d.check({"kd": 0.55, "ocl": -1.98}) is None  # ordinary noise
    length = len(d.history["kd"])
    assert d.check({"ocl": -1.99, "kd": 3.0}) == "kd"
    assert len(d.history["kd"]) == length
    assert d.check({"ocl": -1.0}) == "ocl"
    assert d.check({"entropy": 9.0}) is None  # a part without history is not judged


def test_the_noise_floor_and_the_spread_both_set_the_threshold() -> None:
    d = LossSpikeDetector(factor=6.0, min_delta=0.25, window=32, patience=3)
    flat_history(d, [1.0] * 10)  # no spread at all: only min_delta counts
    assert d.check({"kd": 1.2}) is None
    assert d.check({"kd": 1.3}) == "kd"
    noisy = LossSpikeDetector(factor=6.0, min_delta=0.0, window=32, patience=3)
    flat_history(noisy, [1.0, 1.05, 1.1, 1.15, 1.2] * 3)  # median 1.1, spread 1.4826 * 0.05
    assert noisy.check({"kd": 1.5}) is None
    assert noisy.check({"kd": 1.6}) == "kd"


def test_a_lasting_level_is_accepted_after_patience() -> None:
    d = LossSpikeDetector(factor=6.0, min_delta=0.1, window=32, patience=3)
    flat_history(d, [0.2] * 10)
    assert d.check({"kd": 1.0}) == "kd"
    assert d.check({"kd": 0.2}) is None  # a normal value breaks the run
    assert [d.check({"kd": 1.0}) for _ in range(3)] == ["kd", "kd", None]
    assert list(d.history["kd"]) == [1.0]  # the history restarted from the new level


def test_unrecorded_checks_and_the_off_switch() -> None:
    d = LossSpikeDetector(factor=6.0, min_delta=0.1, window=32, patience=3)
    for _ in range(20):
        assert d.check({"kd": 0.5}, record=False) is None
    assert d.history == {}
    off = LossSpikeDetector(factor=0.0, min_delta=0.1, window=32, patience=3)
    flat_history(off, [0.5] * 20 + [1e9])


def test_window_limits_the_memory() -> None:
    d = LossSpikeDetector(factor=6.0, min_delta=0.1, window=4, patience=3)
    flat_history(d, [5.0] * 10 + [0.1] * 4)  # the old high level is forgotten
    assert d.check({"kd": 1.0}) == "kd"


def test_collapse_needs_a_jump_held_for_several_frames() -> None:
    c = CollapseDetector(jump=0.3, window=20, frames=3)
    for share in [0.4, 0.42, 0.38] * 3:
        assert not c.update(share)
    assert not c.update(0.95) and not c.update(0.95)
    assert not c.update(0.45)  # back to normal: the run starts over
    assert [c.update(0.95) for _ in range(3)] == [False, False, True]
    c.clear()
    assert not c.update(0.95)  # no history after a clear


def test_collapse_detector_ignores_small_changes_and_can_be_off() -> None:
    c = CollapseDetector(jump=0.3, window=20, frames=1)
    for _ in range(10):
        assert not c.update(0.5)
    assert not c.update(0.79) and c.update(0.8)
    off = CollapseDetector(jump=0.0, window=20, frames=1)
    assert not any(off.update(s) for s in [0.1] * 10 + [1.0])


def test_dominant_share() -> None:
    assert dominant_share(torch.tensor([2, 2, 1, 2]), 19) == 0.75
    assert dominant_share(torch.zeros(0, dtype=torch.long), 19) == 0.0
