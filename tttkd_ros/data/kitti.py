"""SemanticKITTI layout: read the real dataset's files, and write synthetic drives the same way.

    ROOT/sequences/SS/velodyne/NNNNNN.bin   float32 x, y, z, remission (N x 4)
                     labels/NNNNNN.label    uint32: semantic id (lower 16) | instance << 16
                     image_2/NNNNNN.png     left colour camera (absent in most copies)
                     image_3/NNNNNN.png     right colour camera (optional)
                     calib.txt, poses.txt, times.txt
    ROOT/semantic-kitti.yaml                label map (labels, color_map, learning_map, ...)

Camera names: image_2 is "camera" (the node's default camera namespace), image_3 is
"camera_right". Synthetic sequences put cam0 at cam2 (P0 = P2 = K [I | 0], Tr = T_cam2_lidar)
and, since KITTI images are rectified, store non-zero distortion in an extra
`distortion.txt` (`image_2: k1 k2 p1 p2 k3`) that other tools simply do not read.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from ..core.frame import CameraView, Frame
from ..core.labels import COLOR_MAP_BGR, LEARNING_MAP, LEARNING_MAP_INV, RAW_LABELS, LabelMap
from . import LIDAR_FRAME_ID
from .kitti_calib import (
    cam0_poses,
    camera_from_projection,
    format_calib,
    lidar_poses,
    parse_calib,
    projection_for_camera,
)

# image folder, projection key, camera name
KITTI_CAMERAS = (("image_2", "P2", "camera"), ("image_3", "P3", "camera_right"))


@dataclass
class KittiFrame:
    """One scan. points (N, 4) float32; labels (N,) uint32 semantic raw ids and instances
    (N,) uint32 instance ids, both None without a label file; cameras: one per image folder
    that has this frame's PNG; pose: 4 x 4 world_from_lidar or None without poses.txt."""

    points: np.ndarray
    labels: np.ndarray | None
    instances: np.ndarray | None
    cameras: list[CameraView]
    pose: np.ndarray | None
    index: int
    stamp_ns: int
    frame_id: str = LIDAR_FRAME_ID

    def to_frame(self) -> Frame:
        """The engine's input for this scan (labels stay with the KittiFrame)."""
        return Frame(points=self.points, cameras=list(self.cameras), stamp_ns=self.stamp_ns,
                     frame_id=self.frame_id)


class KittiSequence:
    """A sequence folder, read lazily frame by frame."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.scans = sorted((self.path / "velodyne").glob("*.bin"))
        if not self.scans:
            raise FileNotFoundError(f"no velodyne/*.bin scans under {self.path}")
        calib_file = self.path / "calib.txt"
        self.calib = parse_calib(calib_file) if calib_file.exists() else {}
        tr = self.calib.get("Tr", np.eye(4))
        self.poses = None
        if (self.path / "poses.txt").exists():
            rows = np.loadtxt(self.path / "poses.txt", ndmin=2)
            self.poses = lidar_poses(rows, tr)
        self.stamps = None
        if (self.path / "times.txt").exists():
            self.stamps = [int(Decimal(v) * 1_000_000_000)
                           for v in (self.path / "times.txt").read_text().split()]
        distortion_file = self.path / "distortion.txt"
        self.distortion = parse_calib(distortion_file) if distortion_file.exists() else {}

    def __len__(self) -> int:
        return len(self.scans)

    def __iter__(self) -> Iterator[KittiFrame]:
        return (self[i] for i in range(len(self)))

    def __getitem__(self, i: int) -> KittiFrame:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        scan = self.scans[i % len(self)]
        index = int(scan.stem)
        raw = np.fromfile(scan, dtype=np.float32)
        if raw.size % 4:
            raise ValueError(f"{scan}: size is not a multiple of 16 bytes")
        points = raw.reshape(-1, 4)
        labels = instances = None
        label_file = self.path / "labels" / f"{scan.stem}.label"
        if label_file.exists():
            packed = np.fromfile(label_file, dtype=np.uint32)
            if packed.size != len(points):
                raise ValueError(f"{label_file}: {packed.size} labels for {len(points)} points")
            labels, instances = packed & 0xFFFF, packed >> 16
        pose = None if self.poses is None else self.poses[index]
        stamp = self.stamps[index] if self.stamps else index * 100_000_000
        return KittiFrame(points, labels, instances, self._cameras(scan.stem), pose, index,
                          stamp)

    def _cameras(self, stem: str) -> list[CameraView]:
        views = []
        for folder, key, name in KITTI_CAMERAS:
            png = self.path / folder / f"{stem}.png"
            if not png.exists():
                continue
            if key not in self.calib or "Tr" not in self.calib:
                raise ValueError(f"{self.path}: {folder} needs {key} and Tr in calib.txt")
            K, T = camera_from_projection(self.calib[key], self.calib["Tr"])
            image = np.asarray(Image.open(png).convert("RGB"))
            views.append(CameraView(name=name, image=image, K=K, T_cam_lidar=T,
                                    D=self.distortion.get(folder, np.zeros(0)),
                                    frame_id=f"{name}_optical_frame"))
        return views


def sequence_dir(root: Path | str, seq: str | int) -> Path:
    """ROOT/sequences/SS; an int sequence is zero-padded to two digits."""
    name = f"{seq:02d}" if isinstance(seq, int) else str(seq)
    return Path(root) / "sequences" / name


def read_sequence(root: Path | str, seq: str | int) -> KittiSequence:
    """Open ROOT/sequences/SS written by SemanticKITTI or by `write_sequence`."""
    return KittiSequence(sequence_dir(root, seq))


def write_sequence(root: Path | str, seq: str | int, frames: Iterable) -> int:
    """Write frames (SynthFrame, KittiFrame or alike) as ROOT/sequences/SS; returns the count.

    Files are numbered from 000000 in iteration order. The calibration comes from the first
    frame with cameras (at most two, the second rectified to the first: image_2, image_3);
    later frames carry the same cameras or none (then they get no PNG, as in the dataset).
    """
    path = sequence_dir(root, seq)
    if any((path / "velodyne").glob("*.bin")):
        # Stale scans from an earlier, longer sequence would be read as part of this one.
        raise FileExistsError(f"{path} already holds scans; write to an empty sequence")
    (path / "velodyne").mkdir(parents=True, exist_ok=True)
    cameras: list[CameraView] = []
    tr, calib = _calibration(cameras)
    poses, stamps = [], []
    for i, frame in enumerate(frames):
        if frame.cameras and not cameras:
            cameras = list(frame.cameras)
            tr, calib = _calibration(cameras)  # fails early on cameras KITTI cannot express
        elif frame.cameras and len(frame.cameras) != len(cameras):
            raise ValueError(f"frame {i} has {len(frame.cameras)} cameras, earlier frames "
                             f"{len(cameras)}")
        _write_frame(path, f"{i:06d}", frame)
        poses.append(frame.pose)
        stamps.append(int(frame.stamp_ns))
    (path / "calib.txt").write_text(format_calib(calib))
    _write_distortion(path, cameras)
    if poses and all(p is not None for p in poses):
        np.savetxt(path / "poses.txt", cam0_poses(np.stack(poses), tr), fmt="%.16e")
    (path / "times.txt").write_text("".join(f"{s // 10**9}.{s % 10**9:09d}\n" for s in stamps))
    return len(stamps)


def _write_frame(path: Path, stem: str, frame) -> None:
    np.asarray(frame.points, dtype=np.float32).tofile(path / "velodyne" / f"{stem}.bin")
    if frame.labels is not None:
        (path / "labels").mkdir(exist_ok=True)
        packed = np.asarray(frame.labels, dtype=np.uint32) & 0xFFFF
        instances = getattr(frame, "instances", None)
        if instances is not None:
            packed |= np.asarray(instances, dtype=np.uint32) << 16
        packed.tofile(path / "labels" / f"{stem}.label")
    for (folder, _, _), view in zip(KITTI_CAMERAS, frame.cameras):
        (path / folder).mkdir(exist_ok=True)
        Image.fromarray(np.asarray(view.image, dtype=np.uint8)).save(path / folder / f"{stem}.png")


def check_camera_count(count: int) -> None:
    """ValueError when `count` cameras do not fit the layout's image folders."""
    if count > len(KITTI_CAMERAS):
        raise ValueError(f"the KITTI layout holds at most {len(KITTI_CAMERAS)} cameras, "
                         f"not {count}")


