"""The harm guard in the benchmarks: its own stage in `tttkd bench`, RDumb and the unguarded
default as suite modes, the guard's decisions in the stability table."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest

from tttkd_ros.core.config import AdaptConfig
from tttkd_ros.tools.bench.adaptation_suite import VARIANTS, parse_variants, suite_configs
from tttkd_ros.tools.cli import build_parser

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ["lidar_beams=8", "lidar_azimuth_res_deg=2.0", "image_scale=0.1"]


def _bench(*argv: str) -> argparse.Namespace:
    return build_parser("bench").parse_args(["bench", *argv])


def test_rdumb_is_the_shipped_objective_reset_every_100_frames_without_the_guard() -> None:
    configs = suite_configs(["none", "kd+ocl", "rdumb", "kd+ocl-unguarded"],
                            {"max_steps": 2}, {"kd+ocl": {"lr": 0.5}})
    shipped, rdumb, unguarded = configs["kd+ocl"], configs["rdumb"], configs["kd+ocl-unguarded"]
    assert shipped.guard_every == AdaptConfig().guard_every > 0 and shipped.reset_every == 0
    assert (rdumb.mode, rdumb.reset_every, rdumb.guard_every, rdumb.guard_kd_ratio,
            rdumb.guard_min_brightness, rdumb.w_source, rdumb.anchor_weight,
            rdumb.target_norm_check) == ("kd+ocl", 100, 0, 0.0, 0.0, 0.0, 0.0, False)
    assert (unguarded.reset_every, unguarded.guard_every, unguarded.guard_kd_ratio,
            unguarded.guard_min_brightness, unguarded.w_source, unguarded.anchor_weight,
            unguarded.target_norm_check) == (0, 0, 0.0, 0.0, 0.0, 0.0, False)
    for cfg in (shipped, rdumb, unguarded):  # what --adapt sets reaches the variants too
        assert cfg.max_steps == 2 and cfg.lr == 0.5
    assert set(VARIANTS) == {"rdumb", "kd+ocl-unguarded"}
    with pytest.raises(ValueError, match=r"unknown or no modes \['magic'\]"):
        suite_configs(["kd", "magic"], {}, {})


def test_variants_are_modes_with_settings_over_them_side_by_side() -> None:
    variants = parse_variants(["ws1=kd+ocl:w_source=1:lr=0.003", "slow=rdumb:reset_every=50"])
    configs = suite_configs(["kd+ocl", "ws1", "slow"], {"max_steps": 2}, {}, variants)
    assert (configs["ws1"].mode, configs["ws1"].w_source, configs["ws1"].lr) == (
        "kd+ocl", 1.0, 0.003)
    assert configs["kd+ocl"].w_source == AdaptConfig().w_source
    assert (configs["slow"].reset_every, configs["slow"].guard_every) == (50, 0)
    assert configs["ws1"].max_steps == configs["slow"].max_steps == 2
    for bad in ("ws1", "kd=kd", "x=magic", "x=kd:rate=1"):
        with pytest.raises(ValueError, match="--variant"):
            parse_variants([bad])


def test_stability_suite_runs_rdumb_and_tables_the_guard(tiny_checkpoint: Path,
                                                          tmp_path: Path) -> None:
    out = tmp_path / "stab.json"
    world = [a for kv in TINY for a in ("--world", kv)]
    args = _bench("--suite", "stability", "--json", str(out), "--teacher",
                  f"rnd={tiny_checkpoint},,56", "--device", "cpu", "--no-progress", *world,
                  "--frames", "2", "--window", "2", "--shifts", "fog", "--modes",
                  "rdumb,checked", "--variant", "checked=kd+ocl:guard_every=1")
    assert args.func(args) == 0
    result = json.loads(out.read_text())
    assert result["configs"]["rdumb"]["reset_every"] == 100
    runs = result["runs"]["rnd"]["fog"]
    assert set(runs) == {"none", "rdumb", "checked"}
    assert runs["none"]["guard_flips"] == runs["rdumb"]["guard_flips"] == []  # no guard
    assert len(runs["checked"]["guard_flips"]) == 2  # every frame judged
    assert all(0.0 <= f <= 1.0 for f in runs["checked"]["guard_flips"])
    md = (tmp_path / "stab.md").read_text()
    assert "guard rollbacks | untrusted camera-frames |" in md
    assert "| rnd | fog | rdumb |" in md


def _latency(tmp_path: Path, guard_every: int) -> list[dict]:
    out = tmp_path / f"bench{guard_every}.json"
    args = _bench("--json", str(out), "--points", "2000", "--cameras", "1", "--repeats", "2",
                  "--period-ms", "0", "--device", "cpu", "--image-hw", "28", "56",
                  "--teacher-height", "28", "--no-progress", "--guard-every", str(guard_every))
    assert args.func(args) == 0
    result = json.loads(out.read_text())
    assert result["config"]["guard_every"] == guard_every
    return result["results"]


def test_bench_reports_the_guards_own_cost_as_a_stage(tmp_path: Path) -> None:
    for r in _latency(tmp_path, 1):  # sync and async
        guard = r["stage_ms"]["guard"]
        assert set(guard) == {"p50", "p99"} and 0.0 < guard["p50"] <= guard["p99"]
    for r in _latency(tmp_path, 0):  # no guard: nothing measured
        assert all(math.isnan(v) for v in r["stage_ms"]["guard"].values())
