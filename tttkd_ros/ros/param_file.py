"""The node's settings from a ROS 2 parameter file, read without rclpy, the way the node reads
them: so `tttkd eval --params config/adapt.yaml` evaluates what runs on the robot."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .params import GENERAL, NODE_NAME, NodeSettings, all_specs, settings_from_values

NOT_SETTINGS = ("use_sim_time",)  # rclpy's own parameters, meaningless offline


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """Nested YAML keys joined by '.', as ROS 2 names the parameters of a params file."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def read_param_file(path: str | Path, node_name: str = NODE_NAME) -> dict[str, Any]:
    """name -> value of every parameter `path` gives the node: its sections `node_name`,
    `/**` and any `/NAMESPACE/node_name`, later sections over earlier ones. Raises
    FileNotFoundError / ValueError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"parameter file not found: {path}")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not a YAML parameter file: {err}") from err
    values: dict[str, Any] = {}
    for key, section in tree.items():
        if str(key).split("/")[-1] in (node_name, "**") and isinstance(section, dict):
            values.update(_flatten(section.get("ros__parameters") or {}))
    if not values:
        raise ValueError(f"{path} has no ros__parameters for '{node_name}' (sections: "
                         f"{sorted(map(str, tree))})")
    return values


def settings_from_file(path: str | Path, overrides: dict[str, Any] | None = None
                       ) -> NodeSettings:
    """NodeSettings as the node builds them from `path` plus `overrides` (as `-p name:=value`
    would give them), every parameter the file leaves out at its default. Raises ValueError
    for a parameter the node does not have or a bad value."""
    values = {**read_param_file(path), **(overrides or {})}
    cameras = list(values.get("cameras", GENERAL["cameras"].default))
    specs = all_specs(cameras)
    unknown = sorted(set(values) - set(specs) - set(NOT_SETTINGS))
    if unknown:
        raise ValueError(f"{path}: the node has no parameters {unknown}")
    return settings_from_values({name: values.get(name, spec.default)
                                 for name, spec in specs.items()}, cameras)
