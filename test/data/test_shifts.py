"""Each domain-shift preset changes what it says it changes, and only that."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tttkd_ros.core.geometry import project_view
from tttkd_ros.data.drive import SynthFrame, generate_drive
from tttkd_ros.data.shifts import SHIFTS, apply_overrides, get_shift, list_shifts

SMALL = {"image_scale": 0.25, "lidar_beams": 32, "lidar_azimuth_res_deg": 1.0}
LIDAR_SHIFTS = ("beams32", "beams16", "range_noise", "dropout", "intensity", "fog", "rain",
                "town")
CAMERA_SHIFTS = ("dark", "bright", "blur")


def frame(shift: str, seed: int = 0, **overrides) -> SynthFrame:
    return next(generate_drive(shift, frames=1, seed=seed, **{**SMALL, **overrides}))


@pytest.fixture(scope="module")
def clean() -> SynthFrame:
    return frame("clean")


def _ranges(f: SynthFrame) -> np.ndarray:
    return np.linalg.norm(f.points[:, :3], axis=1)


def test_list_shifts() -> None:
    names = list_shifts()
    assert names[0] == "clean"
    assert set(LIDAR_SHIFTS + CAMERA_SHIFTS) <= set(names)
    assert len(names) == len(set(names))
    for name in names:
        assert SHIFTS[name][0]  # every preset says what it changes


def test_lidar_shifts_change_the_lidar_side() -> None:
    base = get_shift("clean")
    for name in LIDAR_SHIFTS:
        shifted = get_shift(name)
        assert (shifted.lidar, shifted.weather, shifted.town) != (
            base.lidar, base.weather, base.town), name


def test_fewer_beams(clean: SynthFrame) -> None:
    # The presets' beam counts (SMALL overrides only the azimuth resolution and image).
    counts = {}
    for name in ("clean", "beams32", "beams16"):
        f = frame(name, lidar_beams=get_shift(name).lidar.beams)
        elevation = np.degrees(np.arcsin(f.points[:, 2] / _ranges(f)))
        counts[name] = (len(np.unique(np.round(elevation, 1))), len(f.points))
    assert counts["clean"][0] > counts["beams32"][0] > counts["beams16"][0]
    assert counts["clean"][1] > counts["beams32"][1] > counts["beams16"][1]


def test_range_noise() -> None:
    # Same seed, same rays and draws: only the noise scale differs (0.10 vs 0.02 m). No
    # minimum range, so that noise cannot move a return across the gate.
    clean, noisy = frame("clean", lidar_min_range=0.0), frame("range_noise", lidar_min_range=0.0)
    assert len(noisy.points) == len(clean.points)
    diff = _ranges(noisy) - _ranges(clean)
    assert 0.05 < diff.std() < 0.12
    np.testing.assert_array_equal(noisy.labels, clean.labels)


def test_dropout(clean: SynthFrame) -> None:
    kept = len(frame("dropout").points) / len(clean.points)
    assert 0.5 < kept < 0.7  # 40 % dropped


def test_intensity_calibration(clean: SynthFrame) -> None:
    shifted = frame("intensity")
    assert len(shifted.points) == len(clean.points)
    ratio = np.median(shifted.points[:, 3]) / np.median(clean.points[:, 3])
    assert not 0.9 < ratio < 1.1
    np.testing.assert_array_equal(shifted.points[:, :3], clean.points[:, :3])


def test_fog_adds_unlabelled_near_returns(clean: SynthFrame) -> None:
    fog = frame("fog")
    outlier = fog.labels == 1
    assert 1 not in clean.labels
    assert outlier.mean() > 0.03
    assert np.median(_ranges(fog)[outlier]) < 12.0
    # Extinction thins out the far returns.
    assert (_ranges(fog) > 40).sum() < 0.5 * (_ranges(clean) > 40).sum()


def test_rain_is_milder_than_fog() -> None:
    rain, fog = frame("rain"), frame("fog")
    assert 0 < (rain.labels == 1).mean() < (fog.labels == 1).mean()


def test_town_is_another_layout(clean: SynthFrame) -> None:
    town = frame("town")
    assert get_shift("town").town.seed != get_shift("clean").town.seed
    # Two lanes each way: much more road around the ego vehicle than in the clean town.
    def road_width(f: SynthFrame) -> float:
        near = (np.abs(f.points[:, 0]) < 5) & np.isin(f.labels, [40, 60])
        return float(np.ptp(f.points[near, 1]))

    assert road_width(town) > road_width(clean) + 3.0


def test_camera_shifts_leave_the_lidar_alone(clean: SynthFrame) -> None:
    images = {}
    for name in CAMERA_SHIFTS:
        f = frame(name)
        np.testing.assert_array_equal(f.points, clean.points)
        np.testing.assert_array_equal(f.label_images["camera"], clean.label_images["camera"])
        images[name] = f.cameras[0].image.astype(np.float64)
    base = clean.cameras[0].image.astype(np.float64)
    assert images["dark"].mean() < 0.6 * base.mean()
    assert images["bright"].mean() > 1.2 * base.mean()

    def sharpness(img: np.ndarray) -> float:
        return float(np.abs(np.diff(img, axis=1)).mean())

    assert sharpness(images["blur"]) < 0.7 * sharpness(base)


def test_overrides() -> None:
    config = apply_overrides(get_shift("beams16"), lidar_range_noise=0.5, town_seed=3,
                             camera_width=100, image_scale=0.5)
    assert config.lidar.beams == 16 and config.lidar.range_noise == 0.5
    assert config.town.seed == 3 and config.cameras[0].width == 100
    assert config.image_scale == 0.5
    with pytest.raises(TypeError):
        apply_overrides(config, lidar_no_such_field=1)
    with pytest.raises(ValueError):
        get_shift("no_such_shift")


def test_surround_rig_sees_four_times_the_front_camera() -> None:
    """`cameras=surround`: four cameras a quarter turn apart, each seeing its own part of the
    cloud, together about four times what the front camera sees."""
    f = frame("clean", cameras="surround")
    assert [v.name for v in f.cameras] == ["camera", "camera_left", "camera_rear",
                                           "camera_right"]
    xyz = torch.tensor(f.points[:, :3], dtype=torch.float32)
    seen = torch.stack([project_view(xyz, v).visible for v in f.cameras])
    counts = seen.sum(dim=1)
    assert bool((counts > 0.5 * counts[0]).all())
    assert int(seen.sum(dim=0).max()) <= 2  # neighbours overlap only at their edges
    left, rear = (xyz[seen[i]] for i in (1, 2))
    assert float(left[:, 1].min()) > 0.0 and float(rear[:, 0].max()) < 0.0
    assert float(seen.any(dim=0).float().mean()) > 3.0 * float(seen[0].float().mean())
    with pytest.raises(ValueError, match="surround"):
        apply_overrides(get_shift("clean"), cameras="no_such_rig")
