"""Keep DDS discovery on this host unless the user chose otherwise."""
from __future__ import annotations

import os


def keep_dds_local() -> None:
    """Default ROS_AUTOMATIC_DISCOVERY_RANGE to LOCALHOST; call before rclpy.init().

    The rmw layer reads the variable when a context starts, so setting it later has no effect.
    An explicit user setting (or the older ROS_LOCALHOST_ONLY) is left alone.
    """
    if "ROS_AUTOMATIC_DISCOVERY_RANGE" not in os.environ and "ROS_LOCALHOST_ONLY" not in os.environ:
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
