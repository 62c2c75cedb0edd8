"""Soak benchmark: thousands of frames through a running adapt_node over DDS, with the node's
host memory (RSS) and GPU memory sampled over time and the slope of each.

    python -m tttkd_ros.tools.bench.soak --frames 3000 --json soak.json [--checkpoint CKPT]

The node runs as users run it, a separate `adapt_node` process, under a name and namespace
of its own so it meets no other graph's nodes. Frames go one at a time (cloud, image and
CameraInfo, stamped with the wall clock): the next is sent once the node's ~/stats for the
previous one has arrived, so the node adapts on every frame and drops none. A few
pre-built frames of different sizes take turns, so allocations vary as they do on a robot.

Memory: the node's host RSS from /proc/PID/status; the GPU memory torch has allocated and
reserved, which the node reports in /diagnostics. A slope is the least-squares line through
the samples after the warm-up (--warmup-frames), in MiB per 1000 frames; flat memory reads
as a slope near 0. This is a benchmark, not a test: it asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

FRAME_VARIANTS = 8
_NS = 1_000_000_000


def make_checkpoint(path: Path) -> None:
    """A random-init `tiny` checkpoint: memory behaviour does not depend on training."""
    from tttkd_ros.core.config import ModelConfig
    from tttkd_ros.core.labels import CLASS_NAMES, palette_rgb
    from tttkd_ros.core.model.checkpoint import save_checkpoint
    from tttkd_ros.core.model.segmentation import build_model

    torch.manual_seed(0)
    cfg = ModelConfig(backbone="tiny")
    save_checkpoint(path, build_model(cfg, "cpu"), cfg, class_names=CLASS_NAMES,
                    palette=palette_rgb(), teacher_name="vit_small_patch14_dinov2")


def synthetic_frames(points: int, image_hw: tuple[int, int]) -> list[tuple]:
    """FRAME_VARIANTS (cloud, image, info) messages: street clouds of 90..110 % of `points`
    and noise images, seen by a camera looking along the LiDAR's +x axis."""
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from std_msgs.msg import Header

    from tttkd_ros.ros.convert import array_to_image, xyzi_fields_to_pointcloud2
    from tttkd_ros.tools.bench.model import street_cloud

    h, w = image_hw
    rng = np.random.default_rng(0)
    frames = []
    for k in range(FRAME_VARIANTS):
        n = int(points * (0.9 + 0.2 * k / max(FRAME_VARIANTS - 1, 1)))
        xyzi = street_cloud(n, seed=k).numpy().astype(np.float32)
        cloud = xyzi_fields_to_pointcloud2(
            Header(frame_id="lidar"), {c: xyzi[:, i] for i, c in enumerate("xyz")} |
            {"intensity": xyzi[:, 3]}, msg_cls=PointCloud2)
        pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        image = array_to_image(Header(frame_id="camera"), pixels, "rgb8", msg_cls=Image)
        info = CameraInfo(header=Header(frame_id="camera"), height=h, width=w,
                          distortion_model="plumb_bob", d=[0.0] * 5,
                          k=[w / 2, 0.0, w / 2, 0.0, w / 2, h / 2, 0.0, 0.0, 1.0])
        frames.append((cloud, image, info))
    return frames


