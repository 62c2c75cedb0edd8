"""What real drivers and recorded bags send, over real DDS (loopback only) to one running
adaptation node: JPEG CompressedImage cameras, stamps that lag the node's clock (with the
image a little after its cloud, also after a burst of defective messages), a camera that
never comes, organised clouds whose no-returns are (0, 0, 0), and intensity in another unit
than the checkpoint's (8-bit, 16-bit counts)."""
from __future__ import annotations

import io
import itertools
import time

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy is not installed (pip install '.[ros]')")
from conftest import (
    IMAGE_H,
    IMAGE_W,
    Rig,
    make_camera_info,
    make_cloud,
    running_adapt_node,
)
from PIL import Image as PilImage
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, PointField

from tttkd_ros.core.frame import UNLABELED
from tttkd_ros.core.labels import CLASS_NAMES

pytestmark = pytest.mark.dds

NS = 1_000_000_000
LAG = 60 * NS  # how far the stamps lag the node's (sim) clock
_stamps = itertools.count(3_000 * NS, NS // 2)
TRAINED_P99 = 0.9  # the module checkpoint says it was trained on 0..1 intensities


def next_stamp() -> int:
    return next(_stamps)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    """A random-init tiny model whose checkpoint records 0..1 training intensities."""
    import torch

    from tttkd_ros.core.config import ModelConfig
    from tttkd_ros.core.intensity import IntensityReference
    from tttkd_ros.core.labels import palette_rgb
    from tttkd_ros.core.model.checkpoint import save_checkpoint
    from tttkd_ros.core.model.segmentation import build_model

    torch.manual_seed(0)
    cfg = ModelConfig(backbone="tiny", feat_dim=384)
    path = tmp_path_factory.mktemp("ckpt") / "intensity.pt"
    save_checkpoint(path, build_model(cfg, "cpu"), cfg, class_names=CLASS_NAMES,
                    palette=palette_rgb(), teacher_name="vit_small_patch14_dinov2",
                    extra={"intensity": IntensityReference(1.0, TRAINED_P99).to_dict()})
    return str(path)


@pytest.fixture(scope="module")
def pub_jpeg(rig):
    return rig.node.create_publisher(CompressedImage, "/camera/image/compressed",
                                     QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))


@pytest.fixture(scope="module")
def adapt(ros_context, executor, rig, node_params, checkpoint, pub_jpeg):
    # mode none: the same cloud gives the same labels in every frame
    # sync.timeout 2 s: a loaded test machine may run the image callback late; a timeout
    # counted from the stamp (60 s behind the clock) would still fail every frame here
    params = {**node_params, "checkpoint": checkpoint, "qos.input.reliability": "reliable",
              "camera.transport": "compressed", "adaptation.mode": "none",
              "sync.timeout": 2.0}
    with running_adapt_node(ros_context, executor, rig, params,
                            inputs=[rig.pub_points, pub_jpeg, rig.pub_info]) as node:
        yield node


def jpeg(stamp: int) -> CompressedImage:
    """A JPEG as image_transport's compressed plugin records it."""
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, size=(IMAGE_H, IMAGE_W, 3), dtype=np.uint8)
    buf = io.BytesIO()
    PilImage.fromarray(pixels).save(buf, format="JPEG", quality=90)
    msg = CompressedImage(format="bgr8; jpeg compressed bgr8", data=buf.getvalue())
    msg.header = make_camera_info(stamp).header
    return msg


def send_camera(rig: Rig, pub_jpeg, stamp: int) -> None:
    rig.pub_info.publish(make_camera_info(stamp))
    pub_jpeg.publish(jpeg(stamp))


def cloud_values(stamp: int, edit, n: int = 2000, height: int = 1):
    """make_cloud's x, y, z, intensity FLOAT32 cloud with its (n, 4) values edited and laid
    out as `height` rows."""
    msg = make_cloud(stamp, n=n)
    values = np.frombuffer(bytes(msg.data), np.float32).reshape(n, 4).copy()
    edit(values)
    msg.data = values.tobytes()
    msg.height, msg.width, msg.row_step = height, n // height, 16 * (n // height)
    return msg


