"""Cloud-master synchroniser: pairs each LiDAR cloud with every camera's image and CameraInfo.

Pure Python and clock-free: the caller passes every stamp, each cloud's arrival time and
`now` on the same clock as the arrivals (the node a steady clock; the offline evaluator the
bag's receive time), so the node and the evaluator pair frames identically. Messages are
opaque objects; only their stamps are used.

Rules:
- The cloud is the master. Per camera, the image nearest the cloud stamp with
  |dt| <= slop is its match. The match is final once an image stamped at or after the
  cloud has arrived (later images are further away) or the window has passed.
- An image pairs with the CameraInfo of the same stamp; when none has that stamp (settled
  once a later-stamped info arrives, or at timeout) the most recently received info is used.
  A camera with no info at all counts as missing.
- A cloud is released when every camera is settled (matched, or certainly unmatched), or
  when now - arrival > timeout (pending cameras use what is there, else they are missing).
  The wait runs from the cloud's arrival, not its stamp: stamps that lag the receiver's
  clock (a bag played without --clock, a LiDAR without PTP) still give images their time.
  Frames come out in stamp order; a cloud at or before the last released stamp is dropped.
- The same image may serve two clouds (a camera slower than the LiDAR).
- Queues hold at most queue_size messages each; the oldest is dropped and counted.
- A stamp earlier than the latest one seen on its input by more than slop + 1 s is a clock
  jump (a looped bag): every queue is cleared and the jump counted.
"""
from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field
from typing import Any

_NS = 1_000_000_000


@dataclass
class CameraPair:
    """One camera's part of a frame; info_exact is False when the latest info stood in."""

    image: Any
    info: Any
    image_stamp_ns: int
    info_exact: bool


@dataclass
class SyncedFrame:
    """A cloud and, per configured camera (in configuration order), its pair or None."""

    stamp_ns: int
    cloud: Any
    cameras: dict[str, CameraPair | None] = field(default_factory=dict)

    @property
    def missing(self) -> list[str]:
        """Cameras without a pair in this frame."""
        return [name for name, pair in self.cameras.items() if pair is None]


