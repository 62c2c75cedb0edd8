"""Lockstep bag replay through a running adapt_node over DDS, and collection of its outputs.

The player publishes a bag's own serialized messages, deserialized with rclpy into rclpy
message types, one frame at a time: a Clock message at the frame's stamp (the node runs on
sim time), then per camera its image and CameraInfo, then the cloud. It waits until the
node's `~/labeled_points` and `~/stats` for that stamp (and `~/CAM/mask` for the cameras
the node paired) have arrived before it sends the next frame, so no frame is dropped however
slow the node is. A frame is the set of messages sharing one bag time (`write_drive_bag`
gives every message its header stamp as bag time).
"""
from __future__ import annotations

import importlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Reader
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from .bag import POINTS_TOPIC, image_topic, info_topic
from .convert_base import message_bytes
from .pointcloud import POINTFIELD_NUMPY

_NS = 1_000_000_000
_RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


class ReplayError(RuntimeError):
    """The node did not become ready, did not answer a frame, or answered wrongly."""


@dataclass
class ReplayFrame:
    """One frame to publish: (topic, rclpy message) in publish order (per camera its image
    and info, the cloud last), all stamped `stamp_ns`."""

    stamp_ns: int
    messages: list[tuple[str, Any]]


@dataclass
class FrameOutput:
    """What the node published for one frame (stamps are the bag's, before any offset).

    labels: (N,) uint16 train ids; xyz: (N, 3) float32 as echoed by the node; stats: the
    ~/stats JSON; masks: camera -> H x W uint8 class ids; latency_ms: wall time from
    publishing the cloud to receiving its ~/labeled_points.
    """

    stamp_ns: int
    labels: np.ndarray
    xyz: np.ndarray
    stats: dict
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    latency_ms: float = float("nan")


def _msg_class(msgtype: str) -> type:
    """'sensor_msgs/msg/Image' -> sensor_msgs.msg.Image."""
    package, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


def _set_stamp(msg: Any, stamp_ns: int) -> None:
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp_ns), _NS)


def stamp_ns(msg: Any) -> int:
    """A message's header stamp in nanoseconds."""
    return int(msg.header.stamp.sec) * _NS + int(msg.header.stamp.nanosec)


def bag_frames(path: str | Path, cameras: Sequence[str] = ("camera",), offset_ns: int = 0
               ) -> Iterator[ReplayFrame]:
    """The bag's frames in time order, streamed: every bag time that has a cloud gives one
    frame with that time's camera messages. offset_ns is added to every header stamp (a
    second pass of the same bag must not look older than the first to the node)."""
    order = [t for cam in cameras for t in (image_topic(cam), info_topic(cam))] + [POINTS_TOPIC]
    with Reader(Path(path)) as reader:
        conns = [c for c in reader.connections if c.topic in order]
        if not any(c.topic == POINTS_TOPIC for c in conns):
            raise ReplayError(f"{path} has no {POINTS_TOPIC} topic to replay")
        classes = {c.topic: _msg_class(c.msgtype) for c in conns}
        group: dict[str, Any] = {}
        group_time = None
        for conn, bag_time, raw in reader.messages(connections=conns):
            if bag_time != group_time:
                if POINTS_TOPIC in group:
                    yield _frame(group, order)
                group, group_time = {}, bag_time
            msg = deserialize_message(bytes(raw), classes[conn.topic])
            _set_stamp(msg, stamp_ns(msg) + offset_ns)
            group[conn.topic] = msg
        if POINTS_TOPIC in group:
            yield _frame(group, order)


def _frame(group: dict[str, Any], order: list[str]) -> ReplayFrame:
    return ReplayFrame(stamp_ns(group[POINTS_TOPIC]),
                       [(t, group[t]) for t in order if t in group])


