"""`tttkd bench --suite adaptation | stability`: does adaptation help, and does it last?

adaptation: for each teacher (a source checkpoint trained with it, plus its weights), every
mode on the in-distribution drive and on each shifted drive of the synthetic world, all
modes on the same frames: continual with each per-frame step count of --steps, and episodic
with --episodic-steps on a subset. One JSON (every run) and a Markdown table per teacher and
protocol (rows: modes; columns: ID and the shifts; cells: mIoU and change relative to none).

stability: for each teacher and shift, one long continual drive (--frames, e.g. 500) through
`none` and the --modes side by side, frame by frame, with mIoU per window of frames; a plot
per teacher shows a method that drifts down.

Besides the engine's modes, suite modes built on one of them (VARIANTS): `rdumb` (kd+ocl reset
to the source every 100 frames, no harm guard) and `kd+ocl-unguarded` (kd+ocl without the
harm guard, the default before it), for --modes.

Every adapting mode takes exactly its step count per frame (the time budget is lifted: this
measures the method, `tttkd bench --suite latency` measures the cost). The teacher's features
of a frame are computed once and shared by every mode and step count (same numbers, less time).
Drives are rendered in memory from their seeds, so a run needs nothing but the checkpoints.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from tttkd_ros.core.config import MODES, AdaptConfig, TeacherConfig
from tttkd_ros.core.device.selection import resolve_device
from tttkd_ros.core.labels import lookup_train_ids
from tttkd_ros.core.loading import load_engine, warm_up
from tttkd_ros.core.metrics import ConfusionMatrix
from tttkd_ros.core.model.checkpoint import load_checkpoint
from tttkd_ros.core.model.teacher import DinoTeacher
from tttkd_ros.data.drive import generate_drive
from tttkd_ros.data.shifts import BENCH_WORLD, get_shift, list_shifts
from tttkd_ros.ros.bag import LabeledFrame
from tttkd_ros.tools.bench.adaptation_report import (
    ID_DRIVE,
    summarize,
    write_adaptation_report,
    write_stability_report,
)
from tttkd_ros.tools.bench.machine import machine_info
from tttkd_ros.tools.eval import parse_set
from tttkd_ros.tools.evaluation import evaluate, label_lut, mode_configs
from tttkd_ros.tools.synth import parse_overrides as parse_world_overrides

# one shift of each kind: sensor, calibration, weather, scene, camera
DEFAULT_SHIFTS = ("beams32", "intensity", "fog", "town", "dark")
UNLIMITED_MS = 1e9
# no source in the loop (no teacher's check of the normalisation), every camera trusted, no anchor
_UNGUARDED = {"guard_every": 0, "guard_kd_ratio": 0.0, "guard_min_brightness": 0.0,
              "w_source": 0.0, "anchor_weight": 0.0, "target_norm_check": False}
# Suite modes built on an engine mode: name -> (that mode, the settings that define it, put
# over everything --adapt sets; `--adapt MODE.FIELD=...` of the engine mode reaches them too).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    # RDumb (Press et al., NeurIPS 2023) on the shipped objective, alone (no harm guard).
    # Every 100 frames rather than RDumb's 1000 steps: 1000 would never fire in a 500-frame
    # stability drive; 100 (10 s at 10 Hz) resets 4 times there, at every other 50-frame
    # window's end, long enough for gains that 12-frame drives do not show yet to build.
    "rdumb": ("kd+ocl", {"reset_every": 100, **_UNGUARDED}),
    "kd+ocl-unguarded": ("kd+ocl", dict(_UNGUARDED)),  # what the harm guard changes
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("adaptation and stability suites")
    g.add_argument("--teacher", action="append", default=[], dest="teachers",
                   metavar="LABEL=CHECKPOINT[,WEIGHTS[,HEIGHT]]",
                   help="a teacher and the source checkpoint trained with it, repeatable; "
                        "WEIGHTS empty = seeded random DINOv2 weights; HEIGHT = its input "
                        "height (default 224)")
    g.add_argument("--shifts", default=",".join(DEFAULT_SHIFTS),
                   help=f"shifted drives besides the ID drive ({ID_DRIVE}); from "
                        f"{', '.join(list_shifts()[1:])}")
    g.add_argument("--modes", default=",".join(MODES),
                   help=f"modes to run (none always runs), from {', '.join(MODES)} and the "
                        f"suite's {', '.join(VARIANTS)}")
    g.add_argument("--frames", type=int, default=0,
                   help="frames per drive (default: 12 adaptation, 500 stability)")
    g.add_argument("--drive-seeds", default="20",
                   help="seeds of the reported drives, comma-separated: the adaptation table's "
                        "cells are means over them (with paired bootstrap intervals); the "
                        "stability suite drives the first")
    g.add_argument("--steps", default="1,2,5", help="continual steps per frame, comma-separated")
    g.add_argument("--episodic-steps", type=int, default=10, help="0 = no episodic runs")
    g.add_argument("--episodic-shifts", default="intensity,fog",
                   help="drives of the episodic runs")
    g.add_argument("--episodic-frames", type=int, default=6)
    g.add_argument("--window", type=int, default=50, help="stability: frames per window")
    g.add_argument("--world", action="append", default=[], metavar="KEY=VALUE",
                   help=f"synthetic-world setting (default {BENCH_WORLD}); "
                        "cameras=surround adds three cameras around the front one")
    g.add_argument("--adapt", action="append", default=[], metavar="[MODE.]FIELD=VALUE",
                   help="AdaptConfig override for every mode or one (as tttkd eval --set)")
    g.add_argument("--variant", action="append", default=[], dest="variants",
                   metavar="NAME=MODE[:FIELD=VALUE...]",
                   help="one more suite mode for --modes: an engine or suite mode with these "
                        "settings over it, e.g. ws1=kd+ocl:w_source=1 (several settings of "
                        "one mode side by side on the same frames)")


def names(text: str) -> list[str]:
    """A comma-separated option as its names, in order, each once, empty ones dropped."""
    return [n for n in dict.fromkeys(text.split(",")) if n]


def adapting_modes(args: argparse.Namespace) -> list[str]:
    """--modes without `none`, which every table and plot runs anyway."""
    return [m for m in names(args.modes) if m != "none"]


def parse_variants(items: list[str]) -> dict[str, tuple[str, dict[str, Any]]]:
    """--variant 'NAME=MODE[:FIELD=VALUE...]' items -> {name: (engine mode, settings)}; a
    variant of a suite mode takes that mode's settings first. ValueError naming a bad one."""
    variants: dict[str, tuple[str, dict[str, Any]]] = {}
    for item in items:
        name, sep, rest = item.partition("=")
        mode, *settings = rest.split(":")
        taken = name in MODES or name in VARIANTS or name in variants
        if not sep or not name or taken or (mode not in MODES and mode not in VARIANTS):
            raise ValueError(f"--variant {item!r}: expected NAME=MODE[:FIELD=VALUE...] with a "
                             f"new NAME and MODE in {', '.join([*MODES, *VARIANTS])}")
        base, extra = VARIANTS.get(mode, (mode, {}))
        variants[name] = (base, {**extra, **parse_set(settings, f"--variant {name}")[0]})
    return variants


