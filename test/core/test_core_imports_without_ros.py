"""`tttkd_ros.core` must import where no ROS 2 Python package is installed."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Runs in a fresh interpreter with every ROS module made unimportable, then imports every
# module under tttkd_ros.core.
HIDE_ROS_AND_IMPORT_CORE = """
import importlib, pkgutil, sys
HIDDEN = ("rclpy", "rosidl_runtime_py", "sensor_msgs", "sensor_msgs_py", "std_msgs",
          "std_srvs", "diagnostic_msgs", "cv_bridge", "message_filters", "tf2_ros",
          "builtin_interfaces", "rosgraph_msgs")

class HideRos:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            raise ImportError(f"{name} hidden by the test")
        return None

sys.meta_path.insert(0, HideRos())
import tttkd_ros.core as core
names = [m.name for m in pkgutil.walk_packages(core.__path__, "tttkd_ros.core.")]
for name in names:
    importlib.import_module(name)
leaked = sorted(m for m in sys.modules if m.split(".")[0] in HIDDEN)
assert not leaked, leaked
print(len(names))
"""


def test_core_imports_with_ros_hidden() -> None:
    result = subprocess.run([sys.executable, "-c", HIDE_ROS_AND_IMPORT_CORE], check=False, cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip().splitlines()[-1]) >= 3  # frame, labels, config at least
