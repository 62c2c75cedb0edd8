"""Point -> pixel geometry: rigid transforms, plumb_bob distortion, projection, grid sampling.

Pixel convention (OpenCV): u runs right, v runs down, and the integer pixel (u, v) is the
centre of column u, row v. The image therefore spans -0.5 <= u < W - 0.5 and
-0.5 <= v < H - 0.5, and rounding a coordinate gives the pixel it falls in.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .frame import CameraView


@dataclass
class Projection:
    """LiDAR points seen by one camera.

    uv: (N, 2) float pixel coordinates (u right, v down, integer = pixel centre); meaningless
    where not visible (but finite for finite points, also behind the camera).
    depth: (N,) z in the camera's optical frame (metres along the optical axis).
    visible: (N,) bool, in front of the camera, inside the image and inside the range where
    the distortion model is one-to-one.
    """

    uv: torch.Tensor
    depth: torch.Tensor
    visible: torch.Tensor


def transform_points(xyz: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """Apply a 4 x 4 rigid transform T to xyz (N, 3); returns (N, 3)."""
    T = T.to(dtype=xyz.dtype, device=xyz.device)
    return xyz @ T[:3, :3].T + T[:3, 3]


def distort(xn: torch.Tensor, D: torch.Tensor | None) -> torch.Tensor:
    """OpenCV plumb_bob forward model on normalised coordinates.

    xn: (N, 2) undistorted (x / z, y / z); D: (k,) = (k1, k2, p1, p2[, k3]), k in {0, 4, 5};
    None or empty means no distortion. Returns the distorted (N, 2) normalised coordinates.
    """
    if D is None or D.numel() == 0:
        return xn
    k1, k2, p1, p2, k3 = _coefficients(D, xn.dtype, xn.device)
    x, y = xn.unbind(-1)
    r2 = x * x + y * y
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xy2 = 2 * x * y
    xd = x * radial + p1 * xy2 + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + p2 * xy2
    return torch.stack((xd, yd), dim=-1)


def fold_radius_sq(D: torch.Tensor | None) -> float:
    """Squared undistorted radius where the radial model stops being one-to-one.

    The distorted radius r * (1 + k1 r^2 + k2 r^4 + k3 r^6) grows with r until its
    derivative 1 + 3 k1 s + 5 k2 s^2 + 7 k3 s^3 (s = r^2) first reaches zero; beyond that the
    polynomial folds back and points far outside the field of view would land inside the
    image. Returns the smallest positive root s, or inf when there is none.
    """
    if D is None or D.numel() == 0:
        return float("inf")
    k1, k2, _, _, k3 = _coefficients(D.detach(), torch.float64, torch.device("cpu"))
    coeffs = torch.stack((torch.ones_like(k1), 3 * k1, 5 * k2, 7 * k3))
    return _smallest_positive_root(coeffs)


def project_points(
    xyz_lidar: torch.Tensor,
    K: torch.Tensor,
    T_cam_lidar: torch.Tensor,
    image_size: tuple[int, int],
    D: torch.Tensor | None = None,
    min_depth: float = 0.5,
) -> Projection:
    """Project LiDAR-frame points (N, 3) into a camera.

    K: (3, 3) intrinsics (skew allowed); T_cam_lidar: (4, 4) LiDAR -> optical frame
    (z forward, x right, y down); image_size: (H, W); D: plumb_bob coefficients or None.
    A point is visible when depth > min_depth, its undistorted radius is inside the
    one-to-one range of the distortion model, and its pixel lies in the image
    (-0.5 <= u < W - 0.5, -0.5 <= v < H - 0.5).
    """
    height, width = image_size
    cam = transform_points(xyz_lidar, T_cam_lidar)
    depth = cam[:, 2]
    in_front = depth > min_depth
    # Points behind the camera divide by 1 instead, so uv (and any gradient) stays finite.
    z = torch.where(in_front, depth, torch.ones_like(depth))
    xn = cam[:, :2] / z.unsqueeze(-1)
    in_range = xn.square().sum(-1) < fold_radius_sq(D)
    xd = distort(xn, D)
    K = K.to(dtype=xyz_lidar.dtype, device=xyz_lidar.device)
    uv = xd @ K[:2, :2].T + K[:2, 2]
    u, v = uv.unbind(-1)
    inside = (u >= -0.5) & (u < width - 0.5) & (v >= -0.5) & (v < height - 0.5)
    return Projection(uv=uv, depth=depth, visible=in_front & in_range & inside)


def sample_grid(
    grid: torch.Tensor, uv: torch.Tensor, image_size: tuple[int, int]
) -> torch.Tensor:
    """Bilinearly sample a feature grid that covers the whole image at pixel positions.

    grid: (D, h, w), cell (i, j) covering an equal h-th / w-th of the image, so its centre
    sits at pixel (-0.5 + (j + 0.5) W / w, -0.5 + (i + 0.5) H / h); uv: (M, 2) pixel
    coordinates in this module's convention; image_size: (H, W). Returns (M, D). Beyond the
    outermost cell centres the edge value is kept (no blending with zeros).
    """
    channels = grid.shape[0]
    if uv.shape[0] == 0:
        return grid.new_zeros((0, channels))
    height, width = image_size
    size = torch.tensor([width, height], dtype=grid.dtype, device=grid.device)
    # With align_corners=False, -1 and +1 are the outer edges of the grid, which are the
    # image's outer edges at -0.5 and W - 0.5.
    norm = (2 * uv.to(dtype=grid.dtype, device=grid.device) + 1) / size - 1
    out = F.grid_sample(grid.unsqueeze(0), norm.reshape(1, 1, -1, 2), mode="bilinear",
                        padding_mode="border", align_corners=False)
    return out.view(channels, -1).T


def mirror_points(points: torch.Tensor) -> torch.Tensor:
    """OCL's second view of a cloud (N, C >= 2): y -> -y in the LiDAR frame, same order."""
    mirrored = points.clone()
    mirrored[:, 1] = -mirrored[:, 1]
    return mirrored