def suite_configs(modes: list[str], common: dict[str, Any], per_mode: dict[str, dict],
                  variants: dict[str, tuple[str, dict[str, Any]]] | None = None
                  ) -> dict[str, AdaptConfig]:
    """An AdaptConfig per suite mode, in order: an engine mode's as `mode_configs` makes it,
    a variant's (VARIANTS, then `variants`) as its engine mode's with the variant's settings
    over it. Raises ValueError for an unknown mode or setting."""
    known = {**VARIANTS, **(variants or {})}
    unknown = [m for m in modes if m not in MODES and m not in known]
    if unknown or not modes:
        raise ValueError(f"unknown or no modes {unknown}; choose from "
                         f"{', '.join([*MODES, *known])}")
    bases = list(dict.fromkeys(known[m][0] if m in known else m for m in modes))
    configs = mode_configs(bases, common, per_mode)
    return {m: replace(configs[known[m][0]], **known[m][1]) if m in known
            else configs[m] for m in modes}


def parse_teacher(text: str) -> tuple[str, dict[str, Any]]:
    """'LABEL=CHECKPOINT[,WEIGHTS[,HEIGHT]]' -> (label, {checkpoint, weights, height})."""
    label, sep, rest = text.partition("=")
    parts = rest.split(",")
    if not sep or not label or not parts[0] or len(parts) > 3:
        raise ValueError(f"--teacher {text!r}: expected LABEL=CHECKPOINT[,WEIGHTS[,HEIGHT]]")
    for path in filter(None, parts[:2]):
        if not Path(path).is_file():
            raise FileNotFoundError(f"--teacher {label}: no file {path}")
    height = int(parts[2]) if len(parts) == 3 and parts[2] else 224
    weights = parts[1] if len(parts) > 1 else ""
    return label, {"checkpoint": parts[0], "weights": weights, "image_height": height}