def _calibration(cameras: list[CameraView]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(Tr, calib.txt entries) with cam0 placed at the first camera."""
    check_camera_count(len(cameras))
    if not cameras:
        identity = np.eye(4)
        return identity, {"P0": identity, "P1": identity, "P2": identity, "P3": identity,
                          "Tr": identity}
    tr = np.asarray(cameras[0].T_cam_lidar, dtype=np.float64)
    p2 = np.hstack((np.asarray(cameras[0].K, dtype=np.float64), np.zeros((3, 1))))
    p3 = p2
    if len(cameras) > 1:
        p3 = projection_for_camera(np.asarray(cameras[1].K, dtype=np.float64),
                                   np.asarray(cameras[1].T_cam_lidar, dtype=np.float64), tr)
    return tr, {"P0": p2, "P1": p2, "P2": p2, "P3": p3, "Tr": tr}


def _write_distortion(path: Path, cameras: list[CameraView]) -> None:
    entries = {folder: np.asarray(v.D, dtype=np.float64)
               for (folder, _, _), v in zip(KITTI_CAMERAS, cameras) if np.any(v.D)}
    if entries:
        (path / "distortion.txt").write_text("".join(
            f"{folder}: " + " ".join(f"{c:.16e}" for c in d) + "\n"
            for folder, d in entries.items()))


def write_label_map(path: Path | str) -> None:
    """A label map YAML in the style of semantic-kitti.yaml (SemanticKITTI's ids and split)."""
    data = {
        "name": "kitti",
        "labels": dict(RAW_LABELS),
        "color_map": {k: list(v) for k, v in COLOR_MAP_BGR.items()},  # BGR, as the original
        "learning_map": dict(LEARNING_MAP),
        "learning_map_inv": dict(LEARNING_MAP_INV),
        "learning_ignore": {k: k == 0 for k in LEARNING_MAP_INV},
        "split": {"train": [0, 1, 2, 3, 4, 5, 6, 7, 9, 10], "valid": [8],
                  "test": list(range(11, 22))},
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False, default_flow_style=None))


def read_label_map(path: Path | str) -> dict:
    """The YAML label map as a dict (integer keys, as yaml loads them)."""
    return yaml.safe_load(Path(path).read_text())


def load_label_map(path: Path | str = "") -> LabelMap:
    """The class set of a label map YAML (semantic-kitti.yaml's format); SemanticKITTI's
    19 classes for an empty path. Raises ValueError / FileNotFoundError naming the file."""
    if not path:
        return LabelMap.semantic_kitti()
    return LabelMap.from_dict(read_label_map(path), str(path))
