"""The demo's inputs, built once and cached: a stand-in teacher (a DINOv2 ViT-S/14
pretrained on the synthetic world's images), a source checkpoint paired with it, and two
target drives written as rosbag2 folders, one whose LiDAR changed and one whose camera did.

Cache layout (`$XDG_CACHE_HOME/tttkd_ros`, default `~/.cache/tttkd_ros`):

    demo-<profile>-<hash of the teacher and source settings>/
        teacher/teacher.pth           the stand-in teacher (+ teacher.json: its accuracy)
        clean_drives/                 SemanticKITTI layout, training and validation drives
        source/model.pt               the source checkpoint paired with that teacher
        target-<shift>-<N>f-seed<S>/  a target drive as a rosbag2 (sqlite3)

Every entry is built in a temporary sibling folder and renamed into place when complete, so
a run killed half-way never leaves something that a later run would reuse.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from tttkd_ros.data.drive import generate_drive
from tttkd_ros.data.kitti import write_label_map, write_sequence
from tttkd_ros.data.shifts import BENCH_WORLD
from tttkd_ros.models import shipped_source
from tttkd_ros.ros.bag import write_drive_bag

# -- settings (the lead tunes these) ---------------------------------------------------------
# One drive where the LiDAR changed and the camera is intact, one where the camera changed.
DEFAULT_LIDAR_SHIFT = "range_noise"  # fog and rain change the camera too
DEFAULT_CAMERA_SHIFT = "dark"
TRAIN_SEEDS = tuple(range(8))  # clean training drives, sequences 00..07
VAL_SEED = 10  # clean validation drive, the sequence after them (picks the best epoch)
TARGET_SEED = 20  # the target drives are other drives than any training one
TEACHER = "vit_small_patch14_dinov2"
TEACHER_HEIGHT = 112  # the shipped model's teacher height (models/__init__.py)
TEACHER_SEED = 1000  # pretrain-teacher's drive seeds start here: far from the demo's
STORAGE = "sqlite3"
# Full demo: the benchmarks' world (data/shifts.py), so a CPU adapts a frame in about a second.
FULL_WORLD = BENCH_WORLD
FULL_TARGET_FRAMES = 28  # a cached run (4 replays) within 2 min on a 2-core CPU
# Quick demo (test suite): a few hundred points per frame, tiny images, short training.
QUICK_WORLD = {"lidar_beams": 16, "lidar_azimuth_res_deg": 1.0, "image_scale": 0.2}
QUICK_TARGET_FRAMES = 4


@dataclass(frozen=True)
class DemoSettings:
    """Everything the cached assets depend on. `world`: synthetic-world overrides applied to
    every drive alike (so the only difference between source and target is the shift)."""

    profile: str  # "full" or "quick": only names the cache folder
    world: dict[str, Any] = field(default_factory=dict)
    # stand-in teacher: pretrain-teacher's steps (a step budget, not a time budget: the same
    # teacher, and so the same table, on a fast or a busy machine; 100 took 3.5 min here),
    # drives per condition, frames per drive
    teacher_steps: int = 100
    teacher_drives: int = 1
    teacher_frames: int = 8
    teacher_height: int = TEACHER_HEIGHT
    # source: "shipped" starts from the package's model (`tttkd train --init`), "scratch"
    # trains a new one (quick); either way it learns the stand-in teacher's features
    source: str = "shipped"
    train_frames: int = 6
    val_frames: int = 6
    epochs: int = 3  # the pairing's length; no time limit, for the same reason
    lr: float = 1e-3
    kd_features: str = "centred"  # tttkd train --kd-features
    # what tttkd train writes into the checkpoint (2: the class shares test-time normalisation
    # weighs by), so that a cache from an older release is rebuilt rather than used without
    checkpoint_format: int = 2
    lidar_shift: str = DEFAULT_LIDAR_SHIFT
    camera_shift: str = DEFAULT_CAMERA_SHIFT
    target_frames: int = FULL_TARGET_FRAMES
    target_seed: int = TARGET_SEED

    def source_key(self) -> str:
        """Short hash of what the teacher and the checkpoint depend on (not the targets)."""
        targets = ("profile", "lidar_shift", "camera_shift", "target_frames", "target_seed")
        source = {k: v for k, v in asdict(self).items() if k not in targets}
        digest = hashlib.sha1(json.dumps(source, sort_keys=True).encode()).hexdigest()
        return f"demo-{self.profile}-{digest[:10]}"

    def shifts(self) -> tuple[str, str]:
        return self.lidar_shift, self.camera_shift


def demo_settings(quick: bool, lidar_shift: str | None = None, camera_shift: str | None = None,
                  frames: int | None = None) -> DemoSettings:
    """The full or quick profile, with the targets' shifts and length overridden if given;
    ValueError when one drive would play both roles."""
    if quick:
        base = DemoSettings("quick", dict(QUICK_WORLD), teacher_steps=2, teacher_drives=1,
                            teacher_frames=2, teacher_height=56, source="scratch",
                            train_frames=6, val_frames=3, epochs=3, lr=2e-3,
                            target_frames=QUICK_TARGET_FRAMES)
    else:
        base = DemoSettings("full", dict(FULL_WORLD))
    changes = {k: v for k, v in (("lidar_shift", lidar_shift), ("camera_shift", camera_shift),
                                 ("target_frames", frames)) if v is not None}
    settings = replace(base, **changes)
    if settings.lidar_shift == settings.camera_shift:
        raise ValueError(f"--lidar-shift and --camera-shift must name two different drives "
                         f"(both are {settings.lidar_shift})")
    return settings


def cache_root() -> Path:
    """`$XDG_CACHE_HOME/tttkd_ros`, default `~/.cache/tttkd_ros`."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tttkd_ros"


