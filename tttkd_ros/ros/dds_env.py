"""DDS settings a process applies before rclpy.init(): discovery range, large-message profile."""
from __future__ import annotations

import os
from pathlib import Path

# Fast DDS profile for full-size clouds and images over best-effort (see the file's comment)
LARGE_MESSAGE_PROFILE = Path(__file__).with_name("fastdds_large_messages.xml")
# Fast DDS 2.x (ROS 2 Jazzy) reads the first, Fast DDS 3 the second
PROFILE_VARIABLES = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")
FAST_DDS_RMWS = ("rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp")  # Jazzy's default first


def keep_dds_local() -> None:
    """Default ROS_AUTOMATIC_DISCOVERY_RANGE to LOCALHOST; call before rclpy.init(). For the
    demo and the soak, which talk only to a node they start; the node itself leaves
    discovery to its user's environment, as any ROS node does.

    The rmw layer reads the variable when a context starts, so setting it later has no effect.
    An explicit user setting (or the older ROS_LOCALHOST_ONLY) is left alone.
    """
    if "ROS_AUTOMATIC_DISCOVERY_RANGE" not in os.environ and "ROS_LOCALHOST_ONLY" not in os.environ:
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"


def discovery_summary() -> str:
    """The DDS discovery range this process starts with, for the start-up log line."""
    for variable in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_LOCALHOST_ONLY"):
        if os.environ.get(variable):
            return f"{variable}={os.environ[variable]}"
    return ("ROS_AUTOMATIC_DISCOVERY_RANGE unset: the ROS default (SUBNET), peers on this "
            "host's networks are found")


def use_large_message_profile() -> str | None:
    """Point Fast DDS at LARGE_MESSAGE_PROFILE unless the user chose a profile file or another
    RMW; call before rclpy.init(). Returns the profile file in effect (None: not Fast DDS)."""
    if os.environ.get("RMW_IMPLEMENTATION", FAST_DDS_RMWS[0]) not in FAST_DDS_RMWS:
        return None
    chosen = next((os.environ[v] for v in PROFILE_VARIABLES if os.environ.get(v)), None)
    if chosen is not None:
        return chosen
    for variable in PROFILE_VARIABLES:
        os.environ[variable] = str(LARGE_MESSAGE_PROFILE)
    return str(LARGE_MESSAGE_PROFILE)