def cloud_columns(msg: PointCloud2, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Named fields of a PointCloud2 as flat (height * width,) arrays, read through the
    message's own field table (offsets, point_step, byte order)."""
    fields = {f.name: f for f in msg.fields}
    missing = [n for n in names if n not in fields]
    if missing:
        raise ReplayError(f"cloud lacks fields {missing}; it has {sorted(fields)}")
    order = ">" if msg.is_bigendian else "<"
    dtype = np.dtype({"names": list(names),
                      "formats": [order + POINTFIELD_NUMPY[fields[n].datatype] for n in names],
                      "offsets": [fields[n].offset for n in names],
                      "itemsize": msg.point_step})
    buf = message_bytes(msg.data, "PointCloud2")
    rows = np.ndarray((msg.height, msg.width), dtype=dtype, buffer=buf,
                      strides=(msg.row_step, msg.point_step))
    return {n: np.ascontiguousarray(rows[n]).reshape(-1) for n in names}


def mono8(msg: Image) -> np.ndarray:
    """A mono8 Image as H x W uint8 (row padding dropped)."""
    data = message_bytes(msg.data, "Image").reshape(msg.height, msg.step)
    return data[:, :msg.width].copy()


class _Collector:
    """Outputs by (offset) stamp; thread-safe, fed by subscription callbacks."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.labeled: dict[int, tuple[PointCloud2, float]] = {}
        self.stats: dict[int, dict] = {}
        self.masks: dict[int, dict[str, Image]] = {}

    def on_labeled(self, msg: PointCloud2) -> None:
        with self.cond:
            self.labeled[stamp_ns(msg)] = (msg, time.monotonic())
            self.cond.notify_all()

    def on_stats(self, msg: String) -> None:
        payload = json.loads(msg.data)
        stamp = payload["stamp"]["sec"] * _NS + payload["stamp"]["nanosec"]
        with self.cond:
            self.stats[stamp] = payload
            self.cond.notify_all()

    def on_mask(self, cam: str, msg: Image) -> None:
        with self.cond:
            self.masks.setdefault(stamp_ns(msg), {})[cam] = msg
            self.cond.notify_all()

    def complete(self, stamp: int) -> bool:
        """Cloud, stats and a mask for every camera the node paired have arrived."""
        if stamp not in self.labeled or stamp not in self.stats:
            return False
        return set(self.stats[stamp].get("cameras", [])) <= set(self.masks.get(stamp, {}))


class LockstepPlayer:
    """Publishes frames to `points`, `CAM/image`, `CAM/camera_info` and `clock`, and
    collects `NODE/labeled_points`, `NODE/stats` and `NODE/CAM/mask` of the node named
    `node_name`, all in `namespace` (the node under test is started there, its /clock
    remapped to NAMESPACE/clock, so the demo never meets another ROS graph's topics).

    Owns its rclpy context and a spinning executor thread; `close()` ends both.
    """

    def __init__(self, namespace: str = "/", node_name: str = "tttkd_adapt",
                 cameras: Sequence[str] = ("camera",)) -> None:
        self.cameras = list(cameras)
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = Node("tttkd_demo_player", namespace=namespace, context=self.context)
        self.collector = c = _Collector()
        types: dict[str, type] = {POINTS_TOPIC: PointCloud2}
        for cam in self.cameras:
            types.update({image_topic(cam): Image, info_topic(cam): CameraInfo})
        # bag topics are absolute; here they are taken relative to the namespace
        self.pubs = {t: self.node.create_publisher(cls, t.lstrip("/"), _RELIABLE)
                     for t, cls in types.items()}
        self.pub_clock = self.node.create_publisher(Clock, "clock", _RELIABLE)
        self.target = self.node.resolve_topic_name(node_name)
        self.outputs = [f"{self.target}/labeled_points", f"{self.target}/stats"]
        self.node.create_subscription(PointCloud2, self.outputs[0], c.on_labeled, _RELIABLE)
        self.node.create_subscription(String, self.outputs[1], c.on_stats, _RELIABLE)
        for cam in self.cameras:
            topic = f"{self.target}/{cam}/mask"
            self.outputs.append(topic)
            self.node.create_subscription(Image, topic, lambda m, k=cam: c.on_mask(k, m),
                                          _RELIABLE)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.executor.shutdown()
        self.thread.join(timeout=10)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)

    # -- readiness and services ------------------------------------------------------------

    def connected(self) -> bool:
        """The node subscribes every input and /clock and publishes every collected output
        (it subscribes only after loading and warming up)."""
        pubs = [*self.pubs.values(), self.pub_clock]
        return (all(p.get_subscription_count() > 0 for p in pubs)
                and all(self.node.count_publishers(t) > 0 for t in self.outputs))

    def wait_ready(self, timeout_s: float, alive: Callable[[], bool] = lambda: True) -> None:
        """Until connected and both services answer; ReplayError when the node process
        dies (`alive()` false) or timeout_s passes."""
        deadline = time.monotonic() + timeout_s
        while not self.connected():
            if not alive():
                raise ReplayError("adapt_node exited before it was ready")
            if time.monotonic() > deadline:
                raise ReplayError(f"adapt_node was not ready within {timeout_s:.0f} s "
                                  f"(its topics {self.outputs} did not all appear)")
            time.sleep(0.1)
        for srv_type, name in ((SetBool, "enable_adaptation"), (Trigger, "reset")):
            client = self.node.create_client(srv_type, f"{self.target}/{name}")
            ok = client.wait_for_service(timeout_sec=max(1.0, deadline - time.monotonic()))
            self.node.destroy_client(client)
            if not ok:
                raise ReplayError(f"service {self.target}/{name} did not appear")

    def _call(self, srv_type: type, name: str, request: Any, timeout_s: float) -> Any:
        client = self.node.create_client(srv_type, f"{self.target}/{name}")
        try:
            if not client.wait_for_service(timeout_sec=timeout_s):
                raise ReplayError(f"service {self.target}/{name} is not available")
            future = client.call_async(request)
            done = threading.Event()
            future.add_done_callback(lambda _: done.set())
            if not done.wait(timeout_s):
                raise ReplayError(f"service {self.target}/{name} did not answer in "
                                  f"{timeout_s:.0f} s")
            response = future.result()
        finally:
            self.node.destroy_client(client)
        if not response.success:
            raise ReplayError(f"{self.target}/{name} refused: {response.message}")
        return response

    def enable_adaptation(self, enabled: bool, timeout_s: float = 60.0) -> str:
        """Call ~/enable_adaptation; returns the node's message."""
        return self._call(SetBool, "enable_adaptation", SetBool.Request(data=enabled),
                          timeout_s).message

    def reset(self, timeout_s: float = 60.0) -> str:
        """Call ~/reset (back to the source weights); returns the node's message."""
        return self._call(Trigger, "reset", Trigger.Request(), timeout_s).message

    # -- replay ----------------------------------------------------------------------------

    def play(self, frames: Iterable[ReplayFrame], offset_ns: int = 0,
             frame_timeout_s: float = 120.0, alive: Callable[[], bool] = lambda: True,
             progress: Callable[[], None] = lambda: None) -> list[FrameOutput]:
        """Publish each frame and wait for its outputs before the next (lockstep).

        offset_ns: the offset the frames' stamps carry (see `bag_frames`); outputs are keyed
        by the stamp without it. `progress()` is called after each frame. Raises ReplayError
        when a frame's outputs do not arrive within frame_timeout_s or the node dies.
        """
        results = []
        for index, frame in enumerate(frames):
            clock = Clock()
            clock.clock.sec, clock.clock.nanosec = divmod(frame.stamp_ns, _NS)
            self.pub_clock.publish(clock)
            for topic, msg in frame.messages[:-1]:
                self.pubs[topic].publish(msg)
            sent = time.monotonic()
            self.pubs[frame.messages[-1][0]].publish(frame.messages[-1][1])
            self._wait(index, frame.stamp_ns, frame_timeout_s, alive)
            results.append(self._take(frame.stamp_ns, offset_ns, sent))
            progress()
        return results

    def _wait(self, index: int, stamp: int, timeout_s: float, alive: Callable[[], bool]
              ) -> None:
        deadline = time.monotonic() + timeout_s
        c = self.collector
        with c.cond:
            while not c.complete(stamp):
                if not alive():
                    raise ReplayError(f"adapt_node exited during frame {index}")
                left = deadline - time.monotonic()
                if left <= 0:
                    got = [name for name, have in (("labeled_points", stamp in c.labeled),
                                                   ("stats", stamp in c.stats)) if have]
                    raise ReplayError(
                        f"adapt_node did not answer frame {index} (stamp "
                        f"{stamp / _NS:.3f} s) within {timeout_s:.0f} s; received: "
                        f"{', '.join(got) or 'nothing'}. It may be too slow for this "
                        "machine or stuck; see its log")
                c.cond.wait(min(left, 0.5))

    def _take(self, stamp: int, offset_ns: int, sent: float) -> FrameOutput:
        c = self.collector
        with c.cond:
            cloud, received = c.labeled.pop(stamp)
            stats = c.stats.pop(stamp)
            masks = c.masks.pop(stamp, {})
        cols = cloud_columns(cloud, ["x", "y", "z", "label"])
        xyz = np.stack([cols["x"], cols["y"], cols["z"]], axis=1)
        return FrameOutput(stamp - offset_ns, cols["label"].astype(np.uint16), xyz, stats,
                           {cam: mono8(m) for cam, m in masks.items()},
                           (received - sent) * 1e3)
