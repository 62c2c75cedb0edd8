"""`tttkd synth`: lists the presets and writes a readable SemanticKITTI sequence."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from tttkd_ros.data.drive import render_frame
from tttkd_ros.data.kitti import read_label_map, read_sequence
from tttkd_ros.data.shifts import get_shift, list_shifts
from tttkd_ros.tools.cli import build_parser


def parse(argv: list[str]) -> argparse.Namespace:
    return build_parser("synth").parse_args(["synth", *argv])


def test_list_shifts(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse(["--list-shifts"])
    assert args.func(args) == 0
    assert capsys.readouterr().out.split() == list_shifts()


def test_writes_a_sequence(tmp_path: Path) -> None:
    args = parse(["--out", str(tmp_path), "--frames", "2", "--shift", "fog", "--seed", "3",
                  "--sequence", "05"])
    assert args.func(args) == 0
    seq = read_sequence(tmp_path, "05")
    assert len(seq) == 2
    first = seq[0]
    expected = render_frame(get_shift("fog"), seed=3, index=0)
    np.testing.assert_array_equal(first.points, expected.points)
    np.testing.assert_array_equal(first.labels, expected.labels)
    np.testing.assert_array_equal(first.cameras[0].image, expected.cameras[0].image)
    assert read_label_map(tmp_path / "semantic-kitti.yaml")["learning_map"][252] == 1


def test_rejects_missing_out_and_unknown_shift(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse([])
    assert args.func(args) == 2
    assert "--out" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(["--out", "x", "--shift", "no_such_shift"])


def test_world_settings_change_the_rendering(tmp_path: Path) -> None:
    args = parse(["--out", str(tmp_path), "--frames", "1", "--set", "lidar_beams=16",
                  "--set", "image_scale=0.25"])
    assert args.func(args) == 0
    frame = read_sequence(tmp_path, "00")[0]
    expected = render_frame(get_shift("clean", lidar_beams=16, image_scale=0.25), seed=0,
                            index=0)
    np.testing.assert_array_equal(frame.points, expected.points)
    assert frame.cameras[0].image.shape == expected.cameras[0].image.shape


def test_unknown_world_setting_is_refused_before_writing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = parse(["--out", str(tmp_path), "--set", "lidar_wheels=3"])
    assert args.func(args) == 2
    assert "lidar_wheels" in capsys.readouterr().err
    assert not (tmp_path / "sequences").exists()
    args = parse(["--out", str(tmp_path), "--set", "no_equals_sign"])
    assert args.func(args) == 2
    args = parse(["--out", str(tmp_path), "--set", "cameras=surround"])
    assert args.func(args) == 2
    assert "at most 2" in capsys.readouterr().err
    assert not (tmp_path / "sequences").exists()


def test_stats_describe_the_drive_and_sit_beside_a_reference(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    small = ["--frames", "1", "--set", "lidar_azimuth_res_deg=0.72", "--set", "image_scale=0.1"]
    args = parse(["--stats", *small])
    assert args.func(args) == 0
    stats = json.loads(capsys.readouterr().out)
    frame = render_frame(get_shift("clean", lidar_azimuth_res_deg=0.72, image_scale=0.1), 0, 0)
    assert stats["points_per_scan"] == len(frame.points)
    classes = stats["classes"]
    assert {"road", "sidewalk", "building", "vegetation", "car"} <= set(classes)
    assert sum(c["share_%"] for c in classes.values()) == pytest.approx(100.0, abs=0.2)
    road = classes["road"]
    assert road["z_m_p10_p50_p90"][0] <= road["z_m_p10_p50_p90"][1] <= road["z_m_p10_p50_p90"][2]
    assert -2.2 < road["z_m_p10_p50_p90"][1] < -1.4  # the road lies below the sensor
    reference = dict(stats, classes={"road": classes["road"], "pole": classes["road"]})
    (tmp_path / "real.json").write_text(json.dumps(reference))
    args = parse(["--stats", *small, "--compare", str(tmp_path / "real.json")])
    assert args.func(args) == 0
    table = capsys.readouterr().out
    share = f"{road['share_%']:.1f}"
    assert f"| road | {share} ({share})" in table
    assert "| car |" in table and "(-)" in table  # a class only one side has


def test_every_nth_frame(tmp_path: Path) -> None:
    args = parse(["--out", str(tmp_path), "--frames", "2", "--every", "5",
                  "--set", "lidar_azimuth_res_deg=1.0", "--set", "image_scale=0.1"])
    assert args.func(args) == 0
    seq = read_sequence(tmp_path, "00")
    config = get_shift("clean", lidar_azimuth_res_deg=1.0, image_scale=0.1)
    np.testing.assert_array_equal(seq[1].points, render_frame(config, seed=0, index=5).points)
