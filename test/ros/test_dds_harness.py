"""The harness itself: two OS processes exchange a PointCloud2 over real DDS on loopback."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PEERS = Path(__file__).with_name("dds_peers.py")

pytest.importorskip("rclpy", reason="rclpy is not installed (pip install '.[ros]')")


@pytest.mark.dds
def test_pointcloud2_crosses_process_boundary_over_dds() -> None:
    sys.path.insert(0, str(PEERS.parent))
    from dds_peers import digest, known_cloud

    sub = subprocess.Popen([sys.executable, str(PEERS), "sub"], stdout=subprocess.PIPE, text=True)
    pub = subprocess.Popen([sys.executable, str(PEERS), "pub"])
    try:
        out, _ = sub.communicate(timeout=60)
    finally:
        pub.terminate()
        pub.wait(timeout=10)
        sub.kill()
    assert sub.returncode == 0
    assert json.loads(out.strip().splitlines()[-1]) == digest(known_cloud())