class FrameSynchronizer:
    """Approximate-time pairing of clouds with per-camera (image, info); see module doc."""

    def __init__(self, cameras: list[str], slop_s: float = 0.05, queue_size: int = 10,
                 timeout_s: float = 0.2) -> None:
        if len(set(cameras)) != len(cameras):
            raise ValueError(f"camera names must be unique, got {cameras}")
        if slop_s < 0 or timeout_s < 0 or queue_size < 1:
            raise ValueError(
                f"need slop_s >= 0, timeout_s >= 0, queue_size >= 1; got {slop_s}, "
                f"{timeout_s}, {queue_size}")
        self._cameras = list(cameras)
        self._slop = round(slop_s * _NS)
        self._timeout = round(timeout_s * _NS)
        self._jump = self._slop + _NS
        self._queue_size = queue_size
        self._clouds: list[tuple[int, Any]] = []  # sorted by stamp
        self._arrival: dict[int, int] = {}  # queued cloud stamp -> its arrival time
        self._images: dict[str, deque[tuple[int, Any]]] = {c: deque() for c in cameras}
        self._infos: dict[str, deque[tuple[int, Any]]] = {c: deque() for c in cameras}
        # kept by clear(): a calibration stays valid across a time jump
        self._latest_info: dict[str, Any] = {}
        self._last_released: int | None = None
        self._latest_seen: dict[str, int] = {}  # input -> largest stamp seen
        self._last_stamp: dict[str, int] = {}
        inputs = ["cloud"] + [f"{c}/{kind}" for c in cameras for kind in ("image", "camera_info")]
        self._received = dict.fromkeys(inputs, 0)
        self._dropped = dict.fromkeys(inputs, 0)
        self._gap: dict[str, int | None] = dict.fromkeys(inputs)
        self._frames = {"complete": 0, "partial": 0, "lidar_only": 0, "timed_out": 0}
        self._clock_jumps = 0

    def add_cloud(self, stamp_ns: int, cloud: Any, arrival_ns: int) -> None:
        """Queue a cloud that arrived at `arrival_ns` (the clock of `poll`'s `now`); a late
        one (at or before the last release) or a repeat is dropped."""
        stamp_ns = self._arrive("cloud", stamp_ns)
        stamps = [s for s, _ in self._clouds]
        late = self._last_released is not None and stamp_ns <= self._last_released
        if late or stamp_ns in stamps:
            self._dropped["cloud"] += 1
            return
        self._clouds.insert(bisect.bisect(stamps, stamp_ns), (stamp_ns, cloud))
        self._arrival[stamp_ns] = int(arrival_ns)
        if len(self._clouds) > self._queue_size:
            self._arrival.pop(self._clouds.pop(0)[0])
            self._dropped["cloud"] += 1

    def add_image(self, cam: str, stamp_ns: int, image: Any) -> None:
        """Queue an image of camera `cam`."""
        self._push(self._images, cam, "image", stamp_ns, image)

    def add_camera_info(self, cam: str, stamp_ns: int, info: Any) -> None:
        """Queue a CameraInfo of camera `cam`; it also becomes that camera's latest info."""
        self._push(self._infos, cam, "camera_info", stamp_ns, info)
        self._latest_info[cam] = info

    def poll(self, now_ns: int) -> list[SyncedFrame]:
        """Release, in stamp order, every cloud that is settled or has waited longer than the
        timeout since its arrival (`now_ns` on the arrivals' clock)."""
        now_ns = int(now_ns)
        released = []
        while (frame := self._release_head(now_ns)) is not None:
            released.append(frame)
        return released

    def flush(self) -> list[SyncedFrame]:
        """Release every queued cloud now with what has arrived (end of a bag)."""
        released = []
        while (frame := self._release_head(None)) is not None:
            released.append(frame)
        return released

    def clear(self) -> None:
        """Drop every queued message (counted) and forget the stamps seen; counters stay.

        The latest CameraInfo per camera is kept (calibration does not change with time).
        """
        self._dropped["cloud"] += len(self._clouds)
        self._clouds.clear()
        self._arrival.clear()
        for cam in self._cameras:
            self._dropped[f"{cam}/image"] += len(self._images[cam])
            self._dropped[f"{cam}/camera_info"] += len(self._infos[cam])
            self._images[cam].clear()
            self._infos[cam].clear()
        self._last_released = None
        self._latest_seen.clear()
        self._last_stamp.clear()

    def stats(self) -> dict[str, Any]:
        """Counters as a JSON-ready dict.

        received / dropped / last_gap_ns: per input ("cloud", "CAM/image",
        "CAM/camera_info"); last_gap_ns is the stamp difference of the last two messages
        (None before two). frames_*: released clouds by how many cameras they carry
        (complete = all, lidar_only = none, partial = some), frames_dropped = clouds never
        released, frames_timed_out = released by the timeout with a camera still pending.
        """
        return {
            "received": dict(self._received),
            "dropped": dict(self._dropped),
            "last_gap_ns": dict(self._gap),
            "frames_complete": self._frames["complete"],
            "frames_partial": self._frames["partial"],
            "frames_lidar_only": self._frames["lidar_only"],
            "frames_dropped": self._dropped["cloud"],
            "frames_timed_out": self._frames["timed_out"],
            "clock_jumps": self._clock_jumps,
            "pending_clouds": len(self._clouds),
        }

    def _push(self, queues: dict[str, deque[tuple[int, Any]]], cam: str, kind: str,
              stamp_ns: int, msg: Any) -> None:
        if cam not in queues:
            raise KeyError(f"unknown camera {cam!r} (configured: {self._cameras})")
        key = f"{cam}/{kind}"
        stamp_ns = self._arrive(key, stamp_ns)
        queue = queues[cam]
        if queue and stamp_ns < queue[-1][0]:  # out of order: keep the queue sorted
            stamps = [s for s, _ in queue]
            queue.insert(bisect.bisect(stamps, stamp_ns), (stamp_ns, msg))
        else:
            queue.append((stamp_ns, msg))
        if len(queue) > self._queue_size:
            queue.popleft()
            self._dropped[key] += 1

    def _arrive(self, key: str, stamp_ns: int) -> int:
        """Count a message on input `key`, record its stamp gap, detect a jump back."""
        stamp_ns = int(stamp_ns)
        self._received[key] += 1
        self._check_jump(key, stamp_ns)
        if key in self._last_stamp:
            self._gap[key] = stamp_ns - self._last_stamp[key]
        self._last_stamp[key] = stamp_ns
        return stamp_ns

    def _check_jump(self, key: str, stamp_ns: int) -> None:
        latest = self._latest_seen.get(key)
        if latest is not None and stamp_ns < latest - self._jump:
            self._clock_jumps += 1
            self.clear()
        self._latest_seen[key] = max(self._latest_seen.get(key, stamp_ns), stamp_ns)

    def _release_head(self, now_ns: int | None) -> SyncedFrame | None:
        """The first queued cloud as a frame; None when there is none or it must wait.

        now_ns None (flush) releases it whatever is pending, without counting a timeout.
        """
        if not self._clouds:
            return None
        stamp, cloud = self._clouds[0]
        force = now_ns is None or now_ns - self._arrival[stamp] > self._timeout
        decided = {cam: self._match(cam, stamp) for cam in self._cameras}
        pending = [cam for cam, (_, settled) in decided.items() if not settled]
        if pending and not force:
            return None
        self._clouds.pop(0)
        del self._arrival[stamp]
        self._last_released = stamp
        frame = SyncedFrame(stamp, cloud, {cam: pair for cam, (pair, _) in decided.items()})
        present = len(self._cameras) - len(frame.missing)
        kind = ("complete" if present == len(self._cameras)
                else "lidar_only" if present == 0 else "partial")
        self._frames[kind] += 1
        if pending and now_ns is not None:
            self._frames["timed_out"] += 1
        self._prune(stamp - self._slop)
        return frame

    def _match(self, cam: str, stamp: int) -> tuple[CameraPair | None, bool]:
        """(best pair available now or None, settled) for camera `cam`, cloud at `stamp`.

        Settled means no message still to come can change the answer.
        """
        images = self._images[cam]
        image_settled = any(s >= stamp for s, _ in images)
        candidates = [(abs(s - stamp), s, img) for s, img in images if abs(s - stamp) <= self._slop]
        if not candidates:
            return None, image_settled
        _, image_stamp, image = min(candidates, key=lambda c: (c[0], c[1]))
        exact = [info for s, info in self._infos[cam] if s == image_stamp]
        if exact:
            return CameraPair(image, exact[-1], image_stamp, True), image_settled
        latest = self._latest_info.get(cam)
        if latest is None:
            return None, False
        # an exact info can no longer arrive once a later-stamped one has
        info_settled = any(s > image_stamp for s, _ in self._infos[cam])
        return CameraPair(image, latest, image_stamp, False), image_settled and info_settled

    def _prune(self, oldest_useful: int) -> None:
        """Forget images and infos too old to pair with any later cloud (not counted)."""
        for queues in (self._images, self._infos):
            for queue in queues.values():
                while queue and queue[0][0] < oldest_useful:
                    queue.popleft()
