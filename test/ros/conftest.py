"""Fixtures for the node tests: a small random-init checkpoint, synthetic synchronized
sensor messages, and a test-side ROS node ("rig") that feeds the adaptation node and collects
what it publishes.

Sizes are small so the CPU model and teacher are quick: ~2k points, 96 x 320 images and a
teacher input height of 56.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

N_POINTS = 2000
IMAGE_H, IMAGE_W = 96, 320
LIDAR_FRAME = "lidar_top"
CAMERA_FRAME = "camera_optical"
TEACHER_NAME = "vit_small_patch14_dinov2"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """launch_testing collects a launch test as a plain File item, which ignores the module's
    pytestmark; mark those items `dds` here (before the suite-wide hook reads the marker) so
    they too run only inside the loopback-only namespace."""
    for item in items:
        if type(item).__name__ == "LaunchTestItem":
            item.add_marker(pytest.mark.dds)


@pytest.fixture(scope="session")
def node_params(tiny_checkpoint: Path) -> dict[str, Any]:
    """Parameters every test node gets: CPU, a small teacher input, and a budget large
    enough that a slow shared test machine still takes its steps."""
    return {"checkpoint": str(tiny_checkpoint), "device": "cpu", "teacher.image_height": 56,
            "adaptation.budget_ms": 60000.0}


# -- synthetic messages ---------------------------------------------------------------------

def _header(stamp_ns: int, frame_id: str):
    from std_msgs.msg import Header

    h = Header(frame_id=frame_id)
    h.stamp.sec, h.stamp.nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return h


def make_cloud(stamp_ns: int, n: int = N_POINTS, seed: int = 0):
    """x, y, z, intensity FLOAT32 cloud ahead of the LiDAR (most points in the camera's
    view), packed here with numpy so the code under test does not build its own input."""
    from sensor_msgs.msg import PointCloud2, PointField

    rng = np.random.default_rng(seed)
    pts = np.empty(n, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4")])
    pts["x"] = rng.uniform(3, 30, n)
    pts["y"] = rng.uniform(-8, 8, n)
    pts["z"] = rng.uniform(-2, 2, n)
    pts["intensity"] = rng.uniform(0, 1, n)
    msg = PointCloud2(header=_header(stamp_ns, LIDAR_FRAME), height=1, width=n,
                      is_bigendian=False, point_step=16, row_step=16 * n, is_dense=True)
    msg.fields = [PointField(name=name, offset=4 * i, datatype=PointField.FLOAT32, count=1)
                  for i, name in enumerate(("x", "y", "z", "intensity"))]
    msg.data = pts.tobytes()
    return msg


def make_image(stamp_ns: int, seed: int = 0):
    from sensor_msgs.msg import Image

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(IMAGE_H, IMAGE_W, 3), dtype=np.uint8)
    return Image(header=_header(stamp_ns, CAMERA_FRAME), height=IMAGE_H, width=IMAGE_W,
                 encoding="rgb8", is_bigendian=0, step=3 * IMAGE_W, data=pixels.tobytes())


def make_camera_info(stamp_ns: int):
    """A pinhole camera, 90 degrees wide, matching make_image's size."""
    from sensor_msgs.msg import CameraInfo

    f = IMAGE_W / 2
    return CameraInfo(header=_header(stamp_ns, CAMERA_FRAME), height=IMAGE_H, width=IMAGE_W,
                      distortion_model="plumb_bob", d=[0.0] * 5,
                      k=[f, 0.0, IMAGE_W / 2, 0.0, f, IMAGE_H / 2, 0.0, 0.0, 1.0])