def _coefficients(
    D: torch.Tensor, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, ...]:
    """(k1, k2, p1, p2, k3) as 0-d tensors; a 4-coefficient D has k3 = 0."""
    if D.numel() not in (4, 5):
        raise ValueError(f"plumb_bob needs 4 or 5 distortion coefficients, got {D.numel()}")
    d = D.to(dtype=dtype, device=device).reshape(-1)
    k3 = d[4] if d.numel() == 5 else d.new_zeros(())
    return d[0], d[1], d[2], d[3], k3


def _smallest_positive_root(coeffs: torch.Tensor) -> float:
    """Smallest real root > 0 of sum_i coeffs[i] s^i (float64, coeffs[0] != 0), or inf."""
    nonzero = torch.nonzero(coeffs).flatten()
    degree = int(nonzero[-1])
    if degree == 0:
        return float("inf")
    c = coeffs[: degree + 1]
    # Companion matrix of the monic polynomial: its eigenvalues are the roots.
    companion = torch.zeros((degree, degree), dtype=c.dtype)
    companion[1:, :-1] = torch.eye(degree - 1, dtype=c.dtype)
    companion[:, -1] = -c[:-1] / c[-1]
    roots = torch.linalg.eigvals(companion)
    real = roots.real[(roots.imag.abs() <= 1e-9 * roots.abs().clamp(min=1.0)) & (roots.real > 0)]
    return float(real.min()) if real.numel() else float("inf")


def project_view(xyz_lidar: torch.Tensor, view: CameraView) -> Projection:
    """`project_points` with the calibration of a CameraView (numpy arrays, copied to the
    points' device and dtype)."""
    def tensor(array) -> torch.Tensor:
        return torch.tensor(np.asarray(array), dtype=xyz_lidar.dtype, device=xyz_lidar.device)

    return project_points(xyz_lidar, tensor(view.K), tensor(view.T_cam_lidar), view.size,
                          D=tensor(view.D))
