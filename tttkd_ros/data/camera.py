"""Pinhole cameras rendered by ray casting the same scene the LiDAR sees.

Optical frame: z forward, x right, y down. Pixel (u, v) integer is the pixel centre (OpenCV),
so the ray of pixel (u, v) is the one whose projection (with K and the plumb_bob distortion
D) lands exactly on (u, v); projecting a LiDAR point and rounding gives the pixel that shows
it. The default camera is KITTI's cam2: 1241 x 376, fx = 718.856, mounted 0.27 m ahead of
and 0.08 m below the LiDAR with a small mounting rotation.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from ..core.frame import CameraView
from .appearance import shade, sky, sun_direction, surface
from .imaging import ImagingConfig, develop
from .raycast import SKY, cast
from .scene import BOX_EDGES, Primitives
from .town import TownConfig
from .weather import WeatherConfig, haze

# optical frame (x right, y down, z forward) <- camera body frame (x forward, y left, z up)
_OPTICAL_FROM_BODY = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
_NEAR = 0.05


@dataclass(frozen=True)
class CameraConfig:
    name: str = "camera"
    width: int = 1241
    height: int = 376
    fx: float = 718.856
    fy: float = 718.856
    cx: float = 607.1928
    cy: float = 185.2157
    D: tuple[float, ...] = ()  # plumb_bob (k1, k2, p1, p2, k3); empty = none
    xyz: tuple[float, float, float] = (0.27, 0.06, -0.08)  # camera origin in the LiDAR frame
    rpy_deg: tuple[float, float, float] = (0.2, 0.4, -0.3)  # body roll, pitch, yaw in LiDAR
    far: float = 150.0  # objects beyond this are not drawn (the ground still is)

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def body_rotation(self) -> np.ndarray:
        """3 x 3 LiDAR_from_body rotation of the camera body (x forward, y left, z up)."""
        r, p, y = np.radians(self.rpy_deg)
        rx = np.array([[1, 0, 0], [0, np.cos(r), -np.sin(r)], [0, np.sin(r), np.cos(r)]])
        ry = np.array([[np.cos(p), 0, np.sin(p)], [0, 1, 0], [-np.sin(p), 0, np.cos(p)]])
        rz = np.array([[np.cos(y), -np.sin(y), 0], [np.sin(y), np.cos(y), 0], [0, 0, 1]])
        return rz @ ry @ rx

    @property
    def T_cam_lidar(self) -> np.ndarray:
        """4 x 4 rigid transform LiDAR frame -> optical frame."""
        rot = _OPTICAL_FROM_BODY @ self.body_rotation().T
        T = np.eye(4)
        T[:3, :3] = rot
        T[:3, 3] = -rot @ np.asarray(self.xyz)
        return T

    def stereo_partner(self, baseline: float = 0.54, name: str = "camera_right") -> CameraConfig:
        """A rectified partner `baseline` metres to the right (KITTI's cam3 to this cam2)."""
        body_left = self.body_rotation()[:, 1]  # the body's +y axis in the LiDAR frame
        xyz = np.asarray(self.xyz) - baseline * body_left
        return replace(self, name=name, xyz=tuple(float(v) for v in xyz))

    def yawed(self, yaw_deg: float, name: str) -> CameraConfig:
        """The same camera turned `yaw_deg` about the LiDAR's z axis (position and view), as
        the other cameras of a surround rig."""
        c, s = np.cos(np.radians(yaw_deg)), np.sin(np.radians(yaw_deg))
        x, y, z = self.xyz
        roll, pitch, yaw = self.rpy_deg
        return replace(self, name=name, xyz=(float(c * x - s * y), float(s * x + c * y), z),
                       rpy_deg=(roll, pitch, yaw + yaw_deg))

    def scaled(self, factor: float) -> CameraConfig:
        """The same camera with an image `factor` times the size (for tests and previews)."""
        if factor == 1.0:
            return self
        w, h = max(1, round(self.width * factor)), max(1, round(self.height * factor))
        sx, sy = w / self.width, h / self.height
        # Pixel centres: u + 0.5 scales with the image.
        return replace(self, width=w, height=h, fx=self.fx * sx, fy=self.fy * sy,
                       cx=(self.cx + 0.5) * sx - 0.5, cy=(self.cy + 0.5) * sy - 0.5)


@lru_cache(maxsize=8)
def _pixel_rays(config: CameraConfig) -> tuple[np.ndarray, ...]:
    """Per pixel centre, its ray: (H W, 3) unit directions in the optical frame, and the
    per-column (W,) and per-row (H,) bounds of the undistorted x / z and y / z."""
    u, v = np.meshgrid(np.arange(config.width, dtype=np.float64),
                       np.arange(config.height, dtype=np.float64))
    xd, yd = (u - config.cx) / config.fx, (v - config.cy) / config.fy
    x, y = xd.copy(), yd.copy()
    if any(config.D):
        k1, k2, p1, p2, k3 = (tuple(config.D) + (0.0,) * 5)[:5]
        for _ in range(30):  # fixed-point inversion of the plumb_bob model
            r2 = x * x + y * y
            radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
            dx = 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
            dy = p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
            x, y = (xd - dx) / radial, (yd - dy) / radial
    d = np.stack((x.ravel(), y.ravel(), np.ones(x.size)), axis=1)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return d, x.min(axis=0), x.max(axis=0), y.min(axis=1), y.max(axis=1)


class PinholeGrid:
    """The rays of one camera image, the camera mounted on the LiDAR at pose."""

    def __init__(self, config: CameraConfig, pose: np.ndarray) -> None:
        self.width = config.width
        # Bounds of the normalised coordinates per column and per row bound every window.
        self.dirs_cam, self.col_lo, self.col_hi, self.row_lo, self.row_hi = _pixel_rays(config)
        world_from_cam = pose @ np.linalg.inv(config.T_cam_lidar)
        self.rotation = world_from_cam[:3, :3]
        self.origin = world_from_cam[:3, 3].copy()
        self.dirs = self.dirs_cam @ self.rotation.T

    def window(self, corners: np.ndarray) -> np.ndarray:
        """Flat pixel indices whose rays may hit the hull of corners (8, 3), clipped at z_near."""
        c = (corners - self.origin) @ self.rotation  # optical frame
        front = c[:, 2] >= _NEAR
        if not front.any():
            return np.zeros(0, dtype=np.int64)
        pts = [c[front]]
        a, b = c[BOX_EDGES[:, 0]], c[BOX_EDGES[:, 1]]
        crossing = (a[:, 2] >= _NEAR) != (b[:, 2] >= _NEAR)
        if crossing.any():
            a, b = a[crossing], b[crossing]
            f = (_NEAR - a[:, 2]) / (b[:, 2] - a[:, 2])
            pts.append(a + f[:, None] * (b - a))
        p = np.concatenate(pts)
        xn, yn = p[:, 0] / p[:, 2], p[:, 1] / p[:, 2]
        cols = np.nonzero((self.col_hi >= xn.min()) & (self.col_lo <= xn.max()))[0]
        rows = np.nonzero((self.row_hi >= yn.min()) & (self.row_lo <= yn.max()))[0]
        return (rows[:, None] * self.width + cols[None, :]).ravel()


def render(
    prims: Primitives, town: TownConfig, pose: np.ndarray, config: CameraConfig,
    weather: WeatherConfig, imaging: ImagingConfig, rng: np.random.Generator,
) -> tuple[CameraView, np.ndarray]:
    """Render one camera on the LiDAR at pose (4 x 4 world_from_lidar).

    Returns the CameraView (H x W x 3 uint8 RGB with K, D and T_cam_lidar) and the H x W
    uint32 image of raw SemanticKITTI ids (0 where the pixel shows sky).
    """
    grid = PinholeGrid(config, pose)
    hits = cast(grid, prims, config.far, town)
    surf = surface(hits, hits.points(grid), prims, town)
    rgb = shade(surf.albedo, hits.normal, sun_direction(town))
    rgb[hits.prim == SKY] = sky(grid.dirs[hits.prim == SKY])
    rgb = haze(rgb, hits.t, weather)
    shape = (config.height, config.width)
    view = CameraView(
        name=config.name, image=develop(rgb.reshape(*shape, 3), imaging, rng), K=config.K,
        T_cam_lidar=config.T_cam_lidar, D=np.asarray(config.D, dtype=np.float64),
        frame_id=f"{config.name}_optical_frame",
    )
    return view, surf.labels.reshape(shape)
