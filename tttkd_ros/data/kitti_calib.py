"""KITTI odometry calibration and poses, as SemanticKITTI ships them.

calib.txt holds `KEY: v1 ... v12` lines: P0..P3 are the 3 x 4 projection matrices of the
rectified cameras (P_i = K_i [I | t_i], t_i the offset of camera i from cam0 in cam0's axes,
e.g. P2[0, 3] = fx * 0.06 for KITTI's cam2) and Tr is velodyne -> cam0, 3 x 4 row-major.
So T_cam_i_lidar = [I | K_i^-1 P_i[:, 3]] @ Tr. poses.txt holds one 3 x 4 cam0 pose per
line, cam0_ref_from_cam0_i; the LiDAR pose is Tr^-1 @ P @ Tr.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def parse_calib(path: Path) -> dict[str, np.ndarray]:
    """KEY -> 4 x 4 (12 values, last row 0 0 0 1) or a flat array (any other count)."""
    calib: dict[str, np.ndarray] = {}
    for line in Path(path).read_text().splitlines():
        key, sep, values = line.partition(":")
        if not sep:
            continue
        numbers = np.array([float(v) for v in values.split()], dtype=np.float64)
        if numbers.size == 12:
            numbers = np.vstack((numbers.reshape(3, 4), [0.0, 0.0, 0.0, 1.0]))
        calib[key.strip()] = numbers
    if "Tr" not in calib and "Tr_velo_to_cam" in calib:  # KITTI raw's spelling
        calib["Tr"] = calib["Tr_velo_to_cam"]
    return calib


def camera_from_projection(P: np.ndarray, Tr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K 3 x 3, T_cam_lidar 4 x 4) of a rectified camera from its P (3 x 4 or 4 x 4) and Tr."""
    K = P[:3, :3].copy()
    offset = np.eye(4)
    offset[:3, 3] = np.linalg.solve(K, P[:3, 3])
    return K, offset @ Tr


def projection_for_camera(K: np.ndarray, T_cam_lidar: np.ndarray, Tr: np.ndarray) -> np.ndarray:
    """P (3 x 4) expressing a camera against Tr; its axes must be parallel to cam0's."""
    offset = T_cam_lidar @ np.linalg.inv(Tr)
    if not np.allclose(offset[:3, :3], np.eye(3), atol=1e-9):
        raise ValueError("KITTI calib.txt can only express cameras rectified to cam0 "
                         "(same rotation); this camera is rotated relative to the first one")
    return K @ np.hstack((np.eye(3), offset[:3, 3:4]))


def format_calib(entries: dict[str, np.ndarray]) -> str:
    """calib.txt text; values with 17 significant digits so they read back exactly."""
    lines = [f"{key}: " + " ".join(f"{v:.16e}" for v in np.asarray(m)[:3].ravel())
             for key, m in entries.items()]
    return "\n".join(lines) + "\n"


def lidar_poses(cam0_poses: np.ndarray, Tr: np.ndarray) -> np.ndarray:
    """poses.txt rows (n, 12) -> (n, 4, 4) world_from_lidar."""
    P = np.tile(np.eye(4), (len(cam0_poses), 1, 1))
    P[:, :3, :] = cam0_poses.reshape(-1, 3, 4)
    return np.linalg.inv(Tr) @ P @ Tr


def cam0_poses(lidar: np.ndarray, Tr: np.ndarray) -> np.ndarray:
    """(n, 4, 4) world_from_lidar -> poses.txt rows (n, 12)."""
    return (Tr @ lidar @ np.linalg.inv(Tr))[:, :3, :].reshape(-1, 12)
