"""Start adapt_node with the package's parameter file.

    ros2 launch tttkd_ros adapt.launch.py checkpoint:=/path/model.pt
    ros2 launch tttkd_ros adapt.launch.py checkpoint:=/path/model.pt \
        points:=/velodyne_points image:=/front/image_rect_color \
        camera_info:=/front/camera_info use_sim_time:=true

checkpoint and device override the parameter file only when given; points, image and
camera_info remap the inputs of the camera named `camera`, and `remaps:='FROM:=TO ...'`
those of any other (`front/image:=/cam_front/image_raw`). Unless FASTRTPS_DEFAULT_PROFILES_FILE (or
FASTDDS_DEFAULT_PROFILES_FILE) is set, every process this launch starts, and the nodes of a
launch file that includes this one after it, get the package's Fast DDS profile for
full-size clouds and images (`dds_profile:=` to keep Fast DDS's defaults).
"""
import os
from pathlib import Path

import yaml
from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription
from tttkd_ros.ros.dds_env import LARGE_MESSAGE_PROFILE, PROFILE_VARIABLES

PACKAGE = "tttkd_ros"


def default_params_file() -> str:
    """The installed share/tttkd_ros/config/adapt.yaml; the source tree's copy when the
    package is not installed (running this file from a checkout)."""
    try:
        share = Path(get_package_share_directory(PACKAGE))
    except PackageNotFoundError:
        share = Path(__file__).resolve().parents[1]
    return str(share / "config" / "adapt.yaml")


ARGUMENTS = [
    ("params_file", default_params_file(), "YAML parameter file (tttkd_adapt: ros__parameters)"),
    ("checkpoint", "", "Source model checkpoint (tttkd train); empty = the params file's"),
    ("device", "", "auto, cpu, cuda or cuda:N; empty = the params file's"),
    ("use_sim_time", "false", "Use /clock (true while playing a rosbag with --clock)"),
    ("namespace", "", "Namespace of the node and its topics"),
    ("points", "points", "Input PointCloud2 topic"),
    ("image", "camera/image", "Input Image topic of the camera named 'camera'"),
    ("camera_info", "camera/camera_info", "Input CameraInfo topic of the camera named 'camera'"),
    ("remaps", "", ("More remaps for any camera, space-separated FROM:=TO, e.g. "
                    "'front/image:=/cam_front/image_raw front/camera_info:=/cam_front/"
                    "camera_info'")),
    ("log_level", "info", "Logging level: debug, info, warn, error"),
    ("dds_profile", str(LARGE_MESSAGE_PROFILE),
     "Fast DDS profile for large messages, used unless one is set; empty = Fast DDS defaults"),
]


def node_parameters(params_file: str) -> dict:
    """The node's ros__parameters from a params file (sections `tttkd_adapt`, `/**` or any
    `/.../tttkd_adapt`). Passed to the node as a dict, they apply in any namespace, whereas a
    file's bare `tttkd_adapt:` section matches only a node in the root namespace."""
    tree = yaml.safe_load(Path(params_file).read_text()) or {}
    merged: dict = {}
    for key, section in tree.items():
        if str(key).split("/")[-1] in ("tttkd_adapt", "**"):
            merged.update((section or {}).get("ros__parameters", {}))
    return merged


def _dds_profile(context, *args, **kwargs) -> list:
    """The large-message profile for the processes launched from here, unless the user has
    a profile file set (or cleared dds_profile)."""
    profile = LaunchConfiguration("dds_profile").perform(context)
    if not profile or any(os.environ.get(v) for v in PROFILE_VARIABLES):
        return []
    return [SetEnvironmentVariable(v, profile) for v in PROFILE_VARIABLES]


def extra_remaps(text: str) -> list[tuple[str, str]]:
    """'FROM:=TO FROM:=TO' -> [(FROM, TO)]; a word without ':=' is refused with the form."""
    pairs = []
    for word in text.split():
        source, sep, target = word.partition(":=")
        if not sep or not source or not target:
            raise ValueError(f"remaps: {word!r} is not FROM:=TO (e.g. front/image:=/cam/image)")
        pairs.append((source, target))
    return pairs


def _node(context, *args, **kwargs) -> list:
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    overrides = {"use_sim_time": arg("use_sim_time").lower() in ("true", "1", "yes")}
    for name in ("checkpoint", "device"):
        if arg(name):  # only when given, so the params file's value stands otherwise
            overrides[name] = arg(name)
    return [Node(
        package=PACKAGE, executable="adapt_node", name="tttkd_adapt", namespace=arg("namespace"),
        parameters=[node_parameters(arg("params_file")), overrides],
        # the first rule that matches a name wins: `remaps` before the per-topic defaults
        remappings=[*extra_remaps(arg("remaps")), ("points", arg("points")),
                    ("camera/image", arg("image")), ("camera/camera_info", arg("camera_info"))],
        ros_arguments=["--log-level", arg("log_level")],
        output="screen", emulate_tty=True,
    )]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=description)
         for name, default, description in ARGUMENTS]
        + [OpaqueFunction(function=_dds_profile), OpaqueFunction(function=_node)])
