"""Full-size frames reach the node with the shipped best-effort inputs: a KITTI-size driver
process (4 MB clouds, 1.4 MB images at 10 Hz, sensor-data QoS) and adapt_node as separate
processes over loopback, both on the package's Fast DDS profile (the node applies it itself;
the driver is given it as its environment, as the README says a driver must be). With Fast
DDS's default 512 kB shared-memory segment most of these frames are lost (measured, not
asserted here: it depends on scheduling); with the profile all of them arrive on an idle
machine and all but one or two on a loaded one. Single warm-up frames first show that the
node has matched every writer, so frames lost to late discovery on a slow machine (seen in CI:
the first three images lost) are not counted as lost to the transport."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="rclpy is not installed (pip install '.[ros]')")
from test_node_process import START_TIMEOUT_S, node_command

from tttkd_ros.ros.dds_env import LARGE_MESSAGE_PROFILE, PROFILE_VARIABLES

pytestmark = pytest.mark.dds

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("full_size_driver.py")
FRAMES = 9
WARM_UP_FRAMES = 20


def received(rig) -> dict[str, int]:
    """The node's newest /diagnostics counts of received messages per input."""
    for msg in reversed(rig.messages("diagnostics")):
        for status in msg.status:
            if status.name.endswith("sync"):
                return {kv.key.removeprefix("received "): int(kv.value)
                        for kv in status.values if kv.key.startswith("received ")}
    return {}


def settled_counts(rig, timeout: float = 30.0) -> dict[str, int]:
    """Received counts once two diagnostics periods pass without a change."""
    deadline = time.monotonic() + timeout
    counts = received(rig)
    while time.monotonic() < deadline:
        time.sleep(2.5)  # /diagnostics comes once a second
        counts, before = received(rig), counts
        if counts == before:
            return counts
    return counts


class Driver:
    """full_size_driver.py in its own process (its DDS profile comes with env), over stdin."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen([sys.executable, str(DRIVER)], env=env, text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE)
        assert self.process.stdout.readline().strip() == "ready", self.process.stderr.read()

    def publish(self, frames: int) -> None:
        self.process.stdin.write(f"{frames}\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == "sent", self.process.stderr.read()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


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
        driver = Driver({**env, **dict.fromkeys(PROFILE_VARIABLES, str(LARGE_MESSAGE_PROFILE))})
        try:
            topics = ("cloud", "camera/image", "camera/camera_info")
            for _ in range(WARM_UP_FRAMES):
                driver.publish(1)
                if rig.wait_until(lambda: all(received(rig).get(t) for t in topics), 3.0):
                    break
            before = settled_counts(rig)
            assert all(before.get(t) for t in topics), \
                f"no full frame reached the node in {WARM_UP_FRAMES} tries: {before}"
            driver.publish(FRAMES)
            want = {t: before[t] + FRAMES for t in topics}
            rig.wait_until(lambda: received(rig) == want, 60.0)
        finally:
            driver.close()
        # Best effort may still drop a frame or two when the node is starved of CPU and its
        # queue overflows; the default segment loses most frames, so most arriving is what the
        # profile changes.
        arrived = {t: received(rig).get(t, 0) - before[t] for t in topics}
        assert all(n >= FRAMES - 2 for n in arrived.values()), \
            f"{arrived} of {FRAMES} each\n--- node log ---\n{log_path.read_text()}"
    finally:
        node.terminate()
        node.wait(timeout=30)
