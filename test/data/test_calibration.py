"""The cameras' K, D and T_cam_lidar are the ones the images were rendered with: LiDAR points
project onto pixels that show the same class."""
from __future__ import annotations

import numpy as np
import pytest

from tttkd_ros.core.frame import CameraView
from tttkd_ros.data.camera import CameraConfig, PinholeGrid
from tttkd_ros.data.drive import SynthFrame, generate_drive

SMALL = {"image_scale": 0.25, "lidar_beams": 32, "lidar_azimuth_res_deg": 0.5}
DISTORTED = CameraConfig(D=(-0.2, 0.08, 0.001, -0.0015, 0.0))


def project(points: np.ndarray, view: CameraView) -> tuple[np.ndarray, np.ndarray]:
    """Pixel (u, v) rounded to int (N, 2) and visibility (N,), written independently of the
    package with the OpenCV plumb_bob model."""
    T = view.T_cam_lidar
    xyz = points[:, :3].astype(np.float64) @ T[:3, :3].T + T[:3, 3]
    front = xyz[:, 2] > 0.5
    z = np.where(front, xyz[:, 2], 1.0)
    x, y = xyz[:, 0] / z, xyz[:, 1] / z
    k1, k2, p1, p2, k3 = np.concatenate((view.D, np.zeros(5)))[:5]
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    u = view.K[0, 0] * xd + view.K[0, 1] * yd + view.K[0, 2]
    v = view.K[1, 1] * yd + view.K[1, 2]
    uv = np.rint(np.stack((u, v), axis=1)).astype(np.int64)
    height, width = view.size
    visible = front & (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
    return uv, visible


def agreement(frame: SynthFrame, view: CameraView) -> tuple[float, int]:
    """Fraction of visible points whose pixel in the label image has the point's label."""
    uv, visible = project(frame.points, view)
    pixel_labels = frame.label_images[view.name][uv[visible, 1], uv[visible, 0]]
    return float(np.mean(pixel_labels == frame.labels[visible])), int(visible.sum())


@pytest.fixture(scope="module")
def frames() -> list[SynthFrame]:
    """Two drives with a KITTI-like stereo pair, one of them with lens distortion."""
    out = []
    for seed, cam in ((0, CameraConfig()), (1, DISTORTED)):
        out += list(generate_drive(frames=1, seed=seed, cameras=(cam, cam.stereo_partner()),
                                   **SMALL))
    return out


def test_points_land_on_pixels_of_their_class(frames: list[SynthFrame]) -> None:
    for frame in frames:
        main, right = frame.cameras
        rate, visible = agreement(frame, main)
        assert visible > 1000
        assert rate > 0.9
        # The right camera is 0.6 m from the LiDAR: more parallax occlusion, still a majority.
        assert agreement(frame, right)[0] > 0.85


def test_a_wrong_calibration_is_detected(frames: list[SynthFrame]) -> None:
    """The agreement has power: the extrinsic off by 2 degrees of yaw, or K's principal
    point off by 3 pixels, agrees clearly less."""
    frame = frames[0]
    view = frame.cameras[0]
    good, _ = agreement(frame, view)
    yaw = np.radians(2.0)
    rot = np.eye(4)
    rot[[0, 0, 2, 2], [0, 2, 0, 2]] = np.cos(yaw), np.sin(yaw), -np.sin(yaw), np.cos(yaw)
    turned = CameraView(view.name, view.image, view.K, rot @ view.T_cam_lidar, view.D)
    shifted_K = view.K.copy()
    shifted_K[0, 2] += 3.0
    shifted = CameraView(view.name, view.image, shifted_K, view.T_cam_lidar, view.D)
    assert agreement(frame, turned)[0] < good - 0.05
    assert agreement(frame, shifted)[0] < good - 0.03


def test_extrinsic_is_rigid_and_kitti_like() -> None:
    T = CameraConfig().T_cam_lidar
    R = T[:3, :3]
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0)
    # Optical z is the LiDAR's forward x, optical x its right (-y), optical y its down (-z).
    np.testing.assert_allclose(R @ [1, 0, 0], [0, 0, 1], atol=0.02)
    np.testing.assert_allclose(R @ [0, -1, 0], [1, 0, 0], atol=0.02)
    np.testing.assert_allclose(R @ [0, 0, -1], [0, 1, 0], atol=0.02)
    # The camera centre, in the LiDAR frame, is where the config mounts it.
    np.testing.assert_allclose(-R.T @ T[:3, 3], CameraConfig().xyz, atol=1e-12)


def test_pixel_rays_reproject_onto_their_pixels() -> None:
    cam = DISTORTED.scaled(0.2)
    grid = PinholeGrid(cam, np.eye(4))
    d = grid.dirs_cam
    view = CameraView("c", np.zeros((cam.height, cam.width, 3), np.uint8), cam.K, np.eye(4),
                      np.asarray(cam.D))
    # Points one metre along each pixel's ray, given in the (identity) LiDAR frame.
    uv, visible = project(np.concatenate((d, np.zeros((len(d), 1))), axis=1), view)
    assert visible.all()
    u, v = np.meshgrid(np.arange(cam.width), np.arange(cam.height))
    np.testing.assert_array_equal(uv, np.stack((u.ravel(), v.ravel()), axis=1))


def test_scaled_camera_keeps_pixel_centres() -> None:
    cam = CameraConfig()
    half = cam.scaled(0.5)
    assert (half.width, half.height) == (620, 188)
    # The principal point maps like any image position: (c + 0.5) * scale - 0.5.
    assert half.cx == pytest.approx((cam.cx + 0.5) * 620 / 1241 - 0.5)
    assert half.fx == pytest.approx(cam.fx * 620 / 1241)
