"""A tf transform tree from TFMessage-like messages, numpy only (no rclpy, no tf2).

Why: reading a bag offline must work without a ROS install (no tf2_ros), yet robots record
their extrinsics as a tree on /tf_static and /tf (base_link -> velodyne, base_link ->
camera_link -> camera_color_optical_frame), seldom as one direct LiDAR -> camera transform.

The conventions are tf2's: a TransformStamped with header.frame_id P and child_frame_id C is
T_P_C (it maps points in C coordinates into P), each frame has one parent, and
`lookup(target, source, stamp)` is T_target_source, composed through the two frames' nearest
common ancestor. Static transforms hold at any time; dynamic ones are interpolated between
the two samples around the stamp (translation linearly, rotation by slerp), as tf2 does.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .extrinsics import extrinsic_matrix

_NS = 1_000_000_000


class TfLookupError(LookupError):
    """No transform between two frames: they are not connected, one is unknown, or a dynamic
    transform on the chain between them has no samples near the stamp."""


@dataclass
class _Edge:
    """The transform of one child frame: T_parent_child, fixed or sampled over time."""

    parent: str
    fixed: np.ndarray | None  # T_parent_child of a static transform, None for a dynamic one
    stamps: list[int] = field(default_factory=list)  # dynamic: ascending once `ordered`
    poses: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (xyz, quat)
    ordered: bool = True  # /tf is in receive order, which stamps need not follow

    def at(self, child: str, stamp_ns: int, tolerance_ns: int) -> np.ndarray:
        if self.fixed is not None:
            return self.fixed
        if not self.ordered:
            order = sorted(range(len(self.stamps)), key=self.stamps.__getitem__)
            self.stamps = [self.stamps[i] for i in order]
            self.poses = [self.poses[i] for i in order]
            self.ordered = True
        stamps, i = self.stamps, bisect.bisect_left(self.stamps, stamp_ns)
        if i < len(stamps) and stamps[i] == stamp_ns:
            return extrinsic_matrix(*self.poses[i])
        if 0 < i < len(stamps):
            r = (stamp_ns - stamps[i - 1]) / (stamps[i] - stamps[i - 1])
            (xyz0, q0), (xyz1, q1) = self.poses[i - 1], self.poses[i]
            return extrinsic_matrix(xyz0 + r * (xyz1 - xyz0), _slerp(q0, q1, r))
        nearest = 0 if i == 0 else len(stamps) - 1  # before the first or after the last
        if abs(stamp_ns - stamps[nearest]) > tolerance_ns:
            raise TfLookupError(
                f"no transform '{self.parent}' -> '{child}' at t={stamp_ns / _NS:.3f} s: its "
                f"{len(stamps)} dynamic samples span {stamps[0] / _NS:.3f} .. "
                f"{stamps[-1] / _NS:.3f} s and the tolerance is {tolerance_ns / _NS:.3f} s; "
                "look up a stamp within the samples, or pass a larger tolerance_s")
        return extrinsic_matrix(*self.poses[nearest])


def _slerp(q0: np.ndarray, q1: np.ndarray, r: float) -> np.ndarray:
    """Unit quaternion a fraction r of the way from q0 to q1, the short way round (q and -q
    are the same rotation)."""
    dot = float(np.dot(q0, q1))
    if dot < 0:
        q1, dot = -q1, -dot
    if dot > 0.9995:  # nearly equal: the sine ratios lose precision, a lerp is exact enough
        q = q0 + r * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = np.arccos(dot)
    return (np.sin((1 - r) * theta) * q0 + np.sin(r * theta) * q1) / np.sin(theta)


class TfTree:
    """Frames and their transforms from TFMessages; `lookup` gives T_target_source.

    tolerance_s: how far a stamp may lie before the first or after the last sample of a
    dynamic transform and still get that sample (a cloud stamped just before the first
    /tf message); further out the lookup is refused, since extrapolating a moving joint
    would give a wrong extrinsic.
    """

    def __init__(self, tolerance_s: float = 0.1) -> None:
        self.tolerance_ns = round(tolerance_s * _NS)
        self._edges: dict[str, _Edge] = {}  # child frame -> its transform from its parent

    def add(self, msg: Any, static: bool) -> None:
        """Add every transform of a TFMessage (rosbags or rclpy): static ones (/tf_static)
        replace the child's earlier one, dynamic ones (/tf) add a sample at their stamp.

        Recorded trees are not always clean, so this follows tf2 rather than refusing them: a
        frame given a new parent is re-parented (its old transform is dropped), and a frame
        that has a static transform ignores dynamic samples of it (some bags repeat fixed
        joints on /tf). Raises ValueError for a transform that is not finite or has a zero
        quaternion.
        """
        for t in msg.transforms:
            # tf2 drops a leading '/' (bags converted from ROS 1 have them)
            parent, child = str(t.header.frame_id).lstrip("/"), str(t.child_frame_id).lstrip("/")
            tr, rot = t.transform.translation, t.transform.rotation
            xyz = np.array([tr.x, tr.y, tr.z], dtype=np.float64)
            quat = np.array([rot.x, rot.y, rot.z, rot.w], dtype=np.float64)
            T = extrinsic_matrix(xyz, quat)  # raises ValueError for a bad transform
            edge = self._edges.get(child)
            if edge is not None and edge.parent != parent:
                edge = None  # re-parented
            if static:
                self._edges[child] = _Edge(parent, T)
                continue
            if edge is not None and edge.fixed is not None:
                continue  # the static transform stands
            if edge is None:
                edge = self._edges[child] = _Edge(parent, None)
            stamp = int(t.header.stamp.sec) * _NS + int(t.header.stamp.nanosec)
            edge.ordered = edge.ordered and (not edge.stamps or stamp >= edge.stamps[-1])
            edge.stamps.append(stamp)
            edge.poses.append((xyz, quat / np.linalg.norm(quat)))

    @property
    def frames(self) -> list[str]:
        """Every frame named by a transform, sorted."""
        return sorted({*self._edges, *(e.parent for e in self._edges.values())})

    def connected(self, frame: str) -> list[str]:
        """The other frames of `frame`'s tree, sorted; empty for an unknown frame."""
        root = self._ancestors(frame)[-1]
        return [f for f in self.frames if f != frame and self._ancestors(f)[-1] == root]

    def lookup(self, target_frame: str, source_frame: str, stamp_ns: int) -> np.ndarray:
        """4 x 4 float64 T_target_source: maps points in source_frame coordinates into
        target_frame, through parents and children alike, at `stamp_ns` for the dynamic
        transforms on the chain (static ones ignore it).

        Raises TfLookupError naming both frames and what each is connected to when no chain
        joins them, or naming the transform whose samples do not cover the stamp.
        """
        target_frame, source_frame = target_frame.lstrip("/"), source_frame.lstrip("/")
        up_source, up_target = self._ancestors(source_frame), self._ancestors(target_frame)
        common = next((f for f in up_source if f in up_target), None)
        if common is None:
            raise self._unconnected(target_frame, source_frame)
        T_common_source = self._compose(up_source[:up_source.index(common)], stamp_ns)
        T_common_target = self._compose(up_target[:up_target.index(common)], stamp_ns)
        return np.linalg.inv(T_common_target) @ T_common_source

    def _ancestors(self, frame: str) -> list[str]:
        """frame, its parent, its grandparent ... up to its tree's root (stopping at a loop)."""
        chain = [frame]
        while chain[-1] in self._edges and self._edges[chain[-1]].parent not in chain:
            chain.append(self._edges[chain[-1]].parent)
        return chain

    def _compose(self, chain: list[str], stamp_ns: int) -> np.ndarray:
        """T_ancestor_frame for chain = [frame, parent, ...] below that ancestor."""
        T = np.eye(4)
        for child in chain:
            T = self._edges[child].at(child, stamp_ns, self.tolerance_ns) @ T
        return T

    def _unconnected(self, target_frame: str, source_frame: str) -> TfLookupError:
        frames = self.frames

        def describe(frame: str) -> str:
            if frame not in frames:
                return f"'{frame}' is not in the tf tree"
            return f"'{frame}' connects to {self.connected(frame) or 'no other frame'}"

        text = (f"no tf chain from '{source_frame}' to '{target_frame}': "
                f"{describe(source_frame)}; {describe(target_frame)}")
        if source_frame not in frames or target_frame not in frames:
            text += f"; the known frames are {frames or 'none'}"
        return TfLookupError(text + "; look up two frames of one tree, or add the transform "
                                    "that joins their trees")
