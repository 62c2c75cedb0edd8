"""Full-size frames reach the node with the shipped best-effort inputs: a KITTI-size driver
process (4 MB clouds, 1.4 MB images at 10 Hz, sensor-data QoS) and adapt_node as separate
processes over loopback, both on the package's Fast DDS profile (the node applies it itself;
the driver is given it as its environment, as the README says a driver must be). With Fast
DDS's default 512 kB shared-memory segment most of these frames are lost (measured, not
asserted here: it depends on scheduling); with the profile all of them arrive on an idle
machine and all but one or two on a loaded one."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="rclpy is not installed (pip install '.[ros]')")
from test_node_process import START_TIMEOUT_S, node_command

from tttkd_ros.ros.dds_env import LARGE_MESSAGE_PROFILE, PROFILE_VARIABLES

pytestmark = pytest.mark.dds

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("full_size_driver.py")
FRAMES = 9


def received(rig) -> dict[str, int]:
    """The node's newest /diagnostics counts of received messages per input."""
    for msg in reversed(rig.messages("diagnostics")):
        for status in msg.status:
            if status.name.endswith("sync"):
                return {kv.key.removeprefix("received "): int(kv.value)
                        for kv in status.values if kv.key.startswith("received ")}
    return {}


def test_full_size_best_effort_frames_arrive(rig, node_params, tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in PROFILE_VARIABLES}
    env.update(PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    args = [*node_command(), "--ros-args", "--params-file", str(ROOT / "config" / "adapt.yaml")]
    for name, value in {**node_params, "adaptation.mode": "none"}.items():
        args += ["-p", f"{name}:={value}"]  # inputs stay best_effort, as shipped
    log_path = tmp_path / "adapt_node.log"
    with open(log_path, "w") as log:
        node = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        assert rig.wait_until(lambda: "ready:" in log_path.read_text() or node.poll() is not None,
                              START_TIMEOUT_S), log_path.read_text()
        assert f"Fast DDS profile: {LARGE_MESSAGE_PROFILE}" in log_path.read_text()
        driver_env = {**env, **dict.fromkeys(PROFILE_VARIABLES, str(LARGE_MESSAGE_PROFILE))}
        driver = subprocess.run([sys.executable, str(DRIVER), str(FRAMES)], env=driver_env,
                                timeout=180, capture_output=True, text=True, check=False)
        assert driver.returncode == 0, driver.stderr
        want = {"cloud": FRAMES, "camera/image": FRAMES, "camera/camera_info": FRAMES}
        rig.wait_until(lambda: received(rig) == want, 60.0)
        # Best effort may still drop a frame or two when the node is starved of CPU and its
        # queue overflows (seen with two benchmarks beside the suite: 9 / 8 / 8 of 9); the
        # default segment loses most frames, so most arriving is what the profile changes.
        counts = received(rig)
        assert all(counts.get(topic, 0) >= FRAMES - 2 for topic in want), \
            f"{counts} of {FRAMES} each\n--- node log ---\n{log_path.read_text()}"
    finally:
        node.terminate()
        node.wait(timeout=30)