def stamp_of(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


# -- the rig --------------------------------------------------------------------------------

OUTPUTS = {  # short name -> (topic of the default-named node, message type name)
    "labeled": ("/tttkd_adapt/labeled_points", "PointCloud2"),
    "colored": ("/tttkd_adapt/colored_points", "PointCloud2"),
    "mask": ("/tttkd_adapt/camera/mask", "Image"),
    "mask_color": ("/tttkd_adapt/camera/mask_color", "Image"),
    "stats": ("/tttkd_adapt/stats", "String"),
    "diagnostics": ("/diagnostics", "DiagnosticArray"),
}


class Rig:
    """A test-side node: publishes points, camera/image, camera/camera_info and /clock, and
    records every message the adaptation node publishes (thread-safe, spun elsewhere)."""

    def __init__(self, context) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2
        from std_msgs.msg import String

        types = {"PointCloud2": PointCloud2, "Image": Image, "String": String,
                 "DiagnosticArray": DiagnosticArray}
        self.node = Node("test_rig", context=context)
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_points = self.node.create_publisher(PointCloud2, "/points", reliable)
        self.pub_image = self.node.create_publisher(Image, "/camera/image", reliable)
        self.pub_info = self.node.create_publisher(CameraInfo, "/camera/camera_info", reliable)
        self.pub_clock = self.node.create_publisher(Clock, "/clock", reliable)
        self._lock = threading.Lock()
        self.received: dict[str, list] = {name: [] for name in OUTPUTS}
        for name, (topic, type_name) in OUTPUTS.items():
            self.node.create_subscription(
                types[type_name], topic, lambda m, n=name: self._store(n, m), reliable)

    def _store(self, name: str, msg) -> None:
        with self._lock:
            self.received[name].append(msg)

    def messages(self, name: str) -> list:
        with self._lock:
            return list(self.received[name])

    def wait_connected(self, timeout: float = 30.0, sim_time: bool = False,
                       alive: Callable[[], bool] = lambda: True, inputs: list | None = None
                       ) -> None:
        """Until the node under test has matched every input (`inputs`, default the rig's
        points, image and camera_info publishers) and output of the rig (and /clock with
        sim_time). Fails early once `alive()` turns false."""
        pubs = list(inputs or [self.pub_points, self.pub_image, self.pub_info])
        if sim_time:
            pubs.append(self.pub_clock)
        names = [topic for topic, _ in OUTPUTS.values()]
        def connected() -> bool:
            return (all(p.get_subscription_count() for p in pubs)
                    and all(self.node.count_publishers(t) for t in names))

        ok = self.wait_until(lambda: not alive() or connected(), timeout)
        assert ok and alive(), "the adaptation node's topics did not appear"

    def clock(self, stamp_ns: int) -> None:
        from rosgraph_msgs.msg import Clock

        msg = Clock()
        msg.clock.sec, msg.clock.nanosec = divmod(int(stamp_ns), 1_000_000_000)
        self.pub_clock.publish(msg)

    def publish_frame(self, stamp_ns: int, camera: bool = True, seed: int = 0):
        """Publish CameraInfo and Image (if `camera`), then the cloud, all at stamp_ns."""
        cloud = make_cloud(stamp_ns, seed=seed)
        if camera:
            self.pub_info.publish(make_camera_info(stamp_ns))
            self.pub_image.publish(make_image(stamp_ns, seed=seed))
        self.pub_points.publish(cloud)
        return cloud

    def wait_for(self, name: str, stamp_ns: int, timeout: float = 30.0,
                 resend: Callable[[], None] | None = None):
        """The first `name` message stamped stamp_ns; `resend` is called every 2 s meanwhile
        (inputs are best-effort; a resent frame with the same stamp is ignored by the node)."""
        deadline = time.monotonic() + timeout
        next_send = 0.0
        while time.monotonic() < deadline:
            for msg in self.messages(name):
                if stamp_of(msg) == stamp_ns:
                    return msg
            if resend is not None and time.monotonic() >= next_send:
                resend()
                next_send = time.monotonic() + 2.0
            time.sleep(0.05)
        raise AssertionError(f"no {name} message stamped {stamp_ns} within {timeout} s")

    def stats_for(self, stamp_ns: int, **kwargs) -> dict:
        """The ~/stats JSON of the frame stamped stamp_ns."""
        deadline = time.monotonic() + kwargs.pop("timeout", 30.0)
        while time.monotonic() < deadline:
            for msg in self.messages("stats"):
                payload = json.loads(msg.data)
                stamp = payload["stamp"]
                if stamp["sec"] * 1_000_000_000 + stamp["nanosec"] == stamp_ns:
                    return payload
            time.sleep(0.05)
        raise AssertionError(f"no stats for stamp {stamp_ns}")

    def call(self, srv_type, name: str, request, timeout: float = 30.0):
        """Call a service (the rig is spun by the executor thread) and return the response."""
        client = self.node.create_client(srv_type, name)
        try:
            assert client.wait_for_service(timeout_sec=timeout), f"service {name} not available"
            future = client.call_async(request)
            assert self.wait_until(future.done, timeout), f"service {name} did not answer"
            return future.result()
        finally:
            self.node.destroy_client(client)

    def set_parameters(self, node_name: str, values: dict[str, Any]) -> list:
        """Set parameters of `node_name` through its set_parameters service; returns the
        SetParametersResult list."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        request = SetParameters.Request(parameters=[
            Parameter(name, value=value).to_parameter_msg()
            for name, value in values.items()])
        return self.call(SetParameters, f"/{node_name}/set_parameters", request).results

    @staticmethod
    def cloud_array(msg) -> np.ndarray:
        """A PointCloud2 as a numpy structured array read from its own field table."""
        types = {2: "u1", 4: "<u2", 6: "<u4", 7: "<f4", 8: "<f8"}
        dtype = np.dtype({"names": [f.name for f in msg.fields],
                          "formats": [types[f.datatype] for f in msg.fields],
                          "offsets": [f.offset for f in msg.fields],
                          "itemsize": msg.point_step})
        return np.frombuffer(bytes(msg.data), dtype=dtype, count=msg.width * msg.height)

    def destroy(self) -> None:
        self.node.destroy_node()

    def check_outputs(self, cloud, resend: Callable[[], None]) -> dict:
        """The DESIGN.md output contract for one synchronized frame `cloud` (with the default
        camera): returns the frame's ~/stats JSON after checking every output."""
        from sensor_msgs.msg import PointField

        from tttkd_ros.core.frame import MASK_NONE
        from tttkd_ros.core.labels import CLASS_NAMES, palette_rgb

        stamp = stamp_of(cloud)
        labeled = self.wait_for("labeled", stamp, resend=resend)
        assert labeled.header.frame_id == cloud.header.frame_id
        f32, u16 = PointField.FLOAT32, PointField.UINT16
        assert [(f.name, f.datatype, f.count) for f in labeled.fields] == [
            ("x", f32, 1), ("y", f32, 1), ("z", f32, 1), ("intensity", f32, 1), ("label", u16, 1),
            ("confidence", f32, 1)]
        out, given = Rig.cloud_array(labeled), Rig.cloud_array(cloud)
        assert len(out) == len(given)  # one output point per input point, in input order
        for name in ("x", "y", "z", "intensity"):
            np.testing.assert_array_equal(out[name], given[name])
        assert (out["label"] < len(CLASS_NAMES)).all()  # every input point is finite
        assert ((out["confidence"] > 0) & (out["confidence"] <= 1)).all()

        colored = self.wait_for("colored", stamp)
        assert colored.header.frame_id == cloud.header.frame_id
        assert [f.name for f in colored.fields] == ["x", "y", "z", "rgb"]
        rgb = Rig.cloud_array(colored)["rgb"].view(np.uint32)
        expected = palette_rgb()[out["label"]].astype(np.uint32)
        np.testing.assert_array_equal(
            rgb, (expected[:, 0] << 16) | (expected[:, 1] << 8) | expected[:, 2])

        mask = self.wait_for("mask", stamp)
        mask_color = self.wait_for("mask_color", stamp)
        for msg, encoding in ((mask, "mono8"), (mask_color, "rgb8")):
            assert (msg.height, msg.width, msg.encoding) == (IMAGE_H, IMAGE_W, encoding)
            assert msg.header.frame_id == CAMERA_FRAME
        ids = np.frombuffer(bytes(mask.data), np.uint8).reshape(IMAGE_H, IMAGE_W)
        labeled_px = ids != MASK_NONE
        assert labeled_px.any() and (ids[labeled_px] < len(CLASS_NAMES)).all()
        colors = np.frombuffer(bytes(mask_color.data), np.uint8).reshape(IMAGE_H, IMAGE_W, 3)
        np.testing.assert_array_equal(colors[labeled_px], palette_rgb()[ids[labeled_px]])

        stats = self.stats_for(stamp)
        assert stats["frame_id"] == cloud.header.frame_id
        assert stats["points"] == len(given) and stats["cameras"] == ["camera"]
        for key in ("steps", "adapt_ms", "infer_ms", "losses", "budget_ms", "dropped",
                    "over_budget"):
            assert key in stats
        return stats

    @staticmethod
    def wait_until(predicate: Callable[[], bool], timeout: float, period: float = 0.05) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(period)
        return predicate()


@pytest.fixture(scope="module")
def ros_context() -> Iterator[Any]:
    """A private rclpy context for one test module (shut down after it)."""
    import rclpy

    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    rclpy.shutdown(context=context)


@pytest.fixture(scope="module")
def executor(ros_context) -> Iterator[Any]:
    """A multi-threaded executor spinning in a background thread; add nodes to it."""
    from rclpy.executors import MultiThreadedExecutor

    ex = MultiThreadedExecutor(num_threads=4, context=ros_context)
    thread = threading.Thread(target=ex.spin, daemon=True)
    thread.start()
    yield ex
    ex.shutdown()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def rig(ros_context, executor) -> Iterator[Rig]:
    r = Rig(ros_context)
    executor.add_node(r.node)
    yield r
    executor.remove_node(r.node)
    r.destroy()


@contextmanager
def running_adapt_node(ros_context, executor, rig: Rig, params: dict[str, Any],
                       inputs: list | None = None) -> Iterator[Any]:
    """An in-process AdaptNode with `params` (sim time), spun by `executor`, connected to the
    rig (`inputs`: the rig's publishers it must match, see Rig.wait_connected); removed and
    destroyed on exit."""
    from rclpy.parameter import Parameter

    from tttkd_ros.ros.node import AdaptNode

    node = AdaptNode(context=ros_context, parameter_overrides=[
        Parameter(k, value=v) for k, v in {**params, "use_sim_time": True}.items()])
    executor.add_node(node)
    rig.wait_connected(sim_time=True, inputs=inputs)
    try:
        yield node
    finally:
        executor.remove_node(node)
        node.destroy_node()
