"""`tttkd bench --suite adaptation | stability`: every mode on the same frames, honest tables."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from tttkd_ros.tools.bench.adaptation_report import summarize
from tttkd_ros.tools.bench.adaptation_suite import SharedTeacher, parse_teacher
from tttkd_ros.tools.bench.intervals import mean_interval, mean_relative_interval, significant
from tttkd_ros.tools.cli import build_parser

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ["lidar_beams=8", "lidar_azimuth_res_deg=2.0", "image_scale=0.1"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _bench(*argv: str) -> argparse.Namespace:
    return build_parser("bench").parse_args(["bench", *argv])


def _suite(out: Path, checkpoint: Path, suite: str, *extra: str) -> dict:
    world = [a for kv in TINY for a in ("--world", kv)]
    args = _bench("--suite", suite, "--json", str(out), "--teacher",
                  f"rnd={checkpoint},,56", "--device", "cpu", "--no-progress", *world, *extra)
    assert args.func(args) == 0
    return json.loads(out.read_text())


def test_parse_teacher_reads_label_checkpoint_weights_height(tmp_path: Path):
    ckpt, weights = tmp_path / "m.pt", tmp_path / "w.pth"
    ckpt.touch()
    weights.touch()
    assert parse_teacher(f"syn={ckpt},{weights},168") == (
        "syn", {"checkpoint": str(ckpt), "weights": str(weights), "image_height": 168})
    assert parse_teacher(f"rnd={ckpt}")[1] == {"checkpoint": str(ckpt), "weights": "",
                                               "image_height": 224}
    with pytest.raises(ValueError, match="LABEL=CHECKPOINT"):
        parse_teacher(str(ckpt))
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        parse_teacher(f"x={ckpt},{tmp_path / 'missing.pth'}")


def test_shared_teacher_computes_each_image_once():
    calls = []

    class Counting:
        device = "cpu"

        def features(self, image):
            calls.append(image.sum())
            import torch
            return torch.full((2, 1, 1), float(image.sum()))

    shared = SharedTeacher(Counting())
    a, b = np.zeros((4, 4, 3), np.uint8), np.ones((4, 4, 3), np.uint8)
    first = shared.features(a)
    assert shared.features(a.copy()) is first  # same bytes, same grid
    assert float(shared.features(b)[0, 0, 0]) == 48.0
    assert len(calls) == 2
    shared.clear()
    shared.features(a)
    assert len(calls) == 3


def _run(mode, drive, miou, frames=10, protocol="continual", steps=1, seed=20, per_frame=None):
    return {"teacher": "t", "protocol": protocol, "steps": steps, "drive": drive,
            "seed": seed, "frames": frames, "mode": mode, "miou": miou,
            "miou_per_frame": per_frame or [miou] * frames}


def test_summary_relative_change_is_against_none_on_the_same_frames():
    runs = [_run("none", "clean", 50.0), _run("none", "fog", 20.0), _run("none", "dark", 40.0),
            _run("none", "fog", 10.0, frames=4),
            _run("kd", "clean", 49.0), _run("kd", "fog", 25.0), _run("kd", "dark", 38.0),
            _run("kd", "fog", 12.0, frames=4, protocol="episodic", steps=10)]
    rows = {(s["protocol"], s["mode"]): s for s in summarize(runs)}
    kd = rows[("continual", "kd")]
    assert kd["drives"]["fog"]["relative_pct"] == pytest.approx(25.0)
    assert kd["drives"]["dark"]["delta"] == pytest.approx(-2.0)
    assert kd["mean_relative_pct_shifts"] == pytest.approx((25.0 - 5.0) / 2)
    assert kd["worst_delta_shifts"] == pytest.approx(-2.0)
    assert kd["id_delta"] == pytest.approx(-1.0)
    episodic = rows[("episodic", "kd")]  # compared with none on its own 4 frames
    assert episodic["drives"]["fog"]["relative_pct"] == pytest.approx(20.0)
    assert episodic["id_delta"] is None


def test_cells_are_means_over_seeds_with_paired_intervals_and_noise_is_no_gain():
    rng = np.random.default_rng(0)
    scene = rng.uniform(20, 60, size=(2, 12))  # the scene moves both modes alike
    noise = rng.normal(0.0, 2.0, size=(2, 12))
    runs = []
    for k, seed in enumerate((20, 21)):
        for drive, gain in (("clean", noise[k]), ("fog", 3.0 + 0.1 * noise[k])):
            runs += [_run("none", drive, float(scene[k].mean()), 12, seed=seed,
                          per_frame=list(scene[k])),
                     _run("kd", drive, float((scene[k] + gain).mean()), 12, seed=seed,
                          per_frame=list(scene[k] + gain))]
    (kd,) = summarize(runs)
    fog, clean = kd["drives"]["fog"], kd["drives"]["clean"]
    assert fog["seeds"] == [20, 21] and fog["none"] == pytest.approx(scene.mean())
    assert fog["delta"] == pytest.approx(3.0 + 0.1 * noise.mean())
    lo, hi = fog["delta_interval"]
    assert 2.5 < lo < fog["delta"] < hi < 3.5 and fog["significant"]  # despite the scene
    lo, hi = clean["delta_interval"]
    assert lo < 0 < hi and not clean["significant"]  # pure noise: no gain
    rel_lo, rel_hi = kd["mean_relative_interval"]
    assert rel_lo < kd["mean_relative_pct_shifts"] < rel_hi and kd["mean_relative_significant"]


def test_an_interval_needs_a_spread_and_two_values():
    assert mean_interval([1.0]) is None and mean_interval([2.0, 2.0]) == (2.0, 2.0)
    assert not significant(None) and significant((0.1, 0.5)) and significant((-2, -1))
    assert mean_relative_interval([[1.0, 2.0], [3.0]], [10.0, 10.0]) is None


@pytest.fixture(scope="module")
def adaptation(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("suite") / "adapt.json"
    result = _suite(out, tiny_checkpoint, "adaptation", "--frames", "2", "--shifts", "fog",
                    "--steps", "1,2", "--modes", "kd,tent,kd+ocl", "--episodic-steps", "2",
                    "--episodic-shifts", "fog,dark", "--episodic-frames", "1",
                    "--adapt", "kd+ocl.lr=0", "--adapt", "kd+ocl.target_norm_levels=0",
                    "--drive-seeds", "20,21")
    result["_md"] = out.with_suffix(".md").read_text()
    return result


def test_adaptation_suite_runs_every_mode_on_every_drive(adaptation: dict):
    runs = adaptation["runs"]
    cells = {(r["protocol"], r["steps"], r["drive"], r["mode"]) for r in runs}
    for drive in ("clean", "fog"):
        assert ("-", 0, drive, "none") in cells
        for steps in (1, 2):
            assert {("continual", steps, drive, m) for m in ("kd", "tent", "kd+ocl")} <= cells
    for drive in ("fog", "dark"):  # dark: episodic only
        assert {("episodic", 2, drive, m) for m in ("kd", "tent", "kd+ocl")} <= cells
    assert ("episodic", 2, "clean", "kd") not in cells
    assert ("continual", 1, "dark", "kd") not in cells
    nones = [r for r in runs if r["mode"] == "none"]
    assert sorted((r["drive"], r["frames"], r["seed"]) for r in nones) == sorted(
        (d, f, s) for d, f in (("clean", 2), ("dark", 1), ("fog", 1), ("fog", 2))
        for s in (20, 21))
    assert all(c["seeds"] == [20, 21] for row in adaptation["summary"]
               for c in row["drives"].values())
    for r in runs:  # the budget never cuts a step; KD alone has nothing to learn from
        dark_kd = r["drive"] == "dark" and r["mode"] == "kd"  # under-exposed: no targets
        assert r["steps_mean"] == (0 if dark_kd else r["steps"])
        distils = r["mode"] in ("kd", "kd+ocl")
        assert (r["guard"]["cameras_untrusted"] != {}) == (r["drive"] == "dark" and distils)
    assert len(adaptation["summary"]) == 3 * 3  # modes x (K=1, K=2, episodic)
    episodic = [r for r in adaptation["summary"] if r["protocol"] == "episodic"]
    assert all(set(r["drives"]) == {"fog", "dark"} for r in episodic)


def test_a_mode_that_cannot_move_matches_none_exactly(adaptation: dict):
    """kd+ocl with lr 0 and no test-time normalisation takes its steps but never changes a
    weight or a statistic: its predictions, and so its mIoU, must equal none's on the same
    frames, and the table's change is 0."""
    none = {(r["drive"], r["frames"], r["seed"]): r["miou_per_frame"]
            for r in adaptation["runs"] if r["mode"] == "none"}
    frozen = [r for r in adaptation["runs"] if r["mode"] == "kd+ocl"]
    assert frozen
    for r in frozen:
        assert r["miou_per_frame"] == none[(r["drive"], r["frames"], r["seed"])]
    for row in (s for s in adaptation["summary"] if s["mode"] == "kd+ocl"):
        assert all(c["delta"] == 0.0 for c in row["drives"].values())
    assert "| kd+ocl | " in adaptation["_md"]
    assert all(f"| {m} |" in adaptation["_md"] for m in ("none", "kd", "tent"))