class SharedTeacher:
    """A loaded teacher whose features are computed once per image (keyed by its bytes) and
    reused by every engine that sees the same frames."""

    def __init__(self, teacher: DinoTeacher) -> None:
        self.teacher, self.device = teacher, teacher.device
        self._grids: dict[str, torch.Tensor] = {}

    def features(self, image: np.ndarray) -> torch.Tensor:
        key = hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()
        if key not in self._grids:
            self._grids[key] = self.teacher.features(image)
        return self._grids[key]

    def clear(self) -> None:
        self._grids.clear()


def load_teacher(spec: dict[str, Any], device: torch.device) -> tuple[TeacherConfig, SharedTeacher]:
    name = load_checkpoint(spec["checkpoint"], "cpu").teacher_name
    cfg = TeacherConfig(name=name, weights=spec["weights"], image_height=spec["image_height"])
    with warnings.catch_warnings():  # random weights are one of the reported teachers
        warnings.simplefilter("ignore", UserWarning)
        return cfg, SharedTeacher(DinoTeacher(cfg, device))


def render_drive(shift: str, frames: int, seed: int, world: dict) -> list[LabeledFrame]:
    return [LabeledFrame(f.to_frame(), f.labels)
            for f in generate_drive(shift, frames, seed, **world)]


def _entry(teacher: str, protocol: str, steps: int, drive: str, seed: int, frames: int,
           mode: str, e: dict) -> dict:
    """One run's record; `none` is recorded with 0 steps and serves every table whose drive,
    seed and frame count it shares."""
    keep = ("miou", "iou", "latency_ms", "steps_mean", "miou_per_frame", "guard")
    return {"teacher": teacher, "protocol": "-" if mode == "none" else protocol,
            "steps": 0 if mode == "none" else steps, "drive": drive, "seed": seed,
            "frames": frames, "mode": mode, **{k: e[k] for k in keep}}


def seeds(args: argparse.Namespace) -> list[int]:
    return [int(s) for s in names(args.drive_seeds)]


def run_adaptation(args: argparse.Namespace, teachers: dict, world: dict, device,
                   overrides: tuple[dict, dict, dict]) -> list[dict]:
    """Every (teacher, protocol, steps, drive, mode) run; `none` once per teacher, drive and
    frame count. An episodic drive need not be among the continual ones."""
    modes = adapting_modes(args)
    drives = [ID_DRIVE, *names(args.shifts)]
    episodic = names(args.episodic_shifts) if args.episodic_steps else []
    frames = args.frames or 12
    plans = [("continual", int(k), drives, frames) for k in names(args.steps)]
    plans += [("episodic", args.episodic_steps, episodic, args.episodic_frames)] if episodic else []
    common, per_mode, variants = overrides
    runs = []
    for label, spec in teachers.items():
        tcfg, dino = load_teacher(spec, device)
        for drive, seed in ((d, s) for d in dict.fromkeys(drives + episodic) for s in seeds(args)):
            longest = max(count for _, _, plan_drives, count in plans if drive in plan_drives)
            data = render_drive(drive, longest, seed, world)
            dino.clear()
            baselines: set[int] = set()  # frame counts that have their `none` run
            for protocol, steps, plan_drives, count in plans:
                if drive not in plan_drives:
                    continue
                run_modes = ([] if count in baselines else ["none"]) + modes
                baselines.add(count)
                configs = suite_configs(run_modes, {**common, "protocol": protocol,
                                                    "max_steps": steps,
                                                    "budget_ms": UNLIMITED_MS}, per_mode,
                                        variants)
                result = evaluate(data[:count], spec["checkpoint"], configs, tcfg, device,
                                  progress=not args.no_progress, dino=dino)
                runs += [_entry(label, protocol, steps, drive, seed, count, m, e)
                         for m, e in result["modes"].items()]
                tqdm.write(f"{label} {protocol} K={steps} {drive} seed {seed}: " + ", ".join(
                    f"{m} {e['miou']:.1f}" for m, e in result["modes"].items()))
    return runs


