"""adapt_node as an object in this process, spun by an executor thread, talking real DDS
(loopback only) to a test-side node. Sim time: the test drives /clock, so the sync timeout
and clock jumps are exercised deterministically."""
from __future__ import annotations

import time

import pytest

pytest.importorskip("rclpy", reason="rclpy is not installed (pip install '.[ros]')")
from conftest import running_adapt_node
from std_srvs.srv import SetBool, Trigger

pytestmark = pytest.mark.dds

NS = 1_000_000_000
T0 = 5_000 * NS  # sim time of the first frame


@pytest.fixture(scope="module")
def adapt(ros_context, executor, rig, node_params):
    with running_adapt_node(ros_context, executor, rig, node_params) as node:
        yield node


def frame(rig, stamp: int, camera: bool = True) -> dict:
    """Publish a frame at sim time `stamp` and return its ~/stats (resent while waiting)."""
    def send() -> None:
        rig.clock(stamp)
        rig.publish_frame(stamp, camera=camera)

    rig.wait_for("labeled", stamp, resend=send)
    return rig.stats_for(stamp)


def test_synchronized_frame_gives_every_output_with_the_input_header(adapt, rig) -> None:
    rig.clock(T0)
    cloud = rig.publish_frame(T0)
    stats = rig.check_outputs(cloud, resend=lambda: rig.publish_frame(T0))
    assert stats["steps"] >= 1 and stats["enabled"] and not stats["lidar_only"]
    assert "kd" in stats["losses"] and "ocl" in stats["losses"]


def test_services_and_parameters_change_adaptation_at_run_time(adapt, rig) -> None:
    t = T0 + NS
    off = rig.call(SetBool, "/tttkd_adapt/enable_adaptation", SetBool.Request(data=False))
    assert off.success
    assert adapt.get_parameter("adaptation.enabled").value is False
    stats = frame(rig, t)
    assert stats["steps"] == 0 and stats["enabled"] is False and stats["adapt_ms"] == 0

    assert rig.call(SetBool, "/tttkd_adapt/enable_adaptation", SetBool.Request(data=True)).success
    assert frame(rig, t + NS)["steps"] >= 1

    (result,) = rig.set_parameters("tttkd_adapt", {"adaptation.max_steps": 0})
    assert result.successful
    assert frame(rig, t + 2 * NS)["steps"] == 0
    (result,) = rig.set_parameters("tttkd_adapt", {"adaptation.max_steps": 1})
    assert result.successful

    (bad_mode,) = rig.set_parameters("tttkd_adapt", {"adaptation.mode": "bogus"})
    assert not bad_mode.successful and "adaptation.mode" in bad_mode.reason
    (bad_lr,) = rig.set_parameters("tttkd_adapt", {"adaptation.lr": -1.0})
    assert not bad_lr.successful
    (fixed,) = rig.set_parameters("tttkd_adapt", {"checkpoint": "/elsewhere.pt"})
    assert not fixed.successful
    assert adapt.engine.cfg.mode == "kd+ocl" and adapt.engine.cfg.lr > 0

    before = frame(rig, t + 3 * NS)["resets"]
    reset = rig.call(Trigger, "/tttkd_adapt/reset", Trigger.Request())
    assert reset.success
    assert frame(rig, t + 4 * NS)["resets"] == before + 1


def test_async_schedule_is_switched_at_run_time(adapt, rig) -> None:
    t = T0 + 10 * NS
    (bad,) = rig.set_parameters("tttkd_adapt", {"adaptation.schedule": "later"})
    assert not bad.successful and "sync, async" in bad.reason
    (result,) = rig.set_parameters("tttkd_adapt", {"adaptation.schedule": "async"})
    assert result.successful and adapt.engine.background is not None
    assert frame(rig, t)["steps"] == 0  # its adaptation runs after the prediction went out
    deadline = time.monotonic() + 60
    while adapt.engine.background.in_flight and time.monotonic() < deadline:
        time.sleep(0.05)
    stats = frame(rig, t + NS)  # the finished adaptation serves from this frame on
    assert stats["steps"] == 1 and "ocl" in stats["losses"]
    (result,) = rig.set_parameters("tttkd_adapt", {"adaptation.schedule": "sync"})
    assert result.successful and adapt.engine.background is None
    assert frame(rig, t + 2 * NS)["steps"] >= 1


