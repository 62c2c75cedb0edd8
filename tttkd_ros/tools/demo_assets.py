"""The demo's inputs, built once and cached: the source checkpoint (the shipped one, or for
the quick profile one trained on clean synthetic drives) and a shifted target drive written
as a rosbag2.

Cache layout (`$XDG_CACHE_HOME/tttkd_ros`, default `~/.cache/tttkd_ros`):

    demo-<profile>-<hash of the source settings>/
        clean_drives/                 SemanticKITTI layout, training and validation drives
        source/model.pt               the trained checkpoint (+ training leftovers)
        target-<shift>-<N>f-seed<S>/  the target drive as a rosbag2 (sqlite3)

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
from tttkd_ros.models import shipped_source
from tttkd_ros.ros.bag import write_drive_bag

# -- settings (the lead tunes these) ---------------------------------------------------------
DEFAULT_SHIFT = "fog"
TRAIN_SEEDS = (0, 1, 2, 3)  # clean training drives, sequences 00..03
VAL_SEED = 10  # clean validation drive, the sequence after them (picks the best epoch)
TARGET_SEED = 20  # the target drive is another drive than any training one
TEACHER = "vit_small_patch14_dinov2"
STORAGE = "sqlite3"
# Full demo: the shipped source model on the synthetic HDL-64E at its full resolution
# (~124k points, as a real one) with half-size images, the world that model was trained in.
FULL_WORLD = {"image_scale": 0.5}
FULL_TARGET_FRAMES = 20
FULL_TEACHER_HEIGHT = 112  # the shipped model's teacher (models/__init__.py)
# Quick demo (test suite): a few hundred points per frame, tiny images, short training.
QUICK_WORLD = {"lidar_beams": 16, "lidar_azimuth_res_deg": 1.0, "image_scale": 0.2}
QUICK_TARGET_FRAMES = 4
QUICK_TRAIN_FRAMES = 6
QUICK_VAL_FRAMES = 3
QUICK_EPOCHS = 3
QUICK_MAX_MINUTES = 1.0
QUICK_TEACHER_HEIGHT = 56


@dataclass(frozen=True)
class DemoSettings:
    """Everything the cached assets depend on. `world`: synthetic-world overrides applied to
    the source and the target drives alike (so the only difference is the shift)."""

    profile: str  # "full" or "quick": only names the cache folder
    world: dict[str, Any] = field(default_factory=dict)
    # "shipped": the package's source model; "train": train one on clean drives (quick)
    source: str = "shipped"
    train_frames: int = QUICK_TRAIN_FRAMES
    val_frames: int = QUICK_VAL_FRAMES
    epochs: int = QUICK_EPOCHS
    max_minutes: float = QUICK_MAX_MINUTES
    teacher: str = TEACHER
    teacher_height: int = FULL_TEACHER_HEIGHT
    shift: str = DEFAULT_SHIFT
    target_frames: int = FULL_TARGET_FRAMES
    target_seed: int = TARGET_SEED

    def source_key(self) -> str:
        """Short hash of what the checkpoint depends on (not the target's shift or length)."""
        source = {k: v for k, v in asdict(self).items()
                  if k not in ("profile", "shift", "target_frames", "target_seed")}
        digest = hashlib.sha1(json.dumps(source, sort_keys=True).encode()).hexdigest()
        return f"demo-{self.profile}-{digest[:10]}"


def demo_settings(quick: bool, shift: str | None = None, frames: int | None = None
                  ) -> DemoSettings:
    """The full or quick profile, with the target's shift and length overridden if given."""
    if quick:
        base = DemoSettings("quick", dict(QUICK_WORLD), "train", QUICK_TRAIN_FRAMES,
                            QUICK_VAL_FRAMES, QUICK_EPOCHS, QUICK_MAX_MINUTES, TEACHER,
                            QUICK_TEACHER_HEIGHT, DEFAULT_SHIFT, QUICK_TARGET_FRAMES)
    else:
        base = DemoSettings("full", dict(FULL_WORLD))
    changes = {k: v for k, v in (("shift", shift), ("target_frames", frames)) if v is not None}
    return replace(base, **changes)


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


def _synth_clean(settings: DemoSettings, root: Path) -> None:
    drives = [(f"{i:02d}", seed, settings.train_frames) for i, seed in enumerate(TRAIN_SEEDS)]
    drives.append((f"{len(TRAIN_SEEDS):02d}", VAL_SEED, settings.val_frames))
    for seq, seed, frames in drives:
        it = generate_drive("clean", frames=frames, seed=seed, **settings.world)
        write_sequence(root, seq, tqdm(it, total=frames, desc=f"synth clean drive {seq}",
                                       unit="frame"))
    write_label_map(root / "semantic-kitti.yaml")


def _train(settings: DemoSettings, data: Path, out_dir: Path) -> None:
    from tttkd_ros.tools.cli import build_parser  # the CLI imports this module: no cycle
    from tttkd_ros.tools.train import train

    train_seqs = ",".join(f"{i:02d}" for i in range(len(TRAIN_SEEDS)))
    args = build_parser("train").parse_args([
        "train", "--data", str(data), "--out", str(out_dir / "model.pt"),
        "--train-seqs", train_seqs, "--val-seqs", f"{len(TRAIN_SEEDS):02d}",
        "--backbone", "tiny", "--teacher", settings.teacher,
        "--teacher-height", str(settings.teacher_height), "--epochs", str(settings.epochs),
        "--max-minutes", str(settings.max_minutes), "--cache", str(out_dir / "teacher_cache"),
    ])
    summary = train(args)
    (out_dir / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def prepare_checkpoint(settings: DemoSettings, root: Path | None = None) -> Built:
    """The source checkpoint: the shipped one, or (`source="train"`) `.../source/model.pt`
    trained on clean drives if not cached."""
    if settings.source == "shipped":
        return Built(shipped_source(), True, 0.0)
    folder = (root or cache_root()) / settings.source_key()

    def build(tmp: Path) -> None:
        # the drives are cached on their own: a killed training run reuses them
        data = cached_entry(folder / "clean_drives", lambda d: _synth_clean(settings, d))
        _train(settings, data.path, tmp)

    source = cached_entry(folder / "source", build)
    return Built(source.path / "model.pt", source.cached, source.seconds)


def prepare_target_bag(settings: DemoSettings, root: Path | None = None) -> Built:
    """The shifted target drive as a rosbag2 folder, written if not cached."""
    folder = (root or cache_root()) / settings.source_key()
    name = f"target-{settings.shift}-{settings.target_frames}f-seed{settings.target_seed}"

    def write(tmp: Path) -> None:
        frames = generate_drive(settings.shift, frames=settings.target_frames,
                                seed=settings.target_seed, **settings.world)
        write_drive_bag(tmp, tqdm(frames, total=settings.target_frames,
                                  desc=f"synth {settings.shift} target bag", unit="frame"),
                        STORAGE)

    return cached_entry(folder / name, write)
