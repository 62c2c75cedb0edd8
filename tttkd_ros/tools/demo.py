"""`tttkd demo`: what the package is for, on a fresh machine, through the real node over DDS.

Prepares (or reuses from the cache, demo_assets.py) a stand-in DINOv2 teacher pretrained on
the synthetic world, the shipped source model paired with it, and two target drives as
rosbag2: one whose LiDAR changed (the camera intact) and one whose camera changed. Starts
`adapt_node` as its own process on sim time and replays each bag through it in lockstep
(replay.py) twice: adaptation off, then `~/reset` and adaptation on (kd+ocl, the shipped
settings; `--steps` gradient steps per frame, 1 by default). Scores the node's
`~/labeled_points` against the bags' ground truth and writes the JSON, overlay PNGs and
the node's log.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from tttkd_ros.core.labels import CLASS_NAMES, palette_rgb, raw_to_train
from tttkd_ros.core.metrics import ConfusionMatrix
from tttkd_ros.data.shifts import list_shifts
from tttkd_ros.ros.bag import POINTS_TOPIC, BagError, BagTopic, read_bag_frames, topic_info
from tttkd_ros.ros.dds_env import keep_dds_local
from tttkd_ros.ros.extrinsics import quaternion_from_matrix
from tttkd_ros.tools import demo_assets
from tttkd_ros.tools.overlay import write_overlay

ADAPT_MODE = "kd+ocl"
# Per-frame adaptation budget: a LiDAR frame period on a GPU; on a CPU a step takes about a
# second, so the demo lets it finish (it shows the method, not real time on a CPU).
BUDGET_MS_CUDA = 100.0
BUDGET_MS_CPU = 60000.0
LOCKSTEP_SYNC_TIMEOUT_S = 10.0  # the player sends every image: wait for it on a busy machine
# On a small, busy CPU torch's OpenMP pool spin-waits on spconv's many tiny GEMMs; one
# thread was ~10x faster on this project's 2-core machine (training 98 s -> 9 s).
CPU_THREADS = 1
# During a replay the node is the only busy process (the player waits for its outputs), and
# two threads adapted a frame 18 % faster than one here (1.12 s against 1.37 s per frame).
NODE_CPU_THREADS = 2
START_TIMEOUT_S = 300.0  # node imports (torch, timm, spconv), model load and warm-up
FRAME_TIMEOUT_S = 300.0
OVERLAY_FRAMES = 3
LOG_TAIL_LINES = 30
# The CLI imports every tool (torch, spconv) before the demo runs: count that time too.
_T_LOADED = time.monotonic()
LATENCY_NOTE = ("latency_ms: wall time from publishing a frame's cloud to receiving its "
                "~/labeled_points (DDS, sync, conversion, teacher, adaptation, inference, "
                "masks); compute_ms: teacher_ms + adapt_ms + infer_ms from ~/stats")


class DemoError(RuntimeError):
    """A failure the user can act on; the text says what to do."""


def register(p: argparse.ArgumentParser) -> None:
    """Fill `tttkd demo`'s parser (tools/cli.py makes it)."""
    p.description = ("Prepare (or reuse from $XDG_CACHE_HOME/tttkd_ros) a stand-in teacher, "
                     "the shipped source model paired with it and two target rosbag2 drives "
                     "(the LiDAR changed; the camera changed), run the real adapt_node on "
                     "each over DDS without and with adaptation, and report mIoU, latency "
                     "and steps per frame.")
    p.add_argument("--json", type=Path, help="result JSON (default: OUT/demo.json)")
    p.add_argument("--out", type=Path, default=Path("tttkd_demo"),
                   help="folder for the JSON, overlay PNGs and node log (default ./tttkd_demo)")
    p.add_argument("--frames", type=int, help="length of each target drive (default: the "
                   "profile's)")
    p.add_argument("--steps", type=int, default=1, metavar="K",
                   help="gradient steps per frame in the adapted passes (default 1, the CPU "
                        "default; a GPU's budget allows about 5)")
    p.add_argument("--quick", action="store_true",
                   help="reduced demo: few frames and beams, small images, short training")
    p.add_argument("--lidar-shift", choices=list_shifts(), metavar="NAME",
                   help=f"the drive whose LiDAR changed (default "
                        f"{demo_assets.DEFAULT_LIDAR_SHIFT}; see `tttkd synth --list-shifts`)")
    p.add_argument("--camera-shift", choices=list_shifts(), metavar="NAME",
                   help=f"the drive whose camera changed (default "
                        f"{demo_assets.DEFAULT_CAMERA_SHIFT})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.frames is not None and args.frames < 1:
        print("tttkd demo: --frames must be at least 1", file=sys.stderr)
        return 2
    if args.steps < 1:
        print("tttkd demo: --steps must be at least 1", file=sys.stderr)
        return 2
    try:
        settings = demo_assets.demo_settings(args.quick, args.lidar_shift, args.camera_shift,
                                             args.frames)
    except ValueError as err:
        print(f"tttkd demo: {err}", file=sys.stderr)
        return 2
    try:
        demo(args, settings)
    except (DemoError, BagError) as err:
        print(f"tttkd demo: error: {err}\n(the cached teacher, checkpoint and bags are in "
              f"{demo_assets.cache_root()}; delete it to rebuild them)", file=sys.stderr)
        return 1
    return 0


# -- the node process --------------------------------------------------------------------------

def _ros_value(value: Any) -> str:
    """A parameter value as `-p name:=value` text; floats keep a '.' or exponent so that
    a float parameter never reads as an integer."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_ros_value(v) for v in value) + "]"
    return str(value)


class NodeProcess:
    """adapt_node as a child process in ROS namespace `namespace` (with /clock and
    /diagnostics moved into it), its stdout and stderr in `log_path`."""

    def __init__(self, params: dict[str, Any], namespace: str, log_path: Path,
                 env: dict[str, str]) -> None:
        cmd = [sys.executable, "-m", "tttkd_ros.ros.node", "--ros-args", "-r",
               f"__ns:={namespace}"]
        for topic in ("/clock", "/diagnostics"):
            cmd += ["-r", f"{topic}:={namespace}{topic}"]
        for name, value in params.items():
            cmd += ["-p", f"{name}:={_ros_value(value)}"]
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "w") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:]) or "(empty)"

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGINT (Ctrl-C: the node shuts down cleanly), then wait; kill if it hangs."""
        if self.alive():
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def _node_env(cpu: bool) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if cpu:
        env.setdefault("OMP_NUM_THREADS", str(NODE_CPU_THREADS))
    # the child must import this very package, installed or not
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


# -- ground truth --------------------------------------------------------------------------

class Truth:
    """The bag's ground truth per stamp: raw labels (N,) uint32 and points (N, 3) float32;
    per camera T_cam_lidar; camera images of the overlay frames (a few, evenly spread)."""

    def __init__(self, bag: Path) -> None:
        self.stamps: list[int] = []
        self.labels: dict[int, np.ndarray] = {}
        self.xyz: dict[int, np.ndarray] = {}
        self.images: dict[int, dict[str, np.ndarray]] = {}
        self.extrinsics: dict[str, np.ndarray] = {}
        count = topic_info(bag).get(POINTS_TOPIC, BagTopic("", 0, False)).count
        picks = {int(i) for i in np.linspace(0, max(count - 1, 0), OVERLAY_FRAMES)}
        for i, item in enumerate(read_bag_frames(bag, require_labels=True)):
            stamp = item.frame.stamp_ns
            self.stamps.append(stamp)
            self.labels[stamp] = item.labels
            self.xyz[stamp] = item.frame.points[:, :3]
            for view in item.frame.cameras:
                self.extrinsics.setdefault(view.name, np.asarray(view.T_cam_lidar))
                if i in picks:
                    self.images.setdefault(stamp, {})[view.name] = view.image
        if not self.stamps:
            raise DemoError(f"{bag} holds no frames; delete it so that the demo writes it anew")


def node_parameters(checkpoint: Path, teacher: Path, extrinsics: dict[str, np.ndarray],
                    settings: demo_assets.DemoSettings, cpu: bool, steps: int = 1
                    ) -> dict[str, Any]:
    """adapt_node's parameters for the demo, `steps` gradient steps per adapted frame at
    most; the extrinsics are the bags' /tf_static."""
    if not extrinsics:
        raise DemoError("the target bags have no camera frames; the demo needs their camera "
                        "topics (delete the bags so that the demo writes them anew)")
    params: dict[str, Any] = {
        "checkpoint": str(checkpoint), "use_sim_time": True,
        "qos.input.reliability": "reliable",  # lockstep: no frame may be lost
        # lockstep: every frame's image comes; on a loaded machine it may come later than
        # the 0.2 s a live camera gets, and a frame gone LiDAR-only would change the table
        "sync.timeout": LOCKSTEP_SYNC_TIMEOUT_S,
        "teacher.name": demo_assets.TEACHER, "teacher.weights": str(teacher),
        "teacher.image_height": settings.teacher_height,
        "adaptation.mode": ADAPT_MODE,
        "adaptation.budget_ms": BUDGET_MS_CPU if cpu else BUDGET_MS_CUDA,
        "adaptation.max_steps": steps,
    }
    params["cameras"] = list(extrinsics)
    for cam, T in extrinsics.items():
        params[f"{cam}.xyz"] = [float(v) for v in T[:3, 3]]
        params[f"{cam}.quat"] = [float(v) for v in quaternion_from_matrix(T[:3, :3])]
    return params


def shared_extrinsics(truths: dict[str, Truth]) -> dict[str, np.ndarray]:
    """The cameras of the target drives, which one node serves: they must agree."""
    first = next(iter(truths.values())).extrinsics
    for shift, truth in truths.items():
        same = truth.extrinsics.keys() == first.keys() and all(
            np.allclose(truth.extrinsics[c], first[c]) for c in first)
        if not same:
            raise DemoError(f"the {shift} drive's cameras differ from the first drive's; "
                            "delete the cached bags so that the demo writes them anew")
    return first


# -- scoring -------------------------------------------------------------------------------

def _percentiles(values: Sequence[float]) -> dict[str, float]:
    p50, p99 = np.percentile(values, [50, 99])
    return {"p50": float(p50), "p99": float(p99)}


def score(outputs: Sequence[Any], truth: Truth) -> dict:
    """A mode's JSON entry from the node's outputs (replay.FrameOutput) of one pass."""
    if len(outputs) != len(truth.stamps):
        raise DemoError(f"the node answered {len(outputs)} of the bag's {len(truth.stamps)} "
                        "frames")
    total = ConfusionMatrix(len(CLASS_NAMES))
    per_frame, compute = [], []
    for out in outputs:
        if out.stamp_ns not in truth.labels:
            raise DemoError(f"the node answered stamp {out.stamp_ns}, which the bag lacks")
        if not np.array_equal(out.xyz, truth.xyz[out.stamp_ns]):
            raise DemoError(f"~/labeled_points at {out.stamp_ns} does not echo the input "
                            f"points in order ({len(out.xyz)} vs "
                            f"{len(truth.xyz[out.stamp_ns])} points)")
        cm = ConfusionMatrix(len(CLASS_NAMES))
        cm.update(raw_to_train(truth.labels[out.stamp_ns]), out.labels)
        total.matrix += cm.matrix
        miou = cm.miou()
        per_frame.append(None if np.isnan(miou) else miou)
        s = out.stats
        compute.append(s["teacher_ms"] + s["adapt_ms"] + s["infer_ms"])
    iou, present = total.iou() * 100.0, total.present()
    latency = [o.latency_ms for o in outputs]
    return {
        "miou": total.miou(),
        "iou": {name: float(iou[i]) for i, name in enumerate(CLASS_NAMES) if present[i]},
        "latency_ms": _percentiles(latency),
        "compute_ms": _percentiles(compute),
        "steps_mean": float(np.mean([o.stats["steps"] for o in outputs])),
        "over_budget_frames": int(sum(bool(o.stats["over_budget"]) for o in outputs)),
        "outputs": len(outputs),
        "miou_per_frame": per_frame,
        "latency_ms_per_frame": latency,
    }


# -- orchestration -------------------------------------------------------------------------

def _replay(player: Any, node: NodeProcess, bag: Path, truth: Truth, offset_ns: int,
            desc: str) -> list:
    from tttkd_ros.ros.replay import bag_frames

    cameras = list(truth.extrinsics)
    with tqdm(total=len(truth.stamps), desc=desc, unit="frame") as bar:
        return player.play(bag_frames(bag, cameras, offset_ns), offset_ns, FRAME_TIMEOUT_S,
                           node.alive, bar.update)


def run_passes(drives: dict[str, tuple[Path, Truth]], params: dict[str, Any], log_path: Path,
               cpu: bool, timings: dict[str, float]) -> dict[str, dict[str, list]]:
    """Start the node; replay each drive without, then (after `~/reset`) with adaptation;
    stop the node. Returns drive -> mode -> the node's outputs."""
    try:
        from tttkd_ros.ros.replay import LockstepPlayer, ReplayError
    except ImportError as err:
        raise DemoError(f"the demo runs the ROS node and needs rclpy ({err}); install the ROS "
                        "2 Python packages: pip install '.[ros]', or source a ROS 2 Jazzy "
                        "install") from err
    # a private namespace: no other ROS graph on this host can feed or read the demo node
    namespace = f"/tttkd_demo_{os.getpid()}"
    node = NodeProcess(params, namespace, log_path, _node_env(cpu))
    passes: dict[str, dict[str, list]] = {}
    try:
        player = LockstepPlayer(namespace, cameras=params["cameras"])
        try:
            t0 = time.monotonic()
            print(f"starting adapt_node (log: {log_path}) ...", flush=True)
            player.wait_ready(START_TIMEOUT_S, node.alive)
            timings["node_start_s"] = time.monotonic() - t0
            clock_ns = 0  # every pass must look newer than the last to the synchroniser
            for shift, (bag, truth) in drives.items():
                passes[shift] = {}
                for mode, enabled in (("none", False), (ADAPT_MODE, True)):
                    t0 = time.monotonic()
                    offset_ns = clock_ns - truth.stamps[0] if clock_ns else 0
                    player.reset()  # every pass starts from the source model
                    player.enable_adaptation(enabled)
                    desc = f"{shift} drive, adaptation {'on (' + mode + ')' if enabled else 'off'}"
                    passes[shift][mode] = _replay(player, node, bag, truth, offset_ns, desc)
                    timings[f"replay_{shift}_{mode}_s"] = time.monotonic() - t0
                    clock_ns = truth.stamps[-1] + offset_ns + 10 * 1_000_000_000
        finally:
            player.close()
    except ReplayError as err:
        raise DemoError(f"{err}\n--- last lines of the adapt_node log ({log_path}) ---\n"
                        f"{node.tail()}") from err
    finally:
        code = node.stop()
    if code not in (0, -signal.SIGINT):
        raise DemoError(f"adapt_node exited with code {code} after the replay; see {log_path}:"
                        f"\n{node.tail()}")
    return passes


def write_overlays(out_dir: Path, shift: str, truth: Truth, passes: dict[str, list]
                   ) -> list[Path]:
    """Camera image + predicted mask for the overlay frames of every pass of one drive."""
    palette, paths = palette_rgb(), []
    for mode, outputs in passes.items():
        tag = mode.replace("+", "_")
        for out in outputs:
            index = truth.stamps.index(out.stamp_ns)
            for cam, image in truth.images.get(out.stamp_ns, {}).items():
                if cam in out.masks:
                    paths.append(write_overlay(
                        out_dir / "overlays" / f"{shift}_frame{index:03d}_{cam}_{tag}.png",
                        image, out.masks[cam], palette))
    return paths


def print_table(result: dict) -> None:
    print(f"\n{'drive':<24} {'mode':<8} {'mIoU %':>7}  {'latency p50/p99 ms':>19}  "
          f"{'compute p50/p99 ms':>19}  {'steps/frame':>11}")
    for shift, drive in result["drives"].items():
        label = f"{shift} ({drive['changed']} changed)"
        for mode, e in drive["modes"].items():
            lat, comp = e["latency_ms"], e["compute_ms"]
            print(f"{label:<24} {mode:<8} {e['miou']:>7.1f}  {lat['p50']:>9.0f} /"
                  f"{lat['p99']:>7.0f}  {comp['p50']:>9.0f} /{comp['p99']:>7.0f}  "
                  f"{e['steps_mean']:>11.2f}")
            label = ""
    for shift, drive in result["drives"].items():
        print(f"adaptation on the {shift} drive ({drive['changed']} changed): "
              f"{drive['gain']:+.1f} mIoU points over {drive['frames']} frames")
    print(f"({LATENCY_NOTE})")


def print_teacher_note(teacher: dict) -> None:
    accuracy = teacher.get("held_out_patch_accuracy", {})
    mean = f"{np.mean(list(accuracy.values())):.0f} %" if accuracy else "unknown"
    print(f"The teacher is a stand-in for Meta's DINOv2 weights, which cannot be downloaded "
          f"here: a ViT-S/14 trained on the synthetic world's images for "
          f"{teacher.get('steps', '?')} steps (held-out patch accuracy {mean}). With the real "
          "weights, pair a checkpoint with them (`tttkd train --init CKPT --teacher-weights "
          "dinov2_vits14.pth ...`) and start the node with `teacher.weights:=` that file "
          "(README: DINOv2 weights).")


def print_timings(timings: dict[str, float], cached: dict[str, bool], cache: Path) -> None:
    parts = [f"{name[:-2].replace('_', ' ')} {seconds:.1f} s"
             + (" (cached)" if cached.get(name[:-2]) else "")
             for name, seconds in timings.items() if name != "total_s"]
    kind = ("cached run" if all(cached.values())
            else "first run (built: " + ", ".join(k for k, v in cached.items() if not v) + ")")
    print(f"timings: {', '.join(parts)}")
    print(f"total {timings['total_s']:.0f} s, {kind}; cache: {cache}")


def _prepare(settings: demo_assets.DemoSettings, cpu: bool, timings: dict[str, float],
             cached: dict[str, bool]) -> tuple[Path, Path, dict[str, Path]]:
    """The teacher, the paired checkpoint and the target bags, built or from the cache."""
    import torch

    teacher = demo_assets.prepare_teacher(settings)  # dense ViT GEMMs: all threads help
    threads = torch.get_num_threads()
    if cpu and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(CPU_THREADS)
    try:
        checkpoint = demo_assets.prepare_checkpoint(settings, teacher.path)
    finally:
        torch.set_num_threads(threads)
    built = {"teacher": teacher, "checkpoint": checkpoint}
    bags = {}
    for shift in settings.shifts():
        built[f"bag {shift}"] = bag = demo_assets.prepare_target_bag(settings, shift)
        bags[shift] = bag.path
    for name, entry in built.items():
        timings[f"{name.replace(' ', '_')}_s"] = entry.seconds
        cached[name.replace(' ', '_')] = entry.cached
    return teacher.path, checkpoint.path, bags


def demo(args: argparse.Namespace, settings: demo_assets.DemoSettings) -> dict:
    """Run the demo (see the module doc) on `settings`; returns the result JSON."""
    keep_dds_local()  # before any rclpy context and before the node process inherits it
    import torch  # late: `tttkd --help` should not pay for it

    cpu = not torch.cuda.is_available()
    cache = demo_assets.cache_root() / settings.source_key()
    timings: dict[str, float] = {}
    cached: dict[str, bool] = {}
    teacher, checkpoint, bags = _prepare(settings, cpu, timings, cached)
    truths = {shift: Truth(bag) for shift, bag in bags.items()}
    params = node_parameters(checkpoint, teacher, shared_extrinsics(truths), settings, cpu,
                             args.steps)
    out_dir = args.out
    passes = run_passes({s: (bags[s], truths[s]) for s in bags}, params,
                        out_dir / "adapt_node.log", cpu, timings)

    changed = dict(zip(settings.shifts(), ("LiDAR", "camera")))
    result: dict[str, Any] = {"classes": list(CLASS_NAMES), "drives": {},
                              "latency_note": LATENCY_NOTE, "overlays": []}
    for shift, modes in passes.items():
        scores = {mode: score(outputs, truths[shift]) for mode, outputs in modes.items()}
        result["drives"][shift] = {
            "changed": changed[shift], "frames": len(truths[shift].stamps),
            "bag": str(bags[shift]), "modes": scores,
            "gain": scores[ADAPT_MODE]["miou"] - scores["none"]["miou"]}
        result["overlays"] += [str(p) for p in write_overlays(out_dir, shift, truths[shift],
                                                                modes)]
    teacher_summary = teacher.with_suffix(".json")
    result["teacher"] = {**(json.loads(teacher_summary.read_text())
                            if teacher_summary.exists() else {}), "weights": str(teacher)}
    result["config"] = {"profile": settings.profile, "checkpoint": str(checkpoint),
                        "node_parameters": params, "world": settings.world,
                        "settings": asdict(settings)}
    result["cached"] = cached
    timings["total_s"] = time.monotonic() - _T_LOADED
    result["timings_s"] = timings
    json_path = args.json or out_dir / "demo.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print_teacher_note(result["teacher"])
    print_timings(timings, cached, cache)
    print(f"wrote {json_path}, {len(result['overlays'])} overlays in {out_dir / 'overlays'}, "
          f"node log {out_dir / 'adapt_node.log'}")
    return result