@dataclass
class Built:
    """A cached entry: where it is, whether it was already there, and how long it took."""

    path: Path
    cached: bool
    seconds: float


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def cached_entry(final: Path, build: Callable[[Path], None]) -> Built:
    """`final` if it exists; else `build(tmp)` (which creates `tmp`) and rename tmp -> final.

    tmp is `final` + `.tmp<pid>`; leftovers of killed runs (their process gone) are removed,
    and a failing build leaves nothing behind.
    """
    if final.exists():
        return Built(final, True, 0.0)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f"{final.name}.tmp*"):
        pid = stale.name.rsplit(".tmp", 1)[1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = final.with_name(f"{final.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.monotonic()
    try:
        build(tmp)
        os.rename(tmp, final)  # atomic on one file system; fails if another run won the race
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if final.exists():  # a concurrent run finished first: use its entry
            return Built(final, True, 0.0)
        raise
    return Built(final, False, time.monotonic() - t0)


def _run_tool(argv: list[str]) -> None:
    """A `tttkd` subcommand in this process; a non-zero exit raises."""
    from tttkd_ros.tools.cli import build_parser  # the CLI imports this module: no cycle

    args = build_parser(argv[0]).parse_args(argv)
    code = args.func(args)
    if code:
        raise RuntimeError(f"`tttkd {' '.join(argv)}` failed with exit code {code}")


def _world_flags(world: dict[str, Any]) -> list[str]:
    return [flag for key, value in world.items() for flag in ("--set", f"{key}={value}")]


def prepare_teacher(settings: DemoSettings, root: Path | None = None) -> Built:
    """The stand-in teacher's weights (`tttkd pretrain-teacher`), trained if not cached."""
    folder = (root or cache_root()) / settings.source_key()

    def build(tmp: Path) -> None:
        _run_tool(["pretrain-teacher", "--out", str(tmp / "teacher.pth"), "--model", TEACHER,
                   "--steps", str(settings.teacher_steps),
                   "--drives", str(settings.teacher_drives),
                   "--frames", str(settings.teacher_frames), "--held-out-frames", "2",
                   "--seed", str(TEACHER_SEED), *_world_flags(settings.world)])

    teacher = cached_entry(folder / "teacher", build)
    return Built(teacher.path / "teacher.pth", teacher.cached, teacher.seconds)


def _synth_clean(settings: DemoSettings, root: Path) -> None:
    drives = [(f"{i:02d}", seed, settings.train_frames) for i, seed in enumerate(TRAIN_SEEDS)]
    drives.append((f"{len(TRAIN_SEEDS):02d}", VAL_SEED, settings.val_frames))
    for seq, seed, frames in drives:
        it = generate_drive("clean", frames=frames, seed=seed, **settings.world)
        write_sequence(root, seq, tqdm(it, total=frames, desc=f"synth clean drive {seq}",
                                       unit="frame"))
    write_label_map(root / "semantic-kitti.yaml")


def _train(settings: DemoSettings, teacher: Path, data: Path, out_dir: Path) -> None:
    train_seqs = ",".join(f"{i:02d}" for i in range(len(TRAIN_SEEDS)))
    start = ["--init", str(shipped_source())] if settings.source == "shipped" else []
    _run_tool(["train", "--data", str(data), "--out", str(out_dir / "model.pt"), *start,
               "--train-seqs", train_seqs, "--val-seqs", f"{len(TRAIN_SEEDS):02d}",
               "--teacher", TEACHER, "--teacher-weights", str(teacher),
               "--teacher-height", str(settings.teacher_height),
               "--epochs", str(settings.epochs), "--lr", str(settings.lr),
               "--kd-features", settings.kd_features,
               "--cache", str(out_dir / "teacher_cache")])


def prepare_checkpoint(settings: DemoSettings, teacher: Path, root: Path | None = None
                       ) -> Built:
    """`.../source/model.pt`, trained on clean drives with `teacher` if not cached."""
    folder = (root or cache_root()) / settings.source_key()

    def build(tmp: Path) -> None:
        # the drives are cached on their own: a killed training run reuses them
        data = cached_entry(folder / "clean_drives", lambda d: _synth_clean(settings, d))
        _train(settings, teacher, data.path, tmp)
        shutil.rmtree(tmp / "teacher_cache", ignore_errors=True)  # features of a finished run

    source = cached_entry(folder / "source", build)
    return Built(source.path / "model.pt", source.cached, source.seconds)


def prepare_target_bag(settings: DemoSettings, shift: str, root: Path | None = None) -> Built:
    """The `shift` target drive as a rosbag2 folder, written if not cached."""
    folder = (root or cache_root()) / settings.source_key()
    name = f"target-{shift}-{settings.target_frames}f-seed{settings.target_seed}"

    def write(tmp: Path) -> None:
        frames = generate_drive(shift, frames=settings.target_frames,
                                seed=settings.target_seed, **settings.world)
        write_drive_bag(tmp, tqdm(frames, total=settings.target_frames,
                                  desc=f"synth {shift} target bag", unit="frame"), STORAGE)

    return cached_entry(folder / name, write)
