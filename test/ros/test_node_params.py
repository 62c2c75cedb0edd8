"""The node's parameters: config/adapt.yaml and the declarations agree, values are validated
at start and at run time (rejections carry the reason), and a bad start says what to fix."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("rclpy", reason="rclpy is not installed (pip install '.[ros]')")
from rclpy.parameter import Parameter

from tttkd_ros.core.config import AdaptConfig
from tttkd_ros.ros.params import (
    adaptation_update,
    all_specs,
    parse_palette,
    settings_from_values,
)

YAML = Path(__file__).resolve().parents[2] / "config" / "adapt.yaml"


def flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def yaml_values() -> dict:
    return flatten(yaml.safe_load(YAML.read_text())["tttkd_adapt"]["ros__parameters"])


def default_values(cameras: list[str]) -> dict:
    return {name: spec.default for name, spec in all_specs(cameras).items()}


def test_yaml_lists_every_declared_parameter_with_its_default() -> None:
    values = yaml_values()
    specs = all_specs(values["cameras"])
    assert set(values) == set(specs)
    for name, spec in specs.items():
        assert values[name] == spec.default, name
        assert type(values[name]) is type(spec.default), f"{name}: ROS types must match"


def test_default_values_build_the_core_configs() -> None:
    s = settings_from_values(default_values(["camera"]), ["camera"])
    assert s.adapt == AdaptConfig()
    assert s.qos_in.profile().reliability.name == "BEST_EFFORT"
    assert s.qos_out.profile().reliability.name == "RELIABLE"
    # The default camera looks along the LiDAR's +x axis: a point ahead lands on the optical z.
    ahead = s.extrinsics["camera"] @ np.array([10.0, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(ahead[:3], [0.0, 0.0, 10.0], atol=1e-12)


@pytest.mark.parametrize("name, value, phrase", [
    ("adaptation.mode", "bogus", "adaptation.mode: 'bogus' (one of: none, kd, ocl"),
    ("adaptation.optimizer", "lbfgs", "adaptation.optimizer"),
    ("qos.input.reliability", "sometimes", "qos.input.reliability"),
    ("teacher.name", "vit_huge", "teacher.name"),
    ("camera.quat", [0.0, 0.0, 0.0, 0.0], "camera 'camera' extrinsic: quat has zero length"),
])
def test_invalid_start_values_are_rejected_with_the_reason(name, value, phrase) -> None:
    values = {**default_values(["camera"]), name: value}
    with pytest.raises(ValueError, match=phrase.replace("(", r"\(")):
        settings_from_values(values, ["camera"])


def test_run_time_update_collects_and_validates_adaptation_parameters() -> None:
    update = adaptation_update([Parameter("adaptation.max_steps", value=3),
                                Parameter("adaptation.enabled", value=False),
                                Parameter("use_sim_time", value=True)], AdaptConfig())
    assert update.changes == {"max_steps": 3} and update.enabled is False
    assert not adaptation_update([Parameter("use_sim_time", value=True)], AdaptConfig())
    with pytest.raises(ValueError, match="adaptation.protocol"):
        adaptation_update([Parameter("adaptation.protocol", value="sometimes")], AdaptConfig())


def test_palette_parameter() -> None:
    assert parse_palette("", 2) is None
    np.testing.assert_array_equal(parse_palette("#ff0000, 00ff7f", 2),
                                  [[255, 0, 0], [0, 255, 127]])
    with pytest.raises(ValueError, match="1 colours"):
        parse_palette("#ff0000", 2)
    with pytest.raises(ValueError, match="#rrggbb"):
        parse_palette("#ff0000, #12", 2)


# -- on a real node (creating one starts DDS, so these run in the loopback namespace) --------

def make_node(ros_context, params: dict):
    from tttkd_ros.ros.node import AdaptNode

    return AdaptNode(context=ros_context,
                     parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])


@pytest.fixture(scope="module")
def node(ros_context, node_params):
    n = make_node(ros_context, node_params)
    yield n
    n.destroy_node()


@pytest.mark.dds
def test_declared_parameters_have_descriptions_ranges_and_read_only_flags(node) -> None:
    specs = all_specs(["camera"])
    descriptors = node.describe_parameters(list(specs))
    for (name, spec), d in zip(specs.items(), descriptors):
        assert d.description, name
        assert d.read_only == spec.read_only, name
        if spec.lo is not None:
            ranges = list(d.integer_range) + list(d.floating_point_range)
            assert len(ranges) == 1 and (ranges[0].from_value, ranges[0].to_value) == (
                spec.lo, spec.hi), name
    assert all(name.startswith("adaptation.") for name, s in specs.items() if not s.read_only)


@pytest.mark.dds
def test_run_time_changes_reach_the_engine_or_are_rejected(node) -> None:
    def set_one(name, value):
        return node.set_parameters([Parameter(name, value=value)])[0]

    assert set_one("adaptation.max_steps", 3).successful
    assert set_one("adaptation.optimizer", "adamw").successful
    assert node.engine.cfg.max_steps == 3 and node.engine.cfg.optimizer == "adamw"
    assert set_one("adaptation.enabled", False).successful and node.engine.enabled is False

    bad = set_one("adaptation.mode", "bogus")
    assert not bad.successful and "adaptation.mode" in bad.reason and "kd+ocl" in bad.reason
    assert not set_one("adaptation.lr", 2.0).successful  # outside its range
    assert not set_one("adaptation.max_steps", 1.5).successful  # wrong type
    assert not set_one("sync.slop", 0.1).successful  # read-only
    assert node.engine.cfg.mode == "kd+ocl" and node.engine.cfg.lr == AdaptConfig().lr
    assert node.get_parameter("adaptation.mode").value == "kd+ocl"


@pytest.mark.dds
@pytest.mark.parametrize("change, error, phrase", [
    ({"checkpoint": ""}, ValueError, "set the parameter `checkpoint`"),
    ({"checkpoint": "/nonexistent/model.pt"}, FileNotFoundError, "tttkd train"),
    ({"teacher.name": "vit_base_patch14_dinov2"}, ValueError, "Set teacher.name"),
    ({"cameras": ["front", "front"]}, ValueError, "distinct"),
])
def test_a_bad_start_names_what_to_fix(ros_context, node_params, change, error, phrase) -> None:
    with pytest.raises(error, match=phrase.replace("(", r"\(")):
        make_node(ros_context, {**node_params, **change})

