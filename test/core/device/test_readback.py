"""One copy back per frame (core/device/readback.py) and the mask drawn from it (core/masks.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tttkd_ros.core.device.readback import read_back
from tttkd_ros.core.frame import MASK_NONE, UNLABELED
from tttkd_ros.core.geometry import project_view
from tttkd_ros.core.loading import forward_camera
from tttkd_ros.core.masks import pixel_depth, splat_mask

IMAGE_HW = (40, 60)


def cloud(n: int, seed: int) -> torch.Tensor:
    """Points ahead of and behind the sensor, so some are not seen by the forward camera."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.uniform((-10, -8, -2), (25, 8, 2), size=(n, 3)).astype(np.float32))


def test_read_back_returns_the_device_values_exactly() -> None:
    rng = np.random.default_rng(1)
    xyz = cloud(500, 1)
    views = [forward_camera("a", IMAGE_HW, rng), forward_camera("b", (30, 90), rng)]
    cls = torch.from_numpy(rng.integers(0, 19, 500))
    cls[:3] = UNLABELED  # the largest value that must survive the packing
    conf = torch.from_numpy(rng.uniform(0, 1, 500).astype(np.float32))
    out = read_back(cls, conf, xyz, views)
    assert out.labels.dtype == np.uint16 and out.confidence.dtype == np.float32
    np.testing.assert_array_equal(out.labels, cls.numpy())
    np.testing.assert_array_equal(out.confidence, conf.numpy())
    for view, pixel, depth in zip(views, out.pixels, out.depths):
        want_pixel, want_depth = pixel_depth(xyz, view)
        np.testing.assert_array_equal(pixel, want_pixel.numpy())
        np.testing.assert_array_equal(depth, want_depth.numpy())


def test_pixel_depth_marks_unseen_points_and_rounds_to_the_pixel_centre() -> None:
    view = forward_camera("front", IMAGE_HW, np.random.default_rng(0))
    xyz = cloud(400, 2)
    pixel, depth = pixel_depth(xyz, view)
    proj = project_view(xyz, view)
    assert ((pixel == -1) == ~proj.visible).all() and (~proj.visible).any()
    u, v = torch.floor(proj.uv[proj.visible] + 0.5).long().unbind(1)
    assert torch.equal(pixel[proj.visible], v * IMAGE_HW[1] + u)
    assert torch.equal(depth, proj.depth)


def test_splat_mask_keeps_the_nearest_labeled_point_of_each_pixel() -> None:
    rng = np.random.default_rng(3)
    view = forward_camera("front", IMAGE_HW, rng)
    xyz = cloud(3000, 3)
    labels = rng.integers(0, 19, 3000).astype(np.uint16)
    labels[::7] = UNLABELED  # never drawn
    pixel, depth = (t.numpy() for t in pixel_depth(xyz, view))
    mask = splat_mask(pixel, depth, labels, IMAGE_HW)
    want = np.full(IMAGE_HW[0] * IMAGE_HW[1], MASK_NONE, dtype=np.uint8)
    nearest = np.full(want.shape, np.inf)
    for p, d, label in zip(pixel, depth, labels):  # the plain per-point definition
        if p >= 0 and label < MASK_NONE and d < nearest[p]:
            nearest[p], want[p] = d, label
    np.testing.assert_array_equal(mask.reshape(-1), want)
    assert (mask != MASK_NONE).sum() > 100


def test_splat_mask_without_any_seen_point_is_empty() -> None:
    mask = splat_mask(np.full(5, -1), np.ones(5, np.float32), np.zeros(5, np.uint16), (4, 6))
    assert mask.shape == (4, 6) and (mask == MASK_NONE).all()


@pytest.mark.parametrize("yaw_deg", [0.0, 60.0, -60.0])
def test_a_yawed_forward_camera_sees_the_point_its_yaw_points_at(yaw_deg: float) -> None:
    view = forward_camera("c", IMAGE_HW, np.random.default_rng(0), yaw_deg)
    yaw = np.radians(yaw_deg)
    ahead = torch.tensor([[10 * np.cos(yaw), 10 * np.sin(yaw), 0.0]], dtype=torch.float32)
    behind = -ahead
    proj = project_view(torch.cat([ahead, behind]), view)
    assert proj.visible.tolist() == [True, False]
    principal_point = torch.tensor([IMAGE_HW[1] / 2, IMAGE_HW[0] / 2])  # K's (w/2, h/2)
    assert torch.allclose(proj.uv[0], principal_point, atol=1e-3)
    assert float(proj.depth[0]) == pytest.approx(10.0, rel=1e-5)