def test_silent_camera_gives_lidar_only_output_after_the_timeout(adapt, rig) -> None:
    t = T0 + 20 * NS
    timeout = adapt.get_parameter("sync.timeout").value

    def send() -> None:
        rig.clock(t)
        rig.publish_frame(t, camera=False)
        time.sleep(0.2)
        rig.clock(t + int(2 * timeout * NS))  # only node time passing releases the cloud

    rig.wait_for("labeled", t, resend=send)
    stats = rig.stats_for(t)
    assert stats["lidar_only"] is True and stats["cameras"] == []
    assert stats["steps"] >= 1 and "kd" not in stats["losses"]  # OCL still has a signal


def test_clock_jump_back_clears_the_sync_and_the_node_keeps_running(adapt, rig) -> None:
    back = T0 - 600 * NS  # a looped bag starts over
    stats = frame(rig, back)
    assert stats["cameras"] == ["camera"]
    assert adapt.health.failed == 0 and adapt.worker.alive

    def jumps_reported() -> bool:
        for msg in rig.messages("diagnostics"):
            for status in msg.status:
                values = {kv.key: kv.value for kv in status.values}
                if status.name.endswith("sync") and int(values.get("clock_jumps", 0)) >= 1:
                    return True
        return False

    assert rig.wait_until(jumps_reported, timeout=10.0)


def test_diagnostics_warn_about_a_random_teacher(adapt, rig) -> None:
    def teacher_status():
        for msg in reversed(rig.messages("diagnostics")):
            for status in msg.status:
                if status.name == "tttkd_adapt: teacher":
                    return status
        return None

    assert rig.wait_until(lambda: teacher_status() is not None, timeout=10.0)
    status = teacher_status()
    assert status.level == status.WARN and "RANDOM" in status.message


def test_tent_and_ocl_on_the_robot_run_with_their_measured_settings(adapt, rig) -> None:
    """The presets the benchmark measured (core MODE_PRESETS) apply when the mode changes at
    run time, go away with it, and can be switched off."""
    from tttkd_ros.core.config import MODE_PRESETS, AdaptConfig

    (result,) = rig.set_parameters("tttkd_adapt", {"adaptation.mode": "tent"})
    assert result.successful
    assert rig.wait_until(lambda: adapt.engine.cfg.mode == "tent", 10.0)
    for key, value in MODE_PRESETS["tent"].items():
        assert getattr(adapt.engine.cfg, key) == value
    assert adapt.get_parameter("adaptation.lr").value == AdaptConfig().lr  # untouched
    (result,) = rig.set_parameters("tttkd_adapt", {"adaptation.use_mode_presets": False})
    assert result.successful
    assert rig.wait_until(lambda: adapt.engine.cfg.lr == AdaptConfig().lr, 10.0)
    assert adapt.engine.cfg.params == "backbone" and adapt.engine.cfg.mode == "tent"
    back = rig.set_parameters("tttkd_adapt", {"adaptation.mode": "kd+ocl",
                                              "adaptation.use_mode_presets": True})
    assert all(r.successful for r in back)
    assert rig.wait_until(lambda: adapt.engine.cfg.mode == "kd+ocl", 10.0)
    assert adapt.engine.cfg.lr == AdaptConfig().lr and adapt.engine.cfg.w_ocl == 0.1


def test_the_class_map_is_latched_for_consumers(adapt, rig) -> None:
    """A consumer that subscribes after the node started still gets ids, names, colours."""
    import json

    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String

    from tttkd_ros.core.labels import CLASS_NAMES, palette_rgb

    got: list = []
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    sub = rig.node.create_subscription(String, "/tttkd_adapt/class_map", got.append, latched)
    try:
        assert rig.wait_until(lambda: bool(got), 10.0)
    finally:
        rig.node.destroy_subscription(sub)
    payload = json.loads(got[0].data)
    assert [c["name"] for c in payload["classes"]] == CLASS_NAMES
    assert [c["id"] for c in payload["classes"]] == list(range(len(CLASS_NAMES)))
    r, g, b = palette_rgb()[0]
    assert payload["classes"][0]["color"] == f"#{r:02x}{g:02x}{b:02x}"
    assert (payload["unlabeled"], payload["mask_none"]) == (65535, 255)