def with_intensity_type(stamp: int, intensity: np.ndarray, datatype: int, dtype: str):
    """make_cloud's points with an integer intensity field of `datatype`, as Velodyne (UINT8)
    and Ouster (UINT16) drivers publish it."""
    base = np.frombuffer(bytes(make_cloud(stamp).data), np.float32).reshape(-1, 4)
    n = len(base)
    packed = np.empty(n, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", dtype)])
    for i, name in enumerate(("x", "y", "z")):
        packed[name] = base[:, i]
    packed["intensity"] = intensity
    msg = make_cloud(stamp)
    msg.fields[3].datatype = datatype
    msg.point_step = packed.dtype.itemsize
    msg.row_step = msg.point_step * n
    msg.data = packed.tobytes()
    return msg


def frame_out(rig: Rig, pub_jpeg, stamp: int, cloud, camera: bool = True,
              image_delay_s: float = 0.05) -> dict:
    """The node's clock at stamp + LAG; the cloud, then (after image_delay_s) its camera, as
    a driver whose stamps lag the node clock sends them. Returns the frame's ~/stats."""
    def send() -> None:
        rig.clock(stamp + LAG)
        time.sleep(0.05)  # the node's clock moves before the messages arrive
        rig.pub_points.publish(cloud)
        if camera:
            time.sleep(image_delay_s)
            send_camera(rig, pub_jpeg, stamp)

    rig.wait_for("labeled", stamp, resend=send)
    return rig.stats_for(stamp)


def test_stale_stamps_and_a_late_jpeg_still_give_the_camera_mask(adapt, rig, pub_jpeg) -> None:
    """The image arrives 50 ms after a cloud stamped 60 s behind the node's clock: it is
    paired (the timeout runs from the cloud's arrival), decoded from JPEG, and masked."""
    stamp = next_stamp()
    stats = frame_out(rig, pub_jpeg, stamp, make_cloud(stamp))
    assert stats["cameras"] == ["camera"] and not stats["lidar_only"], stats
    mask = rig.wait_for("mask", stamp)
    assert (mask.height, mask.width) == (IMAGE_H, IMAGE_W)
    assert (np.frombuffer(bytes(mask.data), np.uint8) < len(CLASS_NAMES)).any()


def test_after_a_burst_of_defective_messages_good_frames_keep_their_camera(adapt, rig,
                                                                          pub_jpeg) -> None:
    received = adapt.sync.stats()["received"]["cloud"]
    for _ in range(20):  # clouds without an x field, as fast as they go
        bad = make_cloud(next_stamp())
        bad.fields[0].name = "a"
        rig.pub_points.publish(bad)
        rig.pub_info.publish(make_camera_info(0))  # and zero-stamped calibrations
    for _ in range(3):
        stamp = next_stamp()
        stats = frame_out(rig, pub_jpeg, stamp, make_cloud(stamp))
        assert stats["cameras"] == ["camera"], stats
    assert adapt.sync.stats()["received"]["cloud"] > received + 3 and adapt.worker.alive
    assert adapt.health.input_defects.get("camera/camera_info", 0) >= 1


def test_a_camera_that_never_comes_is_a_counted_defect(adapt, rig, pub_jpeg) -> None:
    """Counted, named in the frame's ~/stats and on /diagnostics (the log line is throttled
    like every defect's, tested in test_node_bad_input.py)."""
    before = adapt.health.input_defects.get("camera/image", 0)
    stamp = next_stamp()
    stats = frame_out(rig, pub_jpeg, stamp, make_cloud(stamp), camera=False)
    assert stats["cameras"] == [] and stats["lidar_only"]
    assert any(d.startswith("camera/image: no image") for d in stats["input_defects"])
    assert adapt.health.input_defects["camera/image"] == before + 1

    def diagnosed() -> bool:
        return any(s.name.endswith("sync") and "sync.timeout" in kv.value
                   for m in rig.messages("diagnostics") for s in m.status for kv in s.values
                   if kv.key == "last input defect")

    assert rig.wait_until(diagnosed, 10.0)


def test_no_returns_of_an_organised_cloud_are_unlabeled(adapt, rig, pub_jpeg) -> None:
    stamp = next_stamp()
    holes = np.random.default_rng(5).random(2000) < 0.4

    def no_returns(values: np.ndarray) -> None:
        values[holes] = 0.0  # Ouster / RELLIS-3D: a missing return is (0, 0, 0)

    stats = frame_out(rig, pub_jpeg, stamp, cloud_values(stamp, no_returns, height=8))
    labels = Rig.cloud_array(rig.wait_for("labeled", stamp))["label"]
    assert (labels[holes] == UNLABELED).all() and (labels[~holes] < len(CLASS_NAMES)).all()
    assert stats["no_return_points"] == int(holes.sum())


def test_intensity_units_are_scaled_or_warned_about_once(adapt, rig, pub_jpeg, capfd) -> None:
    """A Velodyne UINT8 0..255 field is scaled to the checkpoint's 0..1 (the same labels as
    the 0..1 cloud, no warning); Ouster-like 16-bit counts of a few hundred still disagree
    after auto scaling: one warning in the log and on /diagnostics, not one per frame."""
    k = np.random.default_rng(2).integers(0, 256, 2000)
    unit = next_stamp()
    frame_out(rig, pub_jpeg, unit, cloud_values(unit, lambda v: v.__setitem__(
        (slice(None), 3), (k / 255.0).astype(np.float32))))
    velodyne = next_stamp()
    frame_out(rig, pub_jpeg, velodyne, with_intensity_type(velodyne, k.astype(np.uint8),
                                                           PointField.UINT8, "u1"))
    same = [Rig.cloud_array(rig.wait_for("labeled", s))["label"] for s in (unit, velodyne)]
    assert (same[0] == same[1]).mean() > 0.99
    assert adapt.health.intensity_warning == ""

    for _ in range(2):
        stamp = next_stamp()
        stats = frame_out(rig, pub_jpeg, stamp, with_intensity_type(
            stamp, (k + 40).astype(np.uint16), PointField.UINT16, "<u2"))
        assert "intensity_out_of_range" in stats["events"]
    assert "intensity_scale" in adapt.health.intensity_warning
    log = capfd.readouterr().err
    assert sum("intensity_scale" in line for line in log.splitlines()) == 1, log

    def warned() -> bool:
        return any(s.name.endswith("intensity") and s.level == s.WARN and "0..1" in s.message
                   for m in rig.messages("diagnostics") for s in m.status)

    assert rig.wait_until(warned, 10.0)
