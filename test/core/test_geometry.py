"""Projection, distortion, grid sampling and mirroring in tttkd_ros.core.geometry."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tttkd_ros.core.geometry import (
    distort,
    fold_radius_sq,
    mirror_points,
    project_points,
    sample_grid,
    transform_points,
)

H, W = 480, 640
K = np.array([[520.0, 0.8, 318.4], [0.0, 515.0, 241.7], [0.0, 0.0, 1.0]])
D5 = np.array([-0.28, 0.09, 0.0012, -0.0008, -0.015])


def _rotation(rx: float, ry: float, rz: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    rot_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rot_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rot_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rot_z @ rot_y @ rot_x


def _t_cam_lidar() -> np.ndarray:
    """LiDAR (x forward, y left, z up) -> optical frame, slightly rotated and offset."""
    axes = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    T = np.eye(4)
    T[:3, :3] = _rotation(0.02, -0.03, 0.015) @ axes
    T[:3, 3] = [0.05, -0.08, -0.27]
    return T


def _distort_np(x: np.ndarray, y: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's plumb_bob formula, written out independently of the module under test."""
    k1, k2, p1, p2, k3 = (list(d) + [0.0] * 5)[:5]
    r2 = x**2 + y**2
    radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x**2)
    yd = y * radial + p1 * (r2 + 2 * y**2) + 2 * p2 * x * y
    return xd, yd


def _pixel_np(x: np.ndarray, y: np.ndarray, d: np.ndarray) -> np.ndarray:
    xd, yd = _distort_np(x, y, d)
    return np.stack([K[0, 0] * xd + K[0, 1] * yd + K[0, 2], K[1, 1] * yd + K[1, 2]], axis=1)


def _back_project(uv: np.ndarray, depth: np.ndarray, d: np.ndarray) -> np.ndarray:
    """LiDAR-frame points whose exact image is uv at the given depths (undistorts by iteration)."""
    yd = (uv[:, 1] - K[1, 2]) / K[1, 1]
    xd = (uv[:, 0] - K[0, 2] - K[0, 1] * yd) / K[0, 0]
    x, y = xd.copy(), yd.copy()
    for _ in range(200):
        fx, fy = _distort_np(x, y, d)
        x, y = x - (fx - xd), y - (fy - yd)
    assert np.abs(_pixel_np(x, y, d) - uv).max() < 1e-9  # the inversion converged
    cam = np.stack([x * depth, y * depth, depth], axis=1)
    T_lidar_cam = np.linalg.inv(_t_cam_lidar())
    return cam @ T_lidar_cam[:3, :3].T + T_lidar_cam[:3, 3]


def _project(xyz: np.ndarray, d: np.ndarray | None, min_depth: float = 0.5):
    return project_points(
        torch.as_tensor(xyz), torch.as_tensor(K), torch.as_tensor(_t_cam_lidar()), (H, W),
        D=None if d is None else torch.as_tensor(d), min_depth=min_depth,
    )


def test_transform_points_matches_homogeneous_product() -> None:
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(20, 3))
    T = _t_cam_lidar()
    expected = (np.c_[xyz, np.ones(20)] @ T.T)[:, :3]
    got = transform_points(torch.as_tensor(xyz), torch.as_tensor(T)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-12)


