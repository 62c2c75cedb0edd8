"""Training augmentations: the camera still sees every moved point on its pixel, and the
sensor-side draws (intensity, dropout) stay within their ranges."""
from __future__ import annotations

import numpy as np
import torch

from tttkd_ros.core.augment import (
    AugmentConfig,
    apply_transform,
    moved_extrinsic,
    random_intensity,
    random_keep,
    random_transform,
)
from tttkd_ros.core.geometry import project_points
from tttkd_ros.tools.train import AUGMENTS

K = torch.tensor([[700.0, 0.0, 600.0], [0.0, 700.0, 180.0], [0.0, 0.0, 1.0]],
                 dtype=torch.float64)
# LiDAR (x forward, y left, z up) -> optical (x right, y down, z forward)
T = np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, -0.08], [1.0, 0.0, 0.0, -0.27],
              [0.0, 0.0, 0.0, 1.0]])


def test_moved_points_project_to_the_same_pixels() -> None:
    rng = np.random.default_rng(0)
    points = np.concatenate((rng.uniform([4, -5, -1.7], [30, 5, 2], (500, 3)),
                             rng.uniform(0, 1, (500, 1))), axis=1).astype(np.float32)
    before = project_points(torch.from_numpy(points[:, :3]).double(), K,
                            torch.from_numpy(T), (376, 1241))
    for _ in range(20):
        A = random_transform(AugmentConfig(), rng)
        assert not np.allclose(A, np.eye(4))
        moved = apply_transform(points, A)
        after = project_points(torch.from_numpy(moved[:, :3]).double(), K,
                               torch.from_numpy(moved_extrinsic(T, A)), (376, 1241))
        both = before.visible & after.visible
        assert both.sum() > 100
        torch.testing.assert_close(after.uv[both], before.uv[both], atol=1e-3, rtol=0)
        np.testing.assert_array_equal(moved[:, 3], points[:, 3])


def test_tilt_and_height_move_the_ground_plane() -> None:
    rng = np.random.default_rng(1)
    ground = np.zeros((1, 4), np.float32)
    ground[0, :3] = (20.0, 0.0, -1.73)
    z = [apply_transform(ground, random_transform(AugmentConfig(rotate_z=False, flip_y=0),
                                                  rng))[0, 2] for _ in range(200)]
    # 2 deg of pitch at 20 m is 0.7 m; the height shift adds up to 0.15 m
    assert np.ptp(z) > 0.5 and np.all(np.abs(np.array(z) + 1.73) < 0.9)
    basic = [apply_transform(ground, random_transform(AUGMENTS["basic"], rng))[0, 2]
             for _ in range(50)]
    assert np.all(np.abs(np.array(basic) + 1.73) < 0.1)  # scale only


def test_intensity_gain_and_gamma_stay_in_range() -> None:
    rng = np.random.default_rng(2)
    intensity = np.linspace(0.0, 1.0, 101, dtype=np.float32)
    medians = []
    for _ in range(100):
        out = random_intensity(AugmentConfig(), intensity, rng)
        assert out.dtype == np.float32 and out.min() >= 0.0 and out.max() <= 1.0
        assert np.all(np.diff(out) >= 0)  # the order of brightness is kept
        medians.append(float(np.median(out)))
    assert min(medians) < 0.4 and max(medians) > 0.6
    same = random_intensity(AUGMENTS["basic"], intensity, rng)
    np.testing.assert_allclose(same, intensity, atol=1e-6)


def test_dropout_keeps_a_share_in_range() -> None:
    rng = np.random.default_rng(3)
    shares = [len(random_keep(AugmentConfig(), 10_000, rng)) / 10_000 for _ in range(200)]
    assert 0.68 < min(shares) and max(shares) <= 1.0 and min(shares) < 0.8
    assert len(random_keep(AUGMENTS["basic"], 10_000, rng)) == 10_000
    assert len(random_keep(AugmentConfig(dropout=(1.0, 1.0)), 5, rng)) == 1
