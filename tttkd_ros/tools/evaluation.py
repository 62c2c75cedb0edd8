"""Offline evaluation: every adaptation mode, each with a fresh engine, on the same frames.

The reusable part of `tttkd eval` (the benchmark suite calls it too). Frames are read once
and kept in memory; each mode's engine is built from the checkpoint exactly as the node
builds it (`load_engine`, then `warm_up`, here on the first frame with a camera), so what is measured here is what runs on the
robot. The result is the DESIGN.md eval JSON:

    {"frames": int, "classes": [str], "config": {...},
     "modes": {MODE: {"miou": float, "iou": {class: float}, "latency_ms": {"p50", "p99"},
                      "steps_mean": float, "over_budget_frames": int,
                      "miou_per_frame": [float | None], "latency_ms_per_frame": [float],
                      "config": {AdaptConfig fields}}}}

mIoU and IoU are percent over the classes present in the ground truth of the frames (`iou`
lists exactly those); a frame without labeled points has mIoU None. Latency is the wall time
of `engine.process(frame)`: teacher, adaptation steps, inference and mask rendering.
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from tttkd_ros.core.adapt.engine import AdaptationEngine
from tttkd_ros.core.config import MODES, AdaptConfig, TeacherConfig
from tttkd_ros.core.labels import CLASS_NAMES, IGNORE_INDEX, raw_to_train_lut
from tttkd_ros.core.loading import load_engine, warm_up
from tttkd_ros.core.metrics import ConfusionMatrix
from tttkd_ros.ros.bag import LabeledFrame, read_bag_frames

# Each baseline with its own best setting on the validation drives (README, "Does adaptation
# help?"); overridable per mode. TENT: entropy minimisation on the batch-norm affine
# parameters, normalising with the current cloud's statistics (Wang et al., ICLR 2021).
# OCL alone: its loss at full weight with a smaller step (the shipped kd+ocl weight, 0.1, is
# for OCL as a regulariser of KD).
BASELINE_DEFAULTS: dict[str, dict[str, Any]] = {
    "tent": {"params": "backbone_bn", "bn_prior": 0.0, "lr": 3e-4},
    "ocl": {"w_ocl": 1.0, "lr": 3e-4},
}


def load_frames(bag: str | Path | None = None, data: str | Path | None = None,
                sequence: str = "00", max_frames: int = 0,
                cameras: Sequence[str] = ("camera",), slop_s: float = 0.05,
                timeout_s: float = 0.2) -> list[LabeledFrame]:
    """Labeled frames of a rosbag2 bag (paired by the node's synchronizer) or of a
    SemanticKITTI-layout sequence, at most `max_frames` (0 = all). Every frame must have
    labels; raises BagError / ValueError naming what is missing."""
    if (bag is None) == (data is None):
        raise ValueError("give exactly one frame source: a bag or a SemanticKITTI folder")
    limit = max_frames if max_frames > 0 else None
    if bag is not None:
        frames = read_bag_frames(bag, cameras, slop_s, timeout_s, require_labels=True)
        return list(itertools.islice(frames, limit))
    from tttkd_ros.data.kitti import read_sequence  # only this source needs the data layer

    out = []
    for kf in itertools.islice(read_sequence(data, sequence), limit):
        if kf.labels is None:
            raise ValueError(f"{data} sequence {sequence} frame {kf.index} has no labels "
                             "(labels/NNNNNN.label): evaluation needs ground truth")
        out.append(LabeledFrame(kf.to_frame(), kf.labels))
    return out


def mode_configs(modes: Iterable[str], common: Mapping[str, Any] | None = None,
                 per_mode: Mapping[str, Mapping[str, Any]] | None = None
                 ) -> dict[str, AdaptConfig]:
    """An AdaptConfig per mode: the defaults, then BASELINE_DEFAULTS[mode], then `common`
    (every mode), then `per_mode[mode]`. Raises ValueError for an unknown mode or field."""
    configs = {}
    per_mode = per_mode or {}
    modes = list(modes)
    unknown = [m for m in [*modes, *per_mode] if m not in MODES]
    if unknown or not modes:
        raise ValueError(f"unknown or no modes {unknown}; choose from {', '.join(MODES)}")
    for mode in modes:
        changes = {**BASELINE_DEFAULTS.get(mode, {}), **(common or {}),
                   **per_mode.get(mode, {})}
        try:
            cfg = replace(AdaptConfig(mode=mode), **changes)
        except TypeError as err:
            raise ValueError(f"mode {mode}: {err}") from err
        cfg.validate()
        configs[mode] = cfg
    return configs


def label_lut(class_names: Sequence[str]) -> np.ndarray:
    """(65536,) uint8: raw SemanticKITTI id -> index into `class_names` (the checkpoint's
    classes, matched by name), IGNORE_INDEX for ids whose class the checkpoint lacks."""
    index = {name: i for i, name in enumerate(class_names)}
    to_ckpt = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for train_id, name in enumerate(CLASS_NAMES):
        if name in index:
            to_ckpt[train_id] = index[name]
    if (to_ckpt == IGNORE_INDEX).all():
        raise ValueError(f"the checkpoint's classes {list(class_names)} share no name with "
                         f"SemanticKITTI's {CLASS_NAMES}")
    return to_ckpt[raw_to_train_lut()]


def _none_if_nan(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def run_mode(engine: AdaptationEngine, frames: Sequence[LabeledFrame], lut: np.ndarray,
             class_names: Sequence[str], progress: bool = True, desc: str = "") -> dict:
    """Process `frames` in order with `engine`; the mode's JSON entry (without config)."""
    total = ConfusionMatrix(len(class_names))
    per_frame, latency, steps, over = [], [], [], 0
    for item in tqdm(frames, desc=desc, unit="frame", disable=not progress):
        t0 = time.perf_counter()
        pred = engine.process(item.frame)
        latency.append((time.perf_counter() - t0) * 1e3)
        truth = lut[np.asarray(item.labels, dtype=np.uint32) & 0xFFFF]
        frame_cm = ConfusionMatrix(len(class_names))
        frame_cm.update(truth, pred.labels)
        total.matrix += frame_cm.matrix
        per_frame.append(_none_if_nan(frame_cm.miou()))
        steps.append(pred.stats.steps)
        over += bool(pred.stats.over_budget)
    iou = total.iou() * 100.0
    present = total.present()
    p50, p99 = np.percentile(latency, [50, 99]) if latency else (np.nan, np.nan)
    return {
        "miou": _none_if_nan(total.miou()),
        "iou": {name: float(iou[i]) for i, name in enumerate(class_names) if present[i]},
        "latency_ms": {"p50": _none_if_nan(p50), "p99": _none_if_nan(p99)},
        "steps_mean": float(np.mean(steps)) if steps else 0.0,
        "over_budget_frames": int(over),
        "miou_per_frame": per_frame,
        "latency_ms_per_frame": [float(x) for x in latency],
    }


def evaluate(frames: Sequence[LabeledFrame], checkpoint: str | Path,
             configs: Mapping[str, AdaptConfig], teacher: TeacherConfig,
             device: torch.device | str, progress: bool = True, dino=None) -> dict:
    """Run every mode of `configs` on `frames`, each with a fresh, warmed-up engine loaded
    from `checkpoint`; returns the eval JSON (module doc). `dino`: a loaded teacher for
    `teacher` to share between the modes (see `load_engine`)."""
    if not frames:
        raise ValueError("no frames to evaluate")
    modes, class_names = {}, None
    # warm up on a real frame (its sizes pick the kernels); the teacher needs a camera
    sample = next((f.frame for f in frames if f.frame.cameras), None)
    for mode, cfg in configs.items():
        loaded = load_engine(str(checkpoint), cfg, teacher, device, dino)
        warm_up(loaded.engine, sample)
        class_names = loaded.class_names
        entry = run_mode(loaded.engine, frames, label_lut(class_names), class_names,
                         progress, desc=f"eval {mode}")
        modes[mode] = {**entry, "config": asdict(cfg)}
    return {
        "frames": len(frames), "classes": list(class_names), "modes": modes,
        "config": {"checkpoint": str(checkpoint), "teacher": asdict(teacher),
                   "device": str(device)},
    }