@pytest.mark.parametrize("d", [np.zeros(0), D5[:4], D5])
def test_distort_matches_opencv_formula(d: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    xn = rng.uniform(-0.6, 0.6, size=(50, 2))
    expected = np.stack(_distort_np(xn[:, 0], xn[:, 1], d), axis=1)
    got = distort(torch.as_tensor(xn), torch.as_tensor(d)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_distort_rejects_other_coefficient_counts() -> None:
    with pytest.raises(ValueError):
        distort(torch.zeros(3, 2), torch.zeros(8))


@pytest.mark.parametrize("d", [None, D5])
def test_points_land_on_the_pixels_they_were_built_from(d: np.ndarray | None) -> None:
    rng = np.random.default_rng(2)
    uv = np.c_[rng.uniform(0, W - 1, 40), rng.uniform(0, H - 1, 40)]
    uv = np.r_[uv, [[0.0, 0.0], [W - 1.0, H - 1.0], [-0.49, H - 0.51]]]
    depth = rng.uniform(1.0, 60.0, len(uv))
    proj = _project(_back_project(uv, depth, np.zeros(0) if d is None else d), d)
    np.testing.assert_allclose(proj.uv.numpy(), uv, atol=1e-7)
    np.testing.assert_allclose(proj.depth.numpy(), depth, atol=1e-9)
    assert proj.visible.all()


def test_distorted_pixels_agree_with_independent_forward_formula() -> None:
    rng = np.random.default_rng(3)
    xn = rng.uniform(-0.5, 0.5, size=(30, 2))
    depth = rng.uniform(2.0, 30.0, 30)
    cam = np.c_[xn * depth[:, None], depth]
    T_lidar_cam = np.linalg.inv(_t_cam_lidar())
    xyz = cam @ T_lidar_cam[:3, :3].T + T_lidar_cam[:3, 3]
    proj = _project(xyz, D5)
    np.testing.assert_allclose(proj.uv.numpy(), _pixel_np(xn[:, 0], xn[:, 1], D5), atol=1e-7)


def test_image_bounds_follow_the_pixel_centre_convention() -> None:
    uv = np.array([
        [-0.499, 100.0], [-0.501, 100.0], [W - 0.501, 100.0], [W - 0.499, 100.0],
        [100.0, -0.499], [100.0, -0.501], [100.0, H - 0.501], [100.0, H - 0.499],
    ])
    proj = _project(_back_project(uv, np.full(len(uv), 5.0), np.zeros(0)), None)
    assert proj.visible.tolist() == [True, False, True, False, True, False, True, False]


def test_behind_too_close_and_outside_points_are_not_visible() -> None:
    T_lidar_cam = np.linalg.inv(_t_cam_lidar())
    cam = np.array([
        [0.0, 0.0, -5.0],  # behind the camera
        [0.0, 0.0, 0.3],  # in front but closer than min_depth
        [4.0, 0.0, 5.0],  # right of the image
        [0.0, -3.5, 5.0],  # above the image
        [0.0, 0.0, 5.0],  # on the optical axis: visible
    ])
    xyz = cam @ T_lidar_cam[:3, :3].T + T_lidar_cam[:3, 3]
    proj = _project(xyz, D5)
    assert proj.visible.tolist() == [False, False, False, False, True]
    assert torch.isfinite(proj.uv).all()


def test_non_finite_points_are_not_visible() -> None:
    xyz = np.array([[np.nan, 0.0, 0.0], [np.inf, 0.0, 0.0], [10.0, 0.0, 0.0]])
    assert _project(xyz, D5).visible.tolist() == [False, False, True]


def test_far_off_axis_point_that_folds_into_the_image_is_not_visible() -> None:
    d = np.array([-0.3, 0.0, 0.0, 0.0])
    x = np.array([2.0])  # 63 degrees off axis; the barrel polynomial folds back below r = 1.06
    naive = _pixel_np(x, np.zeros(1), d)[0]
    assert -0.5 <= naive[0] < W - 0.5 and -0.5 <= naive[1] < H - 0.5  # the trap is real
    T_lidar_cam = np.linalg.inv(_t_cam_lidar())
    cam = np.array([[2.0 * 4.0, 0.0, 4.0]])
    proj = _project(cam @ T_lidar_cam[:3, :3].T + T_lidar_cam[:3, 3], d)
    assert not proj.visible.any()


def test_fold_radius_is_where_the_radial_map_stops_growing() -> None:
    assert fold_radius_sq(None) == np.inf
    assert fold_radius_sq(torch.zeros(5)) == np.inf
    assert fold_radius_sq(torch.tensor([0.1, 0.01, 0.0, 0.0])) == np.inf  # pincushion
    d = np.array([-0.28, 0.09, 0.0, 0.0, -0.015])
    s = fold_radius_sq(torch.as_tensor(d))
    r = np.sqrt(np.linspace(0.0, 3.0 * s, 30001))
    rd = r * (1 + d[0] * r**2 + d[1] * r**4 + d[4] * r**6)
    np.testing.assert_allclose(r[np.argmax(rd)] ** 2, s, rtol=1e-3)


def _linear_grid(h: int, w: int) -> tuple[torch.Tensor, tuple[float, ...]]:
    """A (2, h, w) grid whose values are affine in each cell centre's pixel position."""
    coeffs = (0.7, -1.3, 4.0, 0.25, 2.0, -1.0)
    u = -0.5 + (torch.arange(w, dtype=torch.float64) + 0.5) * W / w
    v = -0.5 + (torch.arange(h, dtype=torch.float64) + 0.5) * H / h
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    a, b, c, e, f, g = coeffs
    return torch.stack([a * uu + b * vv + c, e * uu + f * vv + g]), coeffs


def test_sample_grid_is_exact_on_affine_grids_inside() -> None:
    h, w = 17, 23
    grid, (a, b, c, e, f, g) = _linear_grid(h, w)
    rng = np.random.default_rng(4)
    # Interior: between the outermost cell centres, where bilinear interpolation is exact.
    u = rng.uniform(-0.5 + 0.5 * W / w, W - 0.5 - 0.5 * W / w, 200)
    v = rng.uniform(-0.5 + 0.5 * H / h, H - 0.5 - 0.5 * H / h, 200)
    got = sample_grid(grid, torch.as_tensor(np.c_[u, v]), (H, W)).numpy()
    assert got.shape == (200, 2)
    np.testing.assert_allclose(got[:, 0], a * u + b * v + c, atol=1e-9)
    np.testing.assert_allclose(got[:, 1], e * u + f * v + g, atol=1e-9)


def test_sample_grid_keeps_the_edge_value_beyond_the_outer_centres() -> None:
    grid, _ = _linear_grid(4, 6)
    corners = torch.tensor([[-0.5, -0.5], [W - 0.5, H - 0.5]], dtype=torch.float64)
    got = sample_grid(grid, corners, (H, W))
    torch.testing.assert_close(got, torch.stack([grid[:, 0, 0], grid[:, -1, -1]]))


def test_sample_grid_of_no_points_is_empty() -> None:
    got = sample_grid(torch.ones(5, 3, 4), torch.zeros(0, 2), (H, W))
    assert got.shape == (0, 5)


def test_mirror_negates_y_only_and_keeps_the_order() -> None:
    points = torch.randn(10, 4)
    mirrored = mirror_points(points)
    torch.testing.assert_close(mirrored[:, 1], -points[:, 1])
    torch.testing.assert_close(mirrored[:, [0, 2, 3]], points[:, [0, 2, 3]])
    torch.testing.assert_close(mirror_points(mirrored), points)
