"""`tttkd bench`: per-stage times and publish latency of the engine, sync and async.

This is `--suite latency`, the default; `--suite adaptation` and `--suite stability` (does
adaptation help, and does it last) live in adaptation_suite.py.

For every cloud size and camera count: PointCloud2 decode, voxelize, teacher (all cameras),
the harm guard (its source pass and check, on the frames that ran it: every frame with
--guard-every 1, the default here), one adaptation step, inference and output conversion
(p50 / p99 over --repeats frames after one warm-up frame), then the publish latency (the
time until `process` returns the prediction) and adaptation steps per second of each
schedule, with frames arriving every --period-ms as from a LiDAR (a frame that is late
waits for nothing). Teacher, step and inference times are the engine's own (CUDA events on
CUDA); under async they are measured while the other work runs. Also peak host RSS, GPU
memory on CUDA, the decode compared with sensor_msgs_py and a naive per-point loop, and the
machine. Clouds are synthetic streets (bench/model.py's street_cloud), the model random-init
unless --checkpoint, the teacher random-init unless --teacher-weights: timings do not depend
on the weights.
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from tttkd_ros.core.adapt.engine import AdaptationEngine
from tttkd_ros.core.adapt.schedule import SKIPPED
from tttkd_ros.core.config import (
    MODES,
    SCHEDULES,
    AdaptConfig,
    ModelConfig,
    TeacherConfig,
)
from tttkd_ros.core.device.selection import resolve_device
from tttkd_ros.core.frame import CameraView, Frame, FrameStats
from tttkd_ros.core.loading import forward_camera, warm_up
from tttkd_ros.core.model.checkpoint import load_checkpoint
from tttkd_ros.core.model.segmentation import build_model
from tttkd_ros.core.model.teacher import DinoTeacher
from tttkd_ros.core.model.voxelize import voxelize
from tttkd_ros.tools.bench import adaptation_suite
from tttkd_ros.tools.bench import convert as msgs
from tttkd_ros.tools.bench.machine import machine_info
from tttkd_ros.tools.bench.model import street_cloud

STAGES = ("decode", "voxelize", "teacher", "guard", "adapt_step", "inference", "output")
CAMERA_YAWS_DEG = (0.0, 60.0, -60.0)  # front, front-left, front-right


def register(p: argparse.ArgumentParser) -> None:
    """Fill `tttkd bench`'s parser (tools/cli.py makes it)."""
    p.add_argument("--suite", default="latency", choices=("latency", "adaptation", "stability"),
                   help="latency: this module; adaptation, stability: adaptation_suite.py")
    p.add_argument("--json", default="", help="result JSON to write")
    p.add_argument("--points", type=int, nargs="+", default=[20_000, 60_000, 120_000])
    p.add_argument("--cameras", type=int, nargs="+", default=[1, 3],
                   choices=range(1, len(CAMERA_YAWS_DEG) + 1))
    p.add_argument("--schedules", nargs="+", default=list(SCHEDULES), choices=SCHEDULES)
    p.add_argument("--repeats", type=int, default=5, help="timed frames per measurement")
    p.add_argument("--period-ms", type=float, default=100.0, help="frame period (10 Hz LiDAR)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--backbone", default="", help="tiny or base (default: tiny on CPU, "
                   "base on CUDA); ignored with --checkpoint")
    p.add_argument("--checkpoint", default="", help="a trained model instead of random init")
    p.add_argument("--mode", default="kd+ocl", choices=MODES, help="adaptation objective")
    p.add_argument("--image-hw", type=int, nargs=2, default=[480, 640], metavar=("H", "W"))
    p.add_argument("--teacher-height", type=int, default=224)
    p.add_argument("--teacher-weights", default="", help="local DINOv2 weights file")
    p.add_argument("--guard-every", type=int, default=1, help="harm guard check every N "
                   "frames (adaptation.guard_every; 1 = each frame, so every timed frame "
                   "measures it; 0 = off)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    adaptation_suite.add_arguments(p)
    p.set_defaults(func=run)


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": math.nan, "p99": math.nan}
    return {"p50": float(np.percentile(values, 50)), "p99": float(np.percentile(values, 99))}


def cameras(count: int, image_hw: tuple[int, int]) -> list[CameraView]:
    """`count` noise-image cameras at the LiDAR's origin, yawed by CAMERA_YAWS_DEG."""
    rng = np.random.default_rng(0)
    return [forward_camera(f"camera{i}", image_hw, rng, yaw)
            for i, yaw in enumerate(CAMERA_YAWS_DEG[:count])]


def build_engine(args: argparse.Namespace, device: torch.device) -> AdaptationEngine:
    teacher_name = TeacherConfig().name
    if args.checkpoint:
        loaded = load_checkpoint(args.checkpoint, device)
        model, teacher_name = loaded.model, loaded.teacher_name
    else:
        torch.manual_seed(0)
        backbone = args.backbone or ("base" if device.type == "cuda" else "tiny")
        model = build_model(ModelConfig(backbone=backbone), device)
    with warnings.catch_warnings():  # random teacher weights are fine for timings
        warnings.simplefilter("ignore", UserWarning)
        teacher = DinoTeacher(TeacherConfig(name=teacher_name, weights=args.teacher_weights,
                                            image_height=args.teacher_height), device)
    # exactly one step per adapted frame: the budget never refuses it. No KD reference: the
    # cameras show noise, which the teacher check would (rightly) not distil from, and the
    # step would then be timed without KD; the guard's source pass runs on checked frames.
    cfg = AdaptConfig(mode=args.mode, max_steps=1, budget_ms=1e9, guard_every=args.guard_every)
    engine = AdaptationEngine(model, cfg, teacher, device)
    warm_up(engine)
    return engine


def run_schedule(engine: AdaptationEngine, frame: Frame, schedule: str, repeats: int,
                 period_s: float) -> dict[str, Any]:
    """`repeats` frames at the sensor period after a warm-up frame, from the source weights."""
    engine.configure(schedule=schedule)
    engine.reset()
    engine.process(frame)
    if engine.background is not None:
        engine.background.settle()
    latency, teacher, guard, step, infer = [], [], [], [], []
    steps = skipped = 0
    start = time.perf_counter()
    for k in range(repeats):
        time.sleep(max(0.0, start + k * period_s - time.perf_counter()))
        t0 = time.perf_counter()
        pred = engine.process(frame)
        latency.append((time.perf_counter() - t0) * 1e3)
        s = pred.stats
        infer.append(s.infer_ms)
        skipped += SKIPPED in s.events
        steps += _adapted(s, teacher, guard, step)
    last = engine.background.settle() if engine.background is not None else None
    if last is not None:
        steps += _adapted(last, teacher, guard, step)
    elapsed = time.perf_counter() - start
    return {"schedule": schedule, "pred": pred, "publish_latency_ms": percentiles(latency),
            "adapt_steps_per_s": steps / elapsed, "skipped_frames": skipped,
            "stage_ms": {"teacher": percentiles(teacher), "guard": percentiles(guard),
                         "adapt_step": percentiles(step), "inference": percentiles(infer)}}


def _adapted(s: FrameStats, teacher: list[float], guard: list[float], step: list[float]) -> int:
    """Collect one adaptation's stage times; returns its steps."""
    if s.steps:
        teacher.append(s.teacher_ms)
        step.append(s.adapt_ms / s.steps)
    if s.guard_ms:
        guard.append(s.guard_ms)
    return s.steps


def bench_config(engine: AdaptationEngine, args: argparse.Namespace, points: int,
                 n_cameras: int, msg: Any) -> list[dict]:
    """The results of every schedule for one cloud size and camera count."""
    device = engine.device
    cloud = street_cloud(points).numpy()
    frame = Frame(cloud, cameras(n_cameras, tuple(args.image_hw)), stamp_ns=1, frame_id="lidar")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    pts = torch.from_numpy(cloud).to(device)

    def vox() -> None:
        voxelize([pts], engine.model.cfg.voxel_size)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    shared = {"voxelize": percentiles(msgs.times_ms(vox, args.repeats))}
    runs = [run_schedule(engine, frame, s, args.repeats, args.period_ms / 1e3)
            for s in args.schedules]
    if msg is not None:
        shared["decode"] = percentiles(msgs.decode_ms(msg, args.repeats))
        shared["output"] = percentiles(msgs.output_ms(msg, runs[-1]["pred"], args.repeats))
    memory = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "gpu_allocated_mb": None, "gpu_reserved_mb": None}
    if device.type == "cuda":
        memory["gpu_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        memory["gpu_reserved_mb"] = torch.cuda.max_memory_reserved(device) / 2**20
    results = []
    for r in runs:
        stage_ms = shared | r.pop("stage_ms")
        r.pop("pred")
        results.append({"points": points, "cameras": n_cameras, **r,
                        "stage_ms": {k: stage_ms[k] for k in STAGES if k in stage_ms},
                        **memory})
    return results


def compare_decode(msg: Any, points: int, repeats: int) -> dict[str, Any]:
    ours = percentiles(msgs.decode_ms(msg, repeats))["p50"]
    theirs = msgs.read_points_numpy_ms(msg, repeats)
    return {"points": points, "decode_ms": ours,
            "read_points_numpy_ms": None if theirs is None else percentiles(theirs)["p50"],
            "struct_loop_ms": msgs.struct_loop_ms(msg, repeats),
            "struct_loop_subset": msgs.STRUCT_SUBSET}


def run(args: argparse.Namespace) -> int:
    if args.suite != "latency":
        return adaptation_suite.run(args)
    device = resolve_device(args.device)
    engine = build_engine(args, device)
    notes, have_msgs = [], msgs.messages_available()
    if not have_msgs:
        notes.append("sensor_msgs is not importable: decode and output stages skipped")
    elif not msgs.has_read_points_numpy():
        notes.append("sensor_msgs_py is not importable: no read_points_numpy comparison")
    configs = [(n, c) for n in args.points for c in args.cameras]
    results, conversion = [], []
    for points, n_cameras in tqdm(configs, desc="bench", unit="config",
                                  disable=args.no_progress):
        msg = msgs.cloud_message(street_cloud(points).numpy()) if have_msgs else None
        if msg is not None and n_cameras == args.cameras[0]:
            conversion.append(compare_decode(msg, points, args.repeats))
        results.extend(bench_config(engine, args, points, n_cameras, msg))
    out = {"machine": machine_info(device),
           "config": {"backbone": engine.model.cfg.backbone, "mode": args.mode,
                      "max_steps": 1, "guard_every": args.guard_every, "repeats": args.repeats,
                      "period_ms": args.period_ms,
                      "image_hw": list(args.image_hw), "teacher": engine.teacher.name,
                      "teacher_height": args.teacher_height,
                      "model": args.checkpoint or "random init"},
           "results": results, "conversion": conversion, "notes": notes}
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=2) + "\n")
    print_table(out)
    return 0


def print_table(out: dict) -> None:
    head = ("points", "cams", "sched") + STAGES + ("pub p50", "pub p99", "steps/s", "skip")
    print(" ".join(f"{h:>10}" for h in head) + "   (ms, p50 per stage)")
    for r in out["results"]:
        stages = [r["stage_ms"].get(s, {}).get("p50", math.nan) for s in STAGES]
        lat = r["publish_latency_ms"]
        cells = [r["points"], r["cameras"], r["schedule"]] + [f"{v:.2f}" for v in stages] + [
            f"{lat['p50']:.1f}", f"{lat['p99']:.1f}", f"{r['adapt_steps_per_s']:.2f}",
            r["skipped_frames"]]
        print(" ".join(f"{c:>10}" for c in cells))
    for c in out["conversion"]:
        other = c["read_points_numpy_ms"]
        print(f"decode {c['points']} points: {c['decode_ms']:.2f} ms; read_points_numpy "
              f"{'n/a' if other is None else f'{other:.2f} ms'}; per-point struct loop "
              f"{c['struct_loop_ms']:.0f} ms (scaled from {c['struct_loop_subset']})")
    for note in out["notes"]:
        print(f"note: {note}")
