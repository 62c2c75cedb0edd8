"""package.xml is a valid format-3 ament_python manifest with the dependencies users need."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXEC_DEPENDS = {
    "rclpy", "sensor_msgs", "sensor_msgs_py", "std_msgs", "std_srvs", "diagnostic_msgs",
    "cv_bridge", "launch", "launch_ros", "python3-numpy", "python3-pil",
}
TEST_DEPENDS = {"launch_testing", "launch_testing_ros", "python3-pytest", "ament_flake8",
                "ament_pep257", "ament_copyright"}


def test_package_xml_parses_with_catkin_pkg() -> None:
    parse_package = pytest.importorskip("catkin_pkg.package").parse_package
    pkg = parse_package(str(ROOT / "package.xml"))
    assert pkg.name == "tttkd_ros"
    assert pkg.package_format == 3
    assert pkg.get_build_type() == "ament_python"
    assert EXEC_DEPENDS <= {d.name for d in pkg.exec_depends}
    assert TEST_DEPENDS <= {d.name for d in pkg.test_depends}


def test_setup_installs_the_ament_resource_marker_and_launch_files() -> None:
    setup_py = (ROOT / "setup.py").read_text()
    assert (ROOT / "resource" / "tttkd_ros").is_file()
    for needle in ("resource/{PACKAGE}", "launch/*.launch.py", "config/*.yaml", "package.xml",
                   "adapt_node = tttkd_ros.ros.node:main", "tttkd = tttkd_ros.tools.cli:main"):
        assert needle in setup_py
    assert "install_scripts=$base/lib/tttkd_ros" in (ROOT / "setup.cfg").read_text()