def rss_mb(pid: int) -> float | None:
    """Resident memory of process `pid` in MiB (Linux), None where unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def slope_per_1k(frames: list[int], values: list[float | None]) -> float | None:
    """Least-squares slope of values over frames, per 1000 frames (None if under 3 points)."""
    pairs = [(f, v) for f, v in zip(frames, values) if v is not None]
    if len(pairs) < 3 or len({f for f, _ in pairs}) < 2:
        return None
    x, y = np.array(pairs, dtype=np.float64).T
    return float(np.polyfit(x, y, 1)[0] * 1000)


class SoakRig:
    """The test-side ROS node: publishes the inputs, collects ~/stats and /diagnostics."""

    def __init__(self, namespace: str, node_name: str) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2
        from std_msgs.msg import String

        self.node = rclpy.create_node("tttkd_soak_rig", namespace=namespace)
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_points = self.node.create_publisher(PointCloud2, "points", qos)
        self.pub_image = self.node.create_publisher(Image, "camera/image", qos)
        self.pub_info = self.node.create_publisher(CameraInfo, "camera/camera_info", qos)
        self.lock = threading.Lock()
        self.stats: dict[int, tuple[float, dict]] = {}  # stamp -> (arrival time, payload)
        self.memory: dict[str, float] = {}  # latest processing values from /diagnostics
        self.node.create_subscription(String, f"{node_name}/stats", self._on_stats, qos)
        self.prefix = f"{node_name}: processing"
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)

    def _on_stats(self, msg) -> None:
        payload = json.loads(msg.data)
        stamp = payload["stamp"]["sec"] * _NS + payload["stamp"]["nanosec"]
        with self.lock:
            self.stats[stamp] = (time.monotonic(), payload)

    def _on_diag(self, msg) -> None:
        for status in msg.status:
            if status.name == self.prefix:
                values = {kv.key: kv.value for kv in status.values}
                with self.lock:
                    self.memory = {k: float(values[k]) for k in
                                   ("rss_mb", "gpu_allocated_mb", "gpu_reserved_mb")
                                   if k in values}

    def connected(self) -> bool:
        return all(p.get_subscription_count() for p in
                   (self.pub_points, self.pub_image, self.pub_info))

    def send(self, frame: tuple, stamp_ns: int) -> None:
        cloud, image, info = frame
        for msg in (info, image, cloud):
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, _NS)
        self.pub_info.publish(info)
        self.pub_image.publish(image)
        self.pub_points.publish(cloud)

    def wait_stats(self, stamp_ns: int, timeout_s: float) -> tuple[float, dict] | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if stamp_ns in self.stats:
                    return self.stats.pop(stamp_ns)
            time.sleep(0.002)
        return None


def start_node(args: argparse.Namespace, checkpoint: Path, namespace: str, name: str,
               log: Path) -> subprocess.Popen:
    script = Path(sys.executable).with_name("adapt_node")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "tttkd_ros.ros.node"]
    params = {"checkpoint": str(checkpoint), "device": args.device, "cameras": "[camera]",
              "qos.input.reliability": "reliable", "adaptation.mode": args.mode,
              "adaptation.max_steps": args.steps, "adaptation.budget_ms": args.budget_ms,
              "teacher.image_height": args.teacher_height}
    command += ["--ros-args", "-r", f"__ns:={namespace}", "-r", f"__node:={name}"]
    for key, value in params.items():
        command += ["-p", f"{key}:={value}"]
    with open(log, "w") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)


def soak(args: argparse.Namespace, workdir: Path) -> dict:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from tttkd_ros.ros.dds_env import keep_dds_local

    checkpoint = Path(args.checkpoint) if args.checkpoint else workdir / "tiny.pt"
    if not args.checkpoint:
        make_checkpoint(checkpoint)
    name, namespace = f"tttkd_soak_{os.getpid()}", f"/tttkd_soak_{os.getpid()}"
    node_log = workdir / "adapt_node.log"
    keep_dds_local()
    rclpy.init()
    rig = SoakRig(namespace, name)
    executor = SingleThreadedExecutor()
    executor.add_node(rig.node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    proc = start_node(args, checkpoint, namespace, name, node_log)
    try:
        deadline = time.monotonic() + args.start_timeout
        while not rig.connected():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"adapt_node did not come up:\n{node_log.read_text()}")
            time.sleep(0.2)
        frames = synthetic_frames(args.points, (args.image_height, args.image_width))
        return measure(args, rig, proc, frames)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        executor.shutdown()
        rig.node.destroy_node()
        rclpy.try_shutdown()


def measure(args: argparse.Namespace, rig: SoakRig, proc: subprocess.Popen,
            frames: list[tuple]) -> dict:
    every = args.sample_every or max(1, args.frames // 200)
    samples, latencies, adapt_ms, steps, lost = [], [], [], [], 0
    start = time.monotonic()
    for i in range(args.frames):
        stamp = time.time_ns()
        sent = time.monotonic()
        rig.send(frames[i % len(frames)], stamp)
        got = rig.wait_stats(stamp, args.frame_timeout)
        if got is None:
            lost += 1
        else:
            latencies.append((got[0] - sent) * 1e3)
            adapt_ms.append(got[1]["adapt_ms"])
            steps.append(got[1]["steps"])
        if i % every == 0 or i == args.frames - 1:
            with rig.lock:
                memory = dict(rig.memory)
            samples.append({"frame": i, "t_s": round(time.monotonic() - start, 2),
                            "rss_mb": rss_mb(proc.pid), **memory})
            if args.progress:
                print(f"frame {i}: {samples[-1]}", flush=True)
        if proc.poll() is not None:
            raise RuntimeError(f"adapt_node exited with status {proc.returncode}")
    after = [s for s in samples if s["frame"] >= args.warmup_frames]
    frame_ids = [s["frame"] for s in after]
    rss = [s["rss_mb"] for s in after if s["rss_mb"] is not None]
    return {
        "frames": args.frames, "lost_frames": lost,
        "wall_s": round(time.monotonic() - start, 1),
        "frames_per_s": round(args.frames / (time.monotonic() - start), 2),
        "latency_ms": _percentiles(latencies), "adapt_ms": _percentiles(adapt_ms),
        "steps_mean": round(statistics.fmean(steps), 3) if steps else 0.0,
        "warmup_frames": args.warmup_frames,
        "rss_mb": {"first": rss[0] if rss else None, "last": rss[-1] if rss else None,
                   "max": max(rss) if rss else None},
        "rss_slope_mb_per_1k_frames": slope_per_1k(frame_ids, [s["rss_mb"] for s in after]),
        "gpu_allocated_slope_mb_per_1k_frames": slope_per_1k(
            frame_ids, [s.get("gpu_allocated_mb") for s in after]),
        "gpu_reserved_slope_mb_per_1k_frames": slope_per_1k(
            frame_ids, [s.get("gpu_reserved_mb") for s in after]),
        "samples": samples,
    }


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None}
    p50, p99 = np.percentile(values, [50, 99])
    return {"p50": round(float(p50), 2), "p99": round(float(p99), 2)}


def machine(device: str) -> dict:
    info = {"host": platform.node(), "cpu_count": os.cpu_count(), "python": sys.version.split()[0],
            "torch": torch.__version__, "device": device,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "")}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=3000, help="frames to send")
    p.add_argument("--json", required=True, help="result JSON to write")
    p.add_argument("--checkpoint", default="", help="default: a random-init tiny model")
    p.add_argument("--points", type=int, default=20_000, help="points per cloud (+-10 %%)")
    p.add_argument("--image-height", type=int, default=192)
    p.add_argument("--image-width", type=int, default=640)
    p.add_argument("--teacher-height", type=int, default=112, help="teacher input height")
    p.add_argument("--device", default="auto", help="the node's device: auto, cpu, cuda")
    p.add_argument("--mode", default="kd+ocl", help="adaptation.mode")
    p.add_argument("--steps", type=int, default=1, help="adaptation.max_steps")
    p.add_argument("--budget-ms", type=float, default=60000.0,
                   help="adaptation.budget_ms (large: every frame takes its steps)")
    p.add_argument("--warmup-frames", type=int, default=200,
                   help="samples before this frame are left out of the slopes")
    p.add_argument("--sample-every", type=int, default=0, help="frames; 0 = frames / 200")
    p.add_argument("--frame-timeout", type=float, default=60.0, help="seconds per frame")
    p.add_argument("--start-timeout", type=float, default=300.0, help="node start, seconds")
    p.add_argument("--progress", action="store_true", help="print every sample")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tttkd_soak_") as tmp:
        result = soak(args, Path(tmp))
    result = {"machine": machine(args.device), **result}
    Path(args.json).write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