def test_stability_suite_windows_and_plot(tiny_checkpoint: Path, tmp_path: Path):
    out = tmp_path / "stab.json"
    result = _suite(out, tiny_checkpoint, "stability", "--frames", "3", "--window", "2",
                    "--shifts", "fog", "--modes", "kd,ocl", "--adapt", "ocl.lr=0")
    runs = result["runs"]["rnd"]["fog"]
    assert set(runs) == {"none", "kd", "ocl"}
    for r in runs.values():
        assert len(r["window_miou"]) == 2  # frames 0-1 and the partial window 2
        assert all(0.0 <= w <= 100.0 for w in r["window_miou"])
    assert runs["ocl"]["window_miou"] == runs["none"]["window_miou"]
    assert (tmp_path / "stab_rnd.png").read_bytes()[:8] == PNG_MAGIC
    assert "| rnd | fog | kd |" in (tmp_path / "stab.md").read_text()


def test_suite_without_teacher_says_what_to_give(tmp_path: Path):
    args = _bench("--suite", "adaptation", "--json", str(tmp_path / "a.json"))
    with pytest.raises(SystemExit, match="--teacher LABEL=CHECKPOINT"):
        args.func(args)


@pytest.mark.parametrize(("extra", "message"), [
    (("--shifts", "fog,smog"), "unknown shifts ['smog']"),
    (("--episodic-shifts", "haze"), "unknown shifts ['haze']"),
    (("--adapt", "kd.rate=1"), "--adapt 'kd.rate=1': expected [MODE.]FIELD=VALUE"),
    (("--adapt", "lr=-1"), "invalid adaptation.lr"),
    (("--modes", "kd,magic"), "unknown or no modes ['magic']"),
    (("--world", "lidar_colour=3"), "unknown synthetic-world setting 'lidar_colour'"),
    (("--drive-seeds", "20,x"), "--drive-seeds '20,x': expected comma-separated integers"),
])
def test_bad_arguments_fail_before_any_run_naming_what_is_wrong(
        tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture, extra, message):
    out = tmp_path / "a.json"
    args = _bench("--suite", "adaptation", "--json", str(out), "--teacher",
                  f"rnd={tiny_checkpoint}", "--device", "cpu", *extra)
    assert args.func(args) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_missing_teacher_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture):
    args = _bench("--suite", "stability", "--json", str(tmp_path / "s.json"), "--teacher",
                  f"x={tmp_path / 'nope.pt'}")
    assert args.func(args) == 2
    assert f"--teacher x: no file {tmp_path / 'nope.pt'}" in capsys.readouterr().err
