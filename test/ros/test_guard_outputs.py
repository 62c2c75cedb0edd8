"""The harm guard's figures on ~/stats and its decisions on /diagnostics (no DDS needed)."""
from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("diagnostic_msgs.msg", reason="rclpy's diagnostic_msgs is not installed")
from tttkd_ros.core.frame import FrameStats
from tttkd_ros.ros.diagnostics import OK, WARN, DiagnosticsReporter, Health
from tttkd_ros.ros.outputs import stats_message


def test_stats_carry_the_guards_figures_and_untrusted_cameras() -> None:
    stats = FrameStats(guard_ms=1.5, guard_checked=True, guard_drift=0.25, guard_kl=math.nan,
                       guard_gain=-0.1, guard_flip=0.5, guard_rollback=True,
                       events=["guard_rollback"],
                       camera_kd_ratio={"front": 1.1, "black": 7.0},
                       cameras_untrusted=["black"])
    payload = json.loads(stats_message(1, "lidar", stats).data)
    assert payload["guard"] == {"ms": 1.5, "checked": True, "drift": 0.25, "kl": None,
                                "gain": -0.1, "flip": 0.5, "rollback": True}
    assert payload["camera_kd_ratio"] == {"front": 1.1, "black": 7.0}
    assert payload["cameras_untrusted"] == ["black"] and payload["events"] == ["guard_rollback"]
    unchecked = json.loads(stats_message(1, "lidar", FrameStats()).data)["guard"]
    assert unchecked == {"ms": 0.0, "checked": False, "drift": None, "kl": None, "gain": None,
                         "flip": None, "rollback": False}


def test_diagnostics_warn_when_the_guard_rolled_back_or_dropped_a_camera() -> None:
    reporter = DiagnosticsReporter("tttkd_adapt")
    health = Health(mode="kd+ocl", event_counts={"guard_check": 3})
    assert reporter.reports(health)["adaptation"].level == OK
    health.event_counts = {"guard_check": 6, "guard_check_failed": 3, "guard_rollback": 1}
    report = reporter.reports(health)["adaptation"]
    assert report.level == WARN and "rolled back" in report.message
    assert report.values["guard_rollback"] == 1 and report.values["guard_check"] == 6
    assert reporter.reports(health)["adaptation"].level == OK  # nothing new since
    health.untrusted_cameras = {"front": 2}
    report = reporter.reports(health)["adaptation"]
    assert report.level == WARN and "front" in report.message
    assert report.values["untrusted frames front"] == 2
    health.event_counts = {**health.event_counts, "guard_source_reset": 1}
    assert "rolled back" in reporter.reports(health)["adaptation"].message
