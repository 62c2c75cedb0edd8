"""`tttkd demo`: the quick demo through the real node over DDS, and its building blocks
(atomic cache entries, lockstep frames from a bag, mask overlays)."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tttkd_ros.core.config import TeacherConfig
from tttkd_ros.core.frame import MASK_NONE
from tttkd_ros.core.labels import palette_rgb
from tttkd_ros.core.model.checkpoint import load_checkpoint
from tttkd_ros.core.model.teacher import teacher_fingerprint
from tttkd_ros.data.drive import generate_drive
from tttkd_ros.ros.bag import POINTS_TOPIC, read_bag_frames, topic_info, write_drive_bag
from tttkd_ros.ros.extrinsics import extrinsic_matrix
from tttkd_ros.tools import cli, demo_assets
from tttkd_ros.tools.evaluation import evaluate, load_frames, mode_configs
from tttkd_ros.tools.overlay import blend_mask, grow_mask

TINY = {"lidar_beams": 8, "lidar_azimuth_res_deg": 2.0, "image_scale": 0.1}


@pytest.mark.dds
def test_quick_demo_runs_the_node_on_both_drives_without_and_with_adaptation(
        tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    assert cli.main(["demo", "--quick", "--steps", "2", "--out", str(out),
                     "--json", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())

    lidar, camera = demo_assets.DEFAULT_LIDAR_SHIFT, demo_assets.DEFAULT_CAMERA_SHIFT
    assert list(result["drives"]) == [lidar, camera]
    assert [d["changed"] for d in result["drives"].values()] == ["LiDAR", "camera"]
    assert result["cached"] == {"teacher": False, "checkpoint": False, f"bag_{lidar}": False,
                                f"bag_{camera}": False}
    # the node distils from the teacher the demo pretrained, which the checkpoint records
    params = result["config"]["node_parameters"]
    teacher = Path(params["teacher.weights"])
    assert teacher.is_relative_to(tmp_path / "cache" / "tttkd_ros") and teacher.is_file()
    assert result["teacher"]["steps"] > 0 and result["teacher"]["held_out_patch_accuracy"]
    tcfg = TeacherConfig(params["teacher.name"], weights=str(teacher),
                         image_height=params["teacher.image_height"])
    paired = load_checkpoint(result["config"]["checkpoint"], "cpu")
    assert paired.teacher["weights"] == teacher_fingerprint(tcfg)
    assert paired.cfg.kd_center  # paired on centred features, the default the demo shows

    for shift, drive in result["drives"].items():
        bag = Path(drive["bag"])
        assert bag.is_relative_to(tmp_path / "cache" / "tttkd_ros") and shift in bag.name
        replayed = topic_info(bag)[POINTS_TOPIC].count
        assert replayed == demo_assets.QUICK_TARGET_FRAMES == drive["frames"]
        assert set(drive["modes"]) == {"none", "kd+ocl"}
        for mode, entry in drive["modes"].items():
            assert isinstance(entry["miou"], float) and 0.0 <= entry["miou"] <= 100.0, mode
            assert entry["outputs"] == replayed  # one ~/labeled_points per replayed frame
            assert len(entry["miou_per_frame"]) == len(entry["latency_ms_per_frame"]) == replayed
            assert all(math.isfinite(x) and x > 0 for x in entry["latency_ms_per_frame"])
        assert drive["modes"]["none"]["steps_mean"] == 0.0  # adaptation disabled
        assert drive["modes"]["kd+ocl"]["steps_mean"] == 2.0  # --steps 2 on every frame
        assert drive["gain"] == pytest.approx(drive["modes"]["kd+ocl"]["miou"]
                                              - drive["modes"]["none"]["miou"])

        # The node got the bag's camera extrinsic as parameters.
        T = extrinsic_matrix(params["camera.xyz"], params["camera.quat"])
        first = next(read_bag_frames(bag))
        np.testing.assert_allclose(T, first.frame.cameras[0].T_cam_lidar, atol=1e-9)

        # Without adaptation the node's labels are the engine's: same scores as offline.
        offline = evaluate(load_frames(bag=bag), result["config"]["checkpoint"],
                           mode_configs(["none"]), tcfg, "cpu", progress=False)["modes"]["none"]
        assert drive["modes"]["none"]["miou_per_frame"] == pytest.approx(
            offline["miou_per_frame"])

    overlays = [Path(p) for p in result["overlays"]]
    for shift in (lidar, camera):
        for tag in ("none", "kd_ocl"):
            assert any(p.name.startswith(f"{shift}_") and p.name.endswith(f"_{tag}.png")
                       for p in overlays), (shift, tag)
    height, width = first.frame.cameras[0].size
    for path in overlays:
        with Image.open(path) as png:
            assert png.format == "PNG" and png.size == (width, height)
    assert "ready:" in (out / "adapt_node.log").read_text()


def test_cached_entry_builds_once_and_never_leaves_a_partial_entry(tmp_path: Path) -> None:
    final = tmp_path / "entry"
    calls = []

    def fail(tmp: Path) -> None:
        tmp.mkdir()
        (tmp / "half").write_text("x")
        raise KeyboardInterrupt  # a run stopped half-way

    with pytest.raises(KeyboardInterrupt):
        demo_assets.cached_entry(final, fail)
    assert list(tmp_path.iterdir()) == []

    # leftovers of a killed run (its process is gone) are cleared
    stale = tmp_path / "entry.tmp999999999"
    stale.mkdir()

    def build(tmp: Path) -> None:
        calls.append(tmp)
        tmp.mkdir()
        (tmp / "done").write_text("ok")

    first = demo_assets.cached_entry(final, build)
    assert not first.cached and (final / "done").read_text() == "ok"
    assert calls[0].name == f"entry.tmp{os.getpid()}" and not stale.exists()
    again = demo_assets.cached_entry(final, build)
    assert again.cached and again.path == final and len(calls) == 1


def test_quick_and_full_settings_use_separate_cache_folders() -> None:
    quick, full = demo_assets.demo_settings(True), demo_assets.demo_settings(False)
    assert quick.source_key() != full.source_key()
    # the targets' shifts and length do not retrain the teacher or the source model
    other = demo_assets.demo_settings(True, lidar_shift="beams32", camera_shift="blur",
                                      frames=7)
    assert (other.shifts(), other.target_frames) == (("beams32", "blur"), 7)
    assert other.source_key() == quick.source_key()


def test_demo_refuses_one_drive_for_both_roles_before_building_anything(
        tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert cli.main(["demo", "--quick", "--lidar-shift", demo_assets.DEFAULT_CAMERA_SHIFT]) == 2
    assert "two different drives" in capsys.readouterr().err
    assert cli.main(["demo", "--quick", "--frames", "0"]) == 2
    assert cli.main(["demo", "--quick", "--steps", "0"]) == 2
    assert "--steps must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()


def test_bag_frames_publish_cameras_before_the_cloud_with_offset_stamps(tmp_path: Path) -> None:
    pytest.importorskip("rclpy", reason="rclpy is not installed (pip install '.[ros]')")
    from tttkd_ros.ros.replay import bag_frames, cloud_columns

    drive = list(generate_drive("clean", frames=3, seed=0, **TINY))
    write_drive_bag(tmp_path / "bag", drive)
    offset = 50_000_000_000
    frames = list(bag_frames(tmp_path / "bag", offset_ns=offset))
    assert [f.stamp_ns for f in frames] == [d.stamp_ns + offset for d in drive]
    for frame, source in zip(frames, drive):
        assert [t for t, _ in frame.messages] == ["/camera/image", "/camera/camera_info",
                                                  "/points"]
        for _, msg in frame.messages:
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            assert stamp == source.stamp_ns + offset
        cols = cloud_columns(frame.messages[-1][1], ["x", "y", "z", "intensity"])
        np.testing.assert_array_equal(np.stack(list(cols.values()), axis=1), source.points)


def test_overlay_blends_labeled_pixels_and_keeps_the_rest() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    mask = np.full((6, 8), MASK_NONE, dtype=np.uint8)
    mask[2, 3] = 0
    palette = palette_rgb()
    out = blend_mask(image, mask, palette, alpha=0.5, radius=0)
    expected = np.rint(0.5 * palette[0].astype(float) + 0.5 * image[2, 3]).astype(np.uint8)
    np.testing.assert_array_equal(out[2, 3], expected)
    untouched = np.ones((6, 8), dtype=bool)
    untouched[2, 3] = False
    np.testing.assert_array_equal(out[untouched], image[untouched])

    grown = grow_mask(mask, 1)
    assert (grown[1:4, 2:5] == 0).all() and (grown == 0).sum() == 9
    with pytest.raises(ValueError, match="does not match"):
        blend_mask(image, mask[:5], palette)
