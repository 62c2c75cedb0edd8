"""Every kind of bad input from issue 9, sent over real DDS (loopback only) to one running
adaptation node: each is answered by a log line naming the input and the defect and by a
/diagnostics entry, and the good frame sent after it comes out in full while the node lives.
A clock jump back resets adaptation when configured. Sim time: the test drives /clock."""
from __future__ import annotations

import itertools
import time
from collections.abc import Callable

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy is not installed (pip install '.[ros]')")
from conftest import (
    CAMERA_FRAME,
    IMAGE_H,
    IMAGE_W,
    LIDAR_FRAME,
    Rig,
    make_camera_info,
    make_cloud,
    make_image,
    running_adapt_node,
    stamp_of,
)
from sensor_msgs.msg import PointField

from tttkd_ros.core.frame import UNLABELED
from tttkd_ros.core.labels import CLASS_NAMES

pytestmark = pytest.mark.dds

NS = 1_000_000_000
MAX_POINTS = 3000  # the good frames (2000 points) are below it
_stamps = itertools.count(2_000 * NS, NS // 2)  # sim times, increasing through the module


def next_stamp() -> int:
    return next(_stamps)


@pytest.fixture(scope="module")
def adapt(ros_context, executor, rig, node_params):
    params = {**node_params, "qos.input.reliability": "reliable", "lidar_frame": LIDAR_FRAME,
              "camera.frame_id": CAMERA_FRAME, "max_points": MAX_POINTS}
    with running_adapt_node(ros_context, executor, rig, params) as node:
        yield node


# -- sending --------------------------------------------------------------------------------

def send(rig: Rig, stamp: int, cloud=None, image=None, info=None) -> None:
    """/clock, then CameraInfo, Image and cloud at `stamp`; None = the good message."""
    rig.clock(stamp)
    rig.pub_info.publish(info if info is not None else make_camera_info(stamp))
    rig.pub_image.publish(image if image is not None else make_image(stamp))
    rig.pub_points.publish(cloud if cloud is not None else make_cloud(stamp))


def edited_cloud(stamp: int, edit: Callable[[np.ndarray], None], n: int = 2000):
    """make_cloud's cloud with its (n, 4) float32 x, y, z, intensity values edited."""
    msg = make_cloud(stamp, n=n)
    values = np.frombuffer(bytes(msg.data), np.float32).reshape(n, 4).copy()
    edit(values)
    msg.data = values.tobytes()
    return msg


def good_frame_comes_out(adapt, rig: Rig) -> dict:
    """Send a good frame after the defect: every output arrives, the node is alive."""
    stamp = next_stamp()
    stats = rig.check_outputs(make_cloud(stamp), resend=lambda: send(rig, stamp))
    assert stats["cameras"] == ["camera"] and stats["input_defects"] == []
    assert adapt.worker.alive and adapt.health.failed == 0
    return stats


def diagnosed(rig: Rig, phrase: str) -> bool:
    """A /diagnostics sync status names the defect."""
    for msg in reversed(rig.messages("diagnostics")):
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            if status.name.endswith("sync") and phrase in values.get("last input defect", ""):
                return True
    return False


def answered(adapt, rig: Rig, capfd, source: str, phrase: str, send_bad: Callable[[], None]
             ) -> None:
    """Send the defect, see it counted, then a good frame, then the log line and the
    diagnostics entry that name the input and the defect."""
    before = adapt.health.input_defects.get(source, 0)
    send_bad()
    assert rig.wait_until(lambda: adapt.health.input_defects.get(source, 0) > before, 30.0), \
        f"no defect counted on {source}"
    assert adapt.health.last_input_defect.startswith(f"{source}: ")
    assert phrase in adapt.health.last_input_defect, adapt.health.last_input_defect
    good_frame_comes_out(adapt, rig)
    assert rig.wait_until(lambda: diagnosed(rig, phrase), 10.0), f"no diagnostics for {phrase}"
    log = capfd.readouterr().err
    assert any(f"{source}: " in line and phrase in line for line in log.splitlines()), log


def processed_without_camera(rig: Rig, stamp: int) -> dict:
    stats = rig.stats_for(stamp)
    assert stats["cameras"] == [] and stats["lidar_only"] and stats["input_defects"]
    return stats


# -- PointCloud2 ----------------------------------------------------------------------------

def without_field(stamp: int, index: int):
    cloud = make_cloud(stamp)
    cloud.fields[index].name = "a"
    return cloud


def test_cloud_without_x(adapt, rig, capfd) -> None:
    stamp = next_stamp()
    answered(adapt, rig, capfd, "points", "has no 'x' field",
             lambda: send(rig, stamp, cloud=without_field(stamp, 0)))


def test_a_repeated_defect_is_counted_every_time_and_logged_once(adapt, rig, capfd) -> None:
    before = adapt.health.input_defects.get("points", 0)
    for k in (1, 2):
        stamp = next_stamp()
        send(rig, stamp, cloud=without_field(stamp, 2))
        assert rig.wait_until(
            lambda k=k: adapt.health.input_defects.get("points", 0) == before + k, 30.0)
    good_frame_comes_out(adapt, rig)
    lines = [line for line in capfd.readouterr().err.splitlines() if "no 'z' field" in line]
    assert len(lines) == 1 and "points: " in lines[0], lines


def test_cloud_with_an_unsupported_field_type(adapt, rig, capfd) -> None:
    def send_bad() -> None:
        stamp = next_stamp()
        cloud = make_cloud(stamp)
        cloud.fields[1].datatype = PointField.INT32
        send(rig, stamp, cloud=cloud)

    answered(adapt, rig, capfd, "points", "field 'y' has unsupported datatype INT32", send_bad)


def test_cloud_whose_data_length_disagrees(adapt, rig, capfd) -> None:
    def send_bad() -> None:
        stamp = next_stamp()
        cloud = make_cloud(stamp)
        cloud.data = bytes(cloud.data)[:-5]
        send(rig, stamp, cloud=cloud)

    answered(adapt, rig, capfd, "points", "but row_step * height is", send_bad)


def test_cloud_whose_point_step_is_smaller_than_its_fields(adapt, rig, capfd) -> None:
    def send_bad() -> None:
        stamp = next_stamp()
        cloud = make_cloud(stamp)
        cloud.point_step, cloud.row_step = 14, 14 * cloud.width
        cloud.data = bytes(cloud.data)[: 14 * cloud.width]
        send(rig, stamp, cloud=cloud)

    answered(adapt, rig, capfd, "points", "point_step 14 is smaller than field 'intensity'",
             send_bad)


def test_nonfinite_points_are_labeled_unlabeled_and_the_rest_segmented(adapt, rig, capfd
                                                                       ) -> None:
    stamp = next_stamp()

    def poison(values: np.ndarray) -> None:
        values[:5, 0] = np.nan
        values[5:8, 2] = np.inf
        values[8, 3] = -np.inf

    cloud = edited_cloud(stamp, poison)
    answered(adapt, rig, capfd, "points", "9 of 2000 points have NaN/Inf values",
             lambda: send(rig, stamp, cloud=cloud))
    labels = Rig.cloud_array(rig.wait_for("labeled", stamp))["label"]
    assert (labels[:9] == UNLABELED).all() and (labels[9:] < len(CLASS_NAMES)).all()


def test_empty_cloud(adapt, rig, capfd) -> None:
    stamp = next_stamp()
    cloud = make_cloud(stamp, n=0)
    answered(adapt, rig, capfd, "points", "empty cloud", lambda: send(rig, stamp, cloud=cloud))
    labeled = rig.wait_for("labeled", stamp)
    assert labeled.width * labeled.height == 0 and labeled.header.frame_id == LIDAR_FRAME


def test_cloud_far_over_the_cap_is_subsampled_and_fully_labeled(adapt, rig, capfd) -> None:
    stamp = next_stamp()
    cloud = make_cloud(stamp, n=10 * MAX_POINTS, seed=3)
    answered(adapt, rig, capfd, "points", f"over max_points {MAX_POINTS}",
             lambda: send(rig, stamp, cloud=cloud))
    labels = Rig.cloud_array(rig.wait_for("labeled", stamp))["label"]
    assert len(labels) == 10 * MAX_POINTS and (labels < len(CLASS_NAMES)).all()
    assert "points_subsampled" in rig.stats_for(stamp)["events"]


def test_cloud_with_a_zero_stamp(adapt, rig, capfd) -> None:
    def send_bad() -> None:
        rig.pub_points.publish(make_cloud(0))

    answered(adapt, rig, capfd, "points", "header stamp is zero", send_bad)


def test_cloud_with_an_out_of_order_stamp(adapt, rig, capfd) -> None:
    good_frame_comes_out(adapt, rig)
    late = next_stamp() - 3 * NS // 4  # 0.25 s before the frame just processed

    def send_bad() -> None:
        rig.pub_points.publish(make_cloud(late))

    answered(adapt, rig, capfd, "points", "(out of order); cloud dropped", send_bad)
    assert not any(stamp_of(m) == late for m in rig.messages("labeled"))


def test_cloud_in_another_frame_than_the_extrinsics(adapt, rig, capfd) -> None:
    stamp = next_stamp()
    cloud = make_cloud(stamp)
    cloud.header.frame_id = "base_link"
    answered(adapt, rig, capfd, "points", "frame_id 'base_link' is not lidar_frame",
             lambda: send(rig, stamp, cloud=cloud))
    assert rig.wait_for("labeled", stamp).header.frame_id == "base_link"
    processed_without_camera(rig, stamp)


# -- Image ----------------------------------------------------------------------------------

def bad_image_case(adapt, rig, capfd, phrase: str, edit: Callable) -> None:
    """An image defect: the frame is still segmented, without that camera."""
    stamp = next_stamp()
    image = make_image(stamp)
    edit(image)
    answered(adapt, rig, capfd, "camera/image", phrase, lambda: send(rig, stamp, image=image))
    processed_without_camera(rig, stamp)


def test_image_with_an_unsupported_encoding(adapt, rig, capfd) -> None:
    def edit(image) -> None:
        image.encoding = "16UC1"

    bad_image_case(adapt, rig, capfd, "encoding '16UC1' is not supported", edit)


def test_image_with_a_wrong_step(adapt, rig, capfd) -> None:
    def edit(image) -> None:
        image.step = 3 * IMAGE_W - 3

    bad_image_case(adapt, rig, capfd, "is smaller than width * channels", edit)


def test_image_with_too_little_data(adapt, rig, capfd) -> None:
    def edit(image) -> None:
        image.data = bytes(image.data)[: 3 * IMAGE_W * (IMAGE_H - 1)]

    bad_image_case(adapt, rig, capfd, "fewer than step * height", edit)


def test_image_with_a_zero_stamp(adapt, rig, capfd) -> None:
    answered(adapt, rig, capfd, "camera/image", "header stamp is zero",
             lambda: rig.pub_image.publish(make_image(0)))


def test_image_in_another_frame_than_its_extrinsic(adapt, rig, capfd) -> None:
    def edit(image) -> None:
        image.header.frame_id = "other_camera"

    bad_image_case(adapt, rig, capfd, "frame_id 'other_camera' is not camera.frame_id", edit)


# -- CameraInfo -----------------------------------------------------------------------------

def bad_info_case(adapt, rig, capfd, phrase: str, edit: Callable) -> None:
    stamp = next_stamp()
    info = make_camera_info(stamp)
    edit(info)
    answered(adapt, rig, capfd, "camera/camera_info", phrase,
             lambda: send(rig, stamp, info=info))
    processed_without_camera(rig, stamp)


def test_camera_info_with_a_zero_k(adapt, rig, capfd) -> None:
    def edit(info) -> None:
        info.k = [0.0] * 9

    bad_info_case(adapt, rig, capfd, "K is all zero", edit)


def test_camera_info_whose_size_disagrees_with_the_image(adapt, rig, capfd) -> None:
    def edit(info) -> None:
        info.width, info.height = 640, 480

    bad_info_case(adapt, rig, capfd, "is calibrated for 640x480", edit)


# -- clock jumps (last: time goes backwards for the rest of the module) ----------------------

def frame_stats(rig: Rig, stamp: int) -> dict:
    def resend() -> None:
        rig.clock(stamp)
        time.sleep(0.1)  # the node's clock moves before the messages arrive
        send(rig, stamp)

    rig.wait_for("labeled", stamp, resend=resend)
    return rig.stats_for(stamp)


def test_clock_jump_back_resets_adaptation_only_when_configured(adapt, rig) -> None:
    before = frame_stats(rig, next_stamp())
    jumped = frame_stats(rig, next_stamp() - 600 * NS)  # a looped bag starts over
    assert "clock_jump_reset" in jumped["events"]
    assert jumped["resets"] == before["resets"] + 1
    assert jumped["event_counts"]["clock_jump_reset"] >= 1 and jumped["steps"] >= 1

    (result,) = rig.set_parameters("tttkd_adapt", {"adaptation.reset_on_clock_jump": False})
    assert result.successful
    jumps = adapt.sync.stats()["clock_jumps"]
    again = frame_stats(rig, next_stamp() - 1200 * NS)
    assert adapt.sync.stats()["clock_jumps"] > jumps
    assert "clock_jump_reset" not in again["events"] and again["resets"] == jumped["resets"]
    assert adapt.worker.alive and adapt.health.failed == 0
