"""What a real HDL-64E does that a perfect ray caster does not: weak returns thin out with
range and incidence, some lasers read low, foliage returns from inside the crown."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from tttkd_ros.data.drive import render_frame
from tttkd_ros.data.lidar import LidarConfig, beam_gains, detection_probability
from tttkd_ros.data.shifts import get_shift

SMALL = {"lidar_azimuth_res_deg": 0.72, "image_scale": 0.1}


def test_detection_falls_with_range_and_incidence_and_darkness() -> None:
    config = LidarConfig()
    r = np.array([5.0, 20.0, 40.0, 80.0])
    road = detection_probability(config, np.full(4, 0.36), np.full(4, 0.05), r)
    wall = detection_probability(config, np.full(4, 0.5), np.full(4, 0.9), r)
    assert np.all(np.diff(road) < 0) and road[0] > 0.9 and road[-1] < 0.1
    assert np.all(wall > road) and wall[2] > 0.9


def test_weak_lasers() -> None:
    rng = np.random.default_rng(0)
    gains = beam_gains(replace(LidarConfig(), weak_beam_fraction=0.25), rng)
    weak = gains < 0.36
    assert 8 <= weak.sum() <= 24 and gains[~weak].min() > 0.6
    assert (beam_gains(replace(LidarConfig(), weak_beam_fraction=0.0), rng) > 0.6).all()


def test_far_dark_ground_thins_out_in_a_scan() -> None:
    frame = render_frame(get_shift("clean", **SMALL), 0, 0)
    ideal = render_frame(get_shift("clean", lidar_detect_threshold=0.0, **SMALL), 0, 0)
    def far_road(f) -> int:
        r = np.hypot(f.points[:, 0], f.points[:, 1])
        return int(((f.labels == 40) & (r > 35)).sum())
    assert far_road(frame) < 0.5 * far_road(ideal)
    assert len(frame.points) > 0.8 * len(ideal.points)  # the near scene is all there
