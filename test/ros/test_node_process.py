"""adapt_node as a separate OS process, started the way users start it: the console script
(or `python -m tttkd_ros.ros.node` where the package is not installed) with
`--ros-args --params-file config/adapt.yaml -p checkpoint:=...`, over real DDS (loopback)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="rclpy is not installed (pip install '.[ros]')")

pytestmark = pytest.mark.dds

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 150.0  # imports (torch, timm, spconv), model load and warm-up


def node_command() -> list[str]:
    script = Path(sys.executable).with_name("adapt_node")
    return [str(script)] if script.exists() else [sys.executable, "-m", "tttkd_ros.ros.node"]


@pytest.fixture(scope="module")
def node_process(node_params, tmp_path_factory):
    """The running node and its log file; stopped with SIGINT (Ctrl-C) afterwards."""
    args = [*node_command(), "--ros-args", "--params-file", str(ROOT / "config" / "adapt.yaml")]
    # Reliable inputs: also shows the QoS override, and no frame can be lost in the test.
    for name, value in {**node_params, "qos.input.reliability": "reliable"}.items():
        args += ["-p", f"{name}:={value}"]
    log_path = tmp_path_factory.mktemp("node") / "adapt_node.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    yield proc, log_path
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


def test_separate_process_serves_synchronized_frames_and_stops_cleanly(node_process, rig
                                                                       ) -> None:
    proc, log_path = node_process
    try:
        rig.wait_connected(timeout=START_TIMEOUT_S, alive=lambda: proc.poll() is None)
        stamp = rig.node.get_clock().now().nanoseconds  # wall time, like a live sensor
        cloud = rig.publish_frame(stamp)
        stats = rig.check_outputs(cloud, resend=lambda: rig.publish_frame(stamp))
        assert stats["steps"] >= 1 and stats["enabled"] and stats["mode"] == "kd+ocl"
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- node log ---\n{log_path.read_text()}") from exc
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0, log_path.read_text()
    log = log_path.read_text()
    assert "ready:" in log and "Traceback" not in log, log
