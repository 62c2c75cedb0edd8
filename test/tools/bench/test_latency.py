"""`tttkd bench` at tiny sizes: the JSON has every stage, size, camera count and schedule with
finite numbers (what the numbers are is the benchmark's business, not a test's)."""
from __future__ import annotations

import argparse
import json
import math

from tttkd_ros.core.config import SCHEDULES
from tttkd_ros.tools.bench import latency
from tttkd_ros.tools.bench.convert import has_read_points_numpy, messages_available
from tttkd_ros.tools.cli import build_parser

POINTS, CAMERAS = (2000, 3000), (1, 3)


def _parse(*argv: str) -> argparse.Namespace:
    return build_parser("bench").parse_args(["bench", *argv])


def finite(p: dict) -> bool:
    return set(p) == {"p50", "p99"} and all(math.isfinite(v) for v in p.values())


def test_bench_json_has_every_stage_size_and_schedule(tmp_path) -> None:
    out = tmp_path / "bench.json"
    args = _parse("--json", str(out), "--points", *map(str, POINTS), "--cameras",
                  *map(str, CAMERAS), "--repeats", "1", "--period-ms", "0", "--device", "cpu",
                  "--image-hw", "28", "56", "--teacher-height", "28", "--no-progress")
    assert args.func(args) == 0
    result = json.loads(out.read_text())
    stages = latency.STAGES if messages_available() else ("voxelize", "teacher", "adapt_step",
                                                        "inference")
    keys = {(r["points"], r["cameras"], r["schedule"]) for r in result["results"]}
    assert keys == {(p, c, s) for p in POINTS for c in CAMERAS for s in SCHEDULES}
    for r in result["results"]:
        assert set(stages) <= set(r["stage_ms"]) and all(map(finite, r["stage_ms"].values()))
        assert finite(r["publish_latency_ms"]) and r["adapt_steps_per_s"] > 0
        assert r["peak_rss_mb"] > 0 and r["gpu_allocated_mb"] is None  # CPU run
    assert {"cpu", "torch", "device", "spconv"} <= set(result["machine"])
    if messages_available():
        assert [c["points"] for c in result["conversion"]] == list(POINTS)
        for c in result["conversion"]:
            assert math.isfinite(c["decode_ms"]) and math.isfinite(c["struct_loop_ms"])
            assert (c["read_points_numpy_ms"] is None) != has_read_points_numpy()
    else:
        assert any("sensor_msgs" in note for note in result["notes"])