def run_stability(args: argparse.Namespace, teachers: dict, world: dict, device,
                  overrides: tuple[dict, dict, dict]) -> dict:
    """Per teacher, shift and mode: mIoU per window of a long continual drive."""
    modes = ["none", *adapting_modes(args)]
    common, per_mode, variants = overrides
    configs = suite_configs(modes, {**common, "protocol": "continual",
                                    "budget_ms": UNLIMITED_MS}, per_mode, variants)
    frames = args.frames or 500
    out: dict[str, dict] = {}
    for label, spec in teachers.items():
        tcfg, dino = load_teacher(spec, device)
        for shift in names(args.shifts):
            engines, class_names = {}, None
            for mode, cfg in configs.items():
                loaded = load_engine(spec["checkpoint"], cfg, tcfg, device, dino)
                warm_up(loaded.engine)
                engines[mode], class_names = loaded.engine, loaded.class_names
            lut = label_lut(class_names)
            windows = {m: [] for m in engines}
            flips: dict[str, list[float]] = {m: [] for m in engines}  # per guard check
            current = {m: ConfusionMatrix(len(class_names)) for m in engines}
            drive = generate_drive(shift, frames, seeds(args)[0], **world)
            for index, synth in enumerate(tqdm(drive, total=frames, unit="frame",
                                               desc=f"{label} {shift}",
                                               disable=args.no_progress)):
                frame, truth = synth.to_frame(), lookup_train_ids(lut, synth.labels)
                for mode, engine in engines.items():
                    pred = engine.process(frame)
                    current[mode].update(truth, pred.labels)
                    if pred.stats.guard_checked:
                        flips[mode].append(pred.stats.guard_flip)
                dino.clear()
                if (index + 1) % args.window == 0 or index + 1 == frames:
                    for mode in engines:
                        windows[mode].append(float(current[mode].miou()))
                        current[mode] = ConfusionMatrix(len(class_names))
            out.setdefault(label, {})[shift] = {
                m: {"window_miou": w, "resets": engines[m].resets,
                    "events": dict(engines[m].event_counts), "guard_flips": flips[m]}
                for m, w in windows.items()}
            tqdm.write(f"{label} {shift}: " + ", ".join(
                f"{m} first {w[0]:.1f} last {w[-1]:.1f}" for m, w in windows.items()))
    return {"frames": frames, "window": args.window,
            "configs": {m: asdict(c) for m, c in configs.items()}, "runs": out}


def _parse(args: argparse.Namespace) -> tuple[dict, dict, tuple[dict, dict, dict]]:
    """(teachers, world, adaptation overrides) from the arguments; raises ValueError /
    TypeError / FileNotFoundError naming a bad teacher, shift, mode or setting."""
    teachers = dict(parse_teacher(t) for t in args.teachers)
    world = parse_world_overrides(args.world) if args.world else dict(BENCH_WORLD)
    get_shift(ID_DRIVE, **world)  # an unknown world setting fails here
    try:
        if not seeds(args):
            raise ValueError
    except ValueError:
        raise ValueError(f"--drive-seeds {args.drive_seeds!r}: expected comma-separated "
                         "integers") from None
    unknown = {*names(args.shifts), *names(args.episodic_shifts)} - set(list_shifts())
    if unknown:
        raise ValueError(f"unknown shifts {sorted(unknown)}; choose from "
                         f"{', '.join(list_shifts())}")
    overrides = (*parse_set(args.adapt, "--adapt"), parse_variants(args.variants))
    suite_configs(["none", *adapting_modes(args)], *overrides)
    return teachers, world, overrides


def run(args: argparse.Namespace) -> int:
    """The suite named by args.suite; writes --json, the Markdown and the plots beside it."""
    if not args.teachers or not args.json:
        raise SystemExit(f"tttkd bench --suite {args.suite}: give --json OUT and at least one "
                         "--teacher LABEL=CHECKPOINT[,WEIGHTS[,HEIGHT]]")
    try:  # every argument is checked before the first (long) run starts
        teachers, world, overrides = _parse(args)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"tttkd bench --suite {args.suite}: error: {err}", file=sys.stderr)
        return 2
    device = resolve_device(args.device)
    t0 = time.monotonic()
    result: dict[str, Any] = {
        "suite": args.suite, "world": world, "drive_seeds": seeds(args),
        "adapt_overrides": args.adapt, "variants": args.variants, "teachers": teachers,
        "machine": machine_info(device),
    }
    if args.suite == "adaptation":
        result["runs"] = run_adaptation(args, teachers, world, device, overrides)
        result["summary"] = summarize(result["runs"])
    else:
        result.update(run_stability(args, teachers, world, device, overrides))
    result["minutes"] = (time.monotonic() - t0) / 60
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    writer = write_adaptation_report if args.suite == "adaptation" else write_stability_report
    written = writer(result, out.with_suffix(""))
    print(f"wrote {out} and {', '.join(str(p) for p in written)} "
          f"in {result['minutes']:.1f} min")
    return 0
