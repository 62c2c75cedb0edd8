"""A raw image and its rectified twin (image_proc's image_rect) of the same scene, with one
CameraInfo: projected the way each is declared (raw: K and D; rectified: R and P), a LiDAR
point lands on the pixel that shows the same thing in both. Both images are rendered here
from one scene (a colour for every viewing ray) with an undistortion written in this test,
never with the code under test. The old behaviour, K and D on the rectified image, misses."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tttkd_ros.core.geometry import project_view
from tttkd_ros.ros.convert import (
    camera_info_to_calib,
    camera_view,
    rectified_from_topic,
)

H, W = 240, 320
K = np.array([[300.0, 0, 161.0], [0, 302.0, 118.0], [0, 0, 1]])
D = np.array([-0.28, 0.09, 0.0012, -0.0008, -0.012])
ANGLE = np.radians(2.0)  # a stereo rectification turns the camera a little
R = np.array([[np.cos(ANGLE), 0, np.sin(ANGLE)], [0, 1, 0], [-np.sin(ANGLE), 0, np.cos(ANGLE)]])
K_RECT = np.array([[270.0, 0, 158.0], [0, 270.0, 121.0], [0, 0, 1]])
T_CAM_LIDAR = np.array([[0, -1, 0, 0.05], [0, 0, -1, -0.1], [1, 0, 0, -0.2], [0, 0, 0, 1.0]])


def info():
    return SimpleNamespace(k=K.ravel(), d=D, distortion_model="plumb_bob", r=R.ravel(),
                           p=np.c_[K_RECT, np.zeros(3)].ravel(), width=W, height=H,
                           header=SimpleNamespace(frame_id="cam_optical"))


def scene(rays: np.ndarray) -> np.ndarray:
    """The colour seen along each camera-frame ray (..., 3): smooth stripes and blobs."""
    x, y = rays[..., 0] / rays[..., 2], rays[..., 1] / rays[..., 2]
    return np.stack([np.sin(9 * x) + np.cos(7 * y), np.sin(5 * (x + y)), np.cos(11 * x * y)], -1)


def distort(xy: np.ndarray) -> np.ndarray:
    x, y = xy[..., 0], xy[..., 1]
    r2 = x * x + y * y
    k1, k2, p1, p2, k3 = D
    radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
    return np.stack([x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x),
                     y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y], -1)


def undistort(xy_d: np.ndarray) -> np.ndarray:
    """Fixed-point inversion of `distort` (converges for this mild lens)."""
    xy = xy_d.copy()
    for _ in range(50):
        xy = xy + (xy_d - distort(xy))
    return xy


def pixels() -> np.ndarray:
    v, u = np.mgrid[0:H, 0:W]
    return np.stack([u, v], -1).astype(np.float64)


def raw_image() -> np.ndarray:
    uv = pixels()
    xy_d = (uv - K[:2, 2]) / np.diag(K)[:2]
    xy = undistort(xy_d)
    return scene(np.concatenate([xy, np.ones(xy.shape[:-1] + (1,))], -1))


def rectified_image() -> np.ndarray:
    uv = pixels()
    ray_rect = np.concatenate([(uv - K_RECT[:2, 2]) / np.diag(K_RECT)[:2],
                               np.ones((H, W, 1))], -1)
    return scene(ray_rect @ R)  # R^T applied to each row vector: back to the camera frame


def bilinear(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    u, v = uv[:, 0], uv[:, 1]
    u0, v0 = np.floor(u).astype(int), np.floor(v).astype(int)
    a, b = (u - u0)[:, None], (v - v0)[:, None]
    return ((1 - a) * (1 - b) * image[v0, u0] + a * (1 - b) * image[v0, u0 + 1]
            + (1 - a) * b * image[v0 + 1, u0] + a * b * image[v0 + 1, u0 + 1])


def seen(image: np.ndarray, rectified: bool, points: np.ndarray) -> np.ndarray:
    """The colours at the pixels the package projects `points` to (visible ones only)."""
    calib = camera_info_to_calib(info(), rectified)
    view = camera_view("cam", np.zeros((H, W, 3), np.uint8), calib, T_CAM_LIDAR, "cam_optical")
    proj = project_view(torch.from_numpy(points), view)
    uv = proj.uv.numpy()
    keep = proj.visible.numpy() & (uv[:, 0] < W - 1) & (uv[:, 1] < H - 1)
    keep &= (uv[:, 0] > 0) & (uv[:, 1] > 0)
    return bilinear(image, uv[keep]), keep


@pytest.fixture(scope="module")
def points() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.c_[rng.uniform(4, 20, 3000), rng.uniform(-6, 6, 3000), rng.uniform(-3, 3, 3000)]


def test_a_raw_and_a_rectified_image_of_one_scene_give_the_same_pixels(points) -> None:
    raw, keep_raw = seen(raw_image(), False, points)
    rect, keep_rect = seen(rectified_image(), True, points)
    both = keep_raw & keep_rect
    assert both.sum() > 1000
    truth = scene((np.c_[points, np.ones(len(points))] @ T_CAM_LIDAR.T)[:, :3])
    raw = raw[both[keep_raw]]
    rect = rect[both[keep_rect]]
    assert np.abs(raw - truth[both]).mean() < 0.02  # the point's own colour in the raw image
    assert np.abs(rect - truth[both]).mean() < 0.02  # and in the rectified one
    # K and D on the rectified image (distorting it a second time) sees something else
    wrong, keep_wrong = seen(rectified_image(), False, points)
    assert np.abs(wrong - truth[keep_wrong]).mean() > 10 * np.abs(rect - truth[both]).mean()


@pytest.mark.parametrize("setting, topic, expected", [
    ("auto", "/front/image_rect_color", True), ("auto", "/cam/image_rect/compressed", True),
    ("auto", "/camera/color/image_raw", False), ("auto", "/camera/image", False),
    ("true", "/camera/image", True), ("false", "/front/image_rect", False),
])
def test_rectified_is_chosen_explicitly_or_by_the_topic_name(setting, topic, expected) -> None:
    assert rectified_from_topic(setting, topic) is expected


def test_a_rectified_image_needs_a_usable_p() -> None:
    from tttkd_ros.ros.convert import ConversionError

    bad = info()
    bad.p = np.zeros(12)
    with pytest.raises(ConversionError, match="CAM.rectified: false"):
        camera_info_to_calib(bad, rectified=True)
