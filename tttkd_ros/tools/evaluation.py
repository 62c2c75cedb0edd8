"""Offline evaluation: every adaptation mode, each with a fresh engine, on the same frames.

The reusable part of `tttkd eval` (the benchmark suite calls it too). Frames are read once
and kept in memory; each mode's engine is built from the checkpoint exactly as the node
builds it (`load_engine`, then `warm_up`, here on the first frame with a camera), so what is
measured here is what runs on the robot. The result is the DESIGN.md eval JSON:

    {"frames": int, "classes": [str], "labels": bool, "none_added": bool, "config": {...},
     "modes": {MODE: {"miou": float | None, "iou": {class: float},
                      "latency_ms": {"p50", "p99"}, "steps_mean": float,
                      "over_budget_frames": int,
                      "miou_per_frame": [float | None], "latency_ms_per_frame": [float],
                      "steps_per_frame": [int], "events": {name: int},
                      "events_per_frame": [[str]], "losses_per_frame": [{name: float | None}],
                      "losses_mean": {name: float | None},
                      "agreement_with_none": float | None,
                      "agreement_with_none_per_frame": [float | None],
                      "class_shares": {class: float},
                      "guard": {"checks": int, "failed_checks": int, "rollbacks": int,
                                "source_resets": int, "periodic_resets": int,
                                "cameras_untrusted": {camera: int},
                                "drift_mean": float | None, "kl_mean": float | None,
                                "gain_mean": float | None, "flip_mean": float | None,
                                "guard_ms": {"p50", "p99"},
                                "drift_per_frame": [float | None]},
                      "config": {AdaptConfig fields}}}}

`labels`: the frames have ground truth (a robot's bag has none). mIoU and IoU are percent
over the classes present in the ground truth of the frames (`iou` lists exactly those); a
frame without labeled points has mIoU None; without ground truth miou is None and iou {}.
Latency is the wall time of `engine.process(frame)`: teacher, adaptation steps, inference
and mask rendering.

The label-free figures, in both cases: `events` counts the engine's guard and safety events
over the drive (its `event_counts`, less warm-up's), `events_per_frame` lists each frame's;
`losses_per_frame` are the self-supervised loss parts of the frame's last step ({} for a
frame without steps, None for a non-finite value), `losses_mean` their mean over the frames
that have a finite one. `agreement_with_none` is the fraction of the points mode `none`
labeled that got the same label in this mode (None per frame without such points, None
throughout when `none` did not run); without ground truth `none` always runs, first, and
`none_added` says it was not asked for. `class_shares`: fraction of the points the mode
labeled that went to each class ({} when it labeled none). `guard`: the harm guard's
decisions over the drive (core/adapt/guard.py; counts from `events`, camera-frames without
distillation per camera), the mean of its figures over the checked frames (share of labels
differing from the source model's, KL(source || adapted), source objective minus adapted:
None without checks), its time on the frames that ran its source pass (None when none did), and
each frame's drift (None where unchecked).
"""
from __future__ import annotations

import functools
import itertools
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from tttkd_ros.core.adapt.engine import AdaptationEngine
from tttkd_ros.core.config import MODES, AdaptConfig, TeacherConfig, with_mode_preset
from tttkd_ros.core.frame import UNLABELED, Frame, FrameStats, Prediction
from tttkd_ros.core.labels import IGNORE_INDEX, LabelMap, lookup_train_ids
from tttkd_ros.core.loading import load_engine, warm_up
from tttkd_ros.core.metrics import ConfusionMatrix
from tttkd_ros.ros.bag import LABELS_TOPIC, InputTopics, LabeledFrame, read_bag_frames, topic_info

REFERENCE_MODE = "none"  # agreement is measured against the unadapted model's labels

# (mode, the checkpoint's palette, frame, its prediction): where each prediction goes as it
# is made, so no mode's outputs need to be kept (e.g. ros/bag_outputs.py, `--write-bag`)
PredictionSink = Callable[[str, np.ndarray, Frame, Prediction], None]


def load_frames(bag: str | Path | None = None, data: str | Path | None = None,
                sequence: str = "00", max_frames: int = 0,
                cameras: Sequence[str] = ("camera",), slop_s: float = 0.05,
                timeout_s: float = 0.2, queue_size: int = 10,
                inputs: InputTopics | None = None,
                extrinsics: Mapping[str, np.ndarray] | None = None,
                rectified: Sequence[str] = (), sensor_frame: str = "",
                cloud_to_sensor: np.ndarray | None = None) -> list[LabeledFrame]:
    """Frames of a rosbag2 bag (paired by the node's synchronizer; `inputs`: its topics,
    `extrinsics`: camera -> T_cam_lidar instead of the bag's tf; `rectified`: cameras whose
    images are rectified; `sensor_frame` / `cloud_to_sensor`: read_bag_frames') or of a
    SemanticKITTI-layout sequence, at most `max_frames` (0 = all).

    A bag with the ground-truth topic must have labels for every frame (a gap would skew
    mIoU silently); a bag without it (a robot's drive) gives frames with labels None. A
    SemanticKITTI folder has labels for every frame, or for none (scans without labels,
    e.g. KITTI's object scans, give a label-free report). Raises BagError / ValueError
    naming what is missing."""
    if (bag is None) == (data is None):
        raise ValueError("give exactly one frame source: a bag or a SemanticKITTI folder")
    limit = max_frames if max_frames > 0 else None
    if bag is not None:
        labeled = LABELS_TOPIC in topic_info(bag)
        frames = read_bag_frames(bag, cameras, slop_s, timeout_s, queue_size, extrinsics,
                                 require_labels=labeled, inputs=inputs, rectified=rectified,
                                 sensor_frame=sensor_frame, cloud_to_sensor=cloud_to_sensor)
        return list(itertools.islice(frames, limit))
    from tttkd_ros.data.kitti import read_sequence  # only this source needs the data layer

    scans = list(itertools.islice(read_sequence(data, sequence), limit))
    missing = [kf.index for kf in scans if kf.labels is None]
    if missing and len(missing) < len(scans):  # a gap would skew mIoU silently
        raise ValueError(f"{data} sequence {sequence} frame {missing[0]} has no labels "
                         f"(labels/NNNNNN.label; {len(missing)} of {len(scans)} frames lack "
                         "them): label every frame, or none for a label-free report")
    return [LabeledFrame(kf.to_frame(), kf.labels) for kf in scans]


def mode_configs(modes: Iterable[str], common: Mapping[str, Any] | None = None,
                 per_mode: Mapping[str, Mapping[str, Any]] | None = None,
                 base: AdaptConfig | None = None, presets: bool = True
                 ) -> dict[str, AdaptConfig]:
    """An AdaptConfig per mode: `base` (default: the defaults; e.g. the node's parameters),
    then the mode's preset (core MODE_PRESETS, as the node applies it) unless `presets` is
    off, then `common` (every mode), then `per_mode[mode]`. Raises ValueError for an unknown
    mode or field."""
    configs = {}
    per_mode = per_mode or {}
    modes = list(modes)
    unknown = [m for m in [*modes, *per_mode] if m not in MODES]
    if unknown or not modes:
        raise ValueError(f"unknown or no modes {unknown}; choose from {', '.join(MODES)}")
    for mode in modes:
        cfg = replace(base or AdaptConfig(), mode=mode)
        if presets:
            cfg = with_mode_preset(cfg)
        try:
            cfg = replace(cfg, **(common or {}), **per_mode.get(mode, {}))
        except TypeError as err:
            raise ValueError(f"mode {mode}: {err}") from err
        cfg.validate()
        configs[mode] = cfg
    return configs


def label_lut(class_names: Sequence[str], labels: LabelMap | None = None) -> np.ndarray:
    """(65536,) uint8: raw id -> index into `class_names` (the checkpoint's classes, matched
    by name to the label map's, default SemanticKITTI's), IGNORE_INDEX for ids whose class
    the checkpoint lacks."""
    labels = labels or LabelMap.semantic_kitti()
    index = {name: i for i, name in enumerate(class_names)}
    to_ckpt = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for train_id, name in enumerate(labels.class_names):
        if name in index:
            to_ckpt[train_id] = index[name]
    if (to_ckpt == IGNORE_INDEX).all():
        raise ValueError(f"the checkpoint's classes {list(class_names)} share no name with "
                         f"the label map's {list(labels.class_names)}; give the label map it "
                         "was trained with (--label-map)")
    return to_ckpt[labels.lut()]


def _none_if_nan(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def _ratio(num: int, den: int) -> float | None:
    return float(num / den) if den else None


def _finite_or_none(losses: Mapping[str, float]) -> dict[str, float | None]:
    """A discarded non-finite step leaves NaN/inf in the losses; JSON has no such numbers."""
    return {k: float(v) if math.isfinite(v) else None for k, v in losses.items()}


class _Drive:
    """One mode's figures, gathered frame by frame: counts and small per-frame values only,
    never the predictions themselves (every mode's labels of a long drive would not fit in
    memory; only none's are kept, as the agreement's reference)."""

    def __init__(self, lut: np.ndarray | None, num_classes: int) -> None:
        self.lut, self.num_classes = lut, num_classes
        self.total = ConfusionMatrix(num_classes)
        self.class_counts = np.zeros(num_classes, dtype=np.int64)
        self.agree, self.compared = 0, 0
        self.miou: list[float | None] = []
        self.agreement: list[float | None] = []
        self.latency: list[float] = []
        self.steps: list[int] = []
        self.losses: list[dict[str, float | None]] = []
        self.events: list[list[str]] = []
        self.over = 0
        # (drift, kl, gain, flip) per check
        self.checks: list[tuple[float, float, float, float]] = []
        self.drift: list[float | None] = []
        self.guard_ms: list[float] = []
        self.untrusted: Counter[str] = Counter()

    def add(self, item: LabeledFrame, pred: Prediction, latency_ms: float,
            reference: np.ndarray | None) -> None:
        """Score one frame; `reference`: mode none's labels of it, if none ran."""
        self.miou.append(self._score(item, pred) if self.lut is not None else None)
        self.agreement.append(None if reference is None else self._agree(pred, reference))
        labels = pred.labels[pred.labels < self.num_classes].astype(np.int64)
        self.class_counts += np.bincount(labels, minlength=self.num_classes)
        self.latency.append(latency_ms)
        self.steps.append(int(pred.stats.steps))
        self.losses.append(_finite_or_none(pred.stats.losses))
        self.events.append(list(pred.stats.events))
        self.over += bool(pred.stats.over_budget)
        self._guard(pred.stats)

    def _guard(self, s: FrameStats) -> None:
        self.drift.append(s.guard_drift if s.guard_checked else None)
        if s.guard_checked:
            self.checks.append((s.guard_drift, s.guard_kl, s.guard_gain, s.guard_flip))
        if s.guard_ms > 0:
            self.guard_ms.append(s.guard_ms)
        self.untrusted.update(s.cameras_untrusted)

    def _score(self, item: LabeledFrame, pred: Prediction) -> float | None:
        truth = lookup_train_ids(self.lut, item.labels)
        frame_cm = ConfusionMatrix(self.num_classes)
        frame_cm.update(truth, pred.labels)
        self.total.matrix += frame_cm.matrix
        return _none_if_nan(frame_cm.miou())

    def _agree(self, pred: Prediction, reference: np.ndarray) -> float | None:
        """Same label as `none` over the points `none` labeled (the points both leave
        unlabeled, non-finite or no-returns, would only inflate it)."""
        counted = reference != UNLABELED
        same = int((pred.labels[counted] == reference[counted]).sum())
        self.agree, self.compared = self.agree + same, self.compared + int(counted.sum())
        return _ratio(same, int(counted.sum()))

    def entry(self, class_names: Sequence[str], events: Mapping[str, int],
              has_reference: bool) -> dict:
        """The mode's JSON entry (without config); `events`: the engine's over the drive."""
        iou = self.total.iou() * 100.0
        present = self.total.present()
        latency = self.latency
        p50, p99 = np.percentile(latency, [50, 99]) if latency else (np.nan, np.nan)
        labeled = int(self.class_counts.sum())
        return {
            "miou": _none_if_nan(self.total.miou()) if self.lut is not None else None,
            "iou": {name: float(iou[i]) for i, name in enumerate(class_names) if present[i]},
            "latency_ms": {"p50": _none_if_nan(p50), "p99": _none_if_nan(p99)},
            "steps_mean": float(np.mean(self.steps)) if self.steps else 0.0,
            "over_budget_frames": int(self.over),
            "miou_per_frame": self.miou,
            "latency_ms_per_frame": [float(x) for x in latency],
            "steps_per_frame": self.steps,
            "events": dict(sorted(events.items())),
            "events_per_frame": self.events,
            "losses_per_frame": self.losses,
            "losses_mean": self._losses_mean(),
            "agreement_with_none": (_ratio(self.agree, self.compared) if has_reference
                                    else None),
            "agreement_with_none_per_frame": self.agreement,
            "class_shares": ({name: float(self.class_counts[i] / labeled)
                              for i, name in enumerate(class_names)} if labeled else {}),
            "guard": self._guard_entry(events),
        }

    def _guard_entry(self, events: Mapping[str, int]) -> dict:
        means = np.mean(self.checks, axis=0) if self.checks else [None] * 4
        p50, p99 = (np.percentile(self.guard_ms, [50, 99]) if self.guard_ms
                    else (np.nan, np.nan))
        return {
            "checks": int(events.get("guard_check", 0)),
            "failed_checks": int(events.get("guard_check_failed", 0)),
            "rollbacks": int(events.get("guard_rollback", 0)),
            "source_resets": int(events.get("guard_source_reset", 0)),
            "periodic_resets": int(events.get("periodic_reset", 0)),
            "cameras_untrusted": dict(sorted(self.untrusted.items())),
            **{k: None if v is None else float(v)
               for k, v in zip(("drift_mean", "kl_mean", "gain_mean", "flip_mean"), means)},
            "guard_ms": {"p50": _none_if_nan(p50), "p99": _none_if_nan(p99)},
            "drift_per_frame": self.drift,
        }

    def _losses_mean(self) -> dict[str, float | None]:
        names = sorted({k for frame in self.losses for k in frame})
        means = {}
        for name in names:
            values = [f[name] for f in self.losses if f.get(name) is not None]
            means[name] = float(np.mean(values)) if values else None
        return means


def run_mode(engine: AdaptationEngine, frames: Sequence[LabeledFrame],
             lut: np.ndarray | None, class_names: Sequence[str], progress: bool = True,
             desc: str = "", reference: list[np.ndarray] | None = None,
             is_reference: bool = False,
             sink: Callable[[Frame, Prediction], None] | None = None) -> dict:
    """Process `frames` in order with `engine`; the mode's JSON entry (without config).

    lut: raw id -> class index (`label_lut`), None for frames without ground truth.
    reference: mode none's labels per frame, the agreement's reference; `is_reference`:
    this is the none run, which fills `reference` as it goes (and agrees with itself); it
    holds one (N,) uint16 array per frame, the only predictions kept past their frame.
    sink: gets each frame's prediction as it is made, outside the timed call.
    """
    drive = _Drive(lut, len(class_names))
    before = Counter(engine.event_counts)  # warm-up's events are not the drive's
    for i, item in enumerate(tqdm(frames, desc=desc, unit="frame", disable=not progress)):
        t0 = time.perf_counter()
        pred = engine.process(item.frame)
        latency = (time.perf_counter() - t0) * 1e3
        if is_reference:
            reference.append(pred.labels)
        drive.add(item, pred, latency, None if reference is None else reference[i])
        if sink is not None:
            sink(item.frame, pred)
    return drive.entry(class_names, engine.event_counts - before, reference is not None)


def _has_labels(frames: Sequence[LabeledFrame]) -> bool:
    """True when every frame has ground truth, False when none has; mixed is an error (the
    mIoU of some frames next to the agreement of others would compare nothing)."""
    labeled = [f.labels is not None for f in frames]
    if any(labeled) and not all(labeled):
        missing = [i for i, ok in enumerate(labeled) if not ok]
        raise ValueError(f"frames {missing[:5]}{'...' if len(missing) > 5 else ''} have no "
                         "labels while others have: give frames with ground truth or none")
    return all(labeled)


def _run_order(configs: Mapping[str, AdaptConfig], labeled: bool
               ) -> tuple[dict[str, AdaptConfig], bool]:
    """(the modes to run, none first so the others can be compared with it as they run;
    whether none was added). Without labels none runs even if not asked for, with the first
    mode's settings (those that act without adaptation: max_points, min_range, intensity
    scaling), so the agreement measures the adaptation alone."""
    added = not labeled and REFERENCE_MODE not in configs
    first = next(iter(configs.values()))
    order = dict(configs)
    if added:
        order[REFERENCE_MODE] = replace(first, mode=REFERENCE_MODE)
    if REFERENCE_MODE in order:
        order = {REFERENCE_MODE: order.pop(REFERENCE_MODE), **order}
    return order, added


def evaluate(frames: Sequence[LabeledFrame], checkpoint: str | Path,
             configs: Mapping[str, AdaptConfig], teacher: TeacherConfig,
             device: torch.device | str, progress: bool = True, dino=None,
             sink: PredictionSink | None = None, labels: LabelMap | None = None) -> dict:
    """Run every mode of `configs` on `frames`, each with a fresh, warmed-up engine loaded
    from `checkpoint`; returns the eval JSON (module doc). `dino`: a loaded teacher for
    `teacher` to share between the modes (see `load_engine`). `sink`: gets every mode's
    predictions as they are made (the none run's too when it was added). `labels`: the
    class set of the ground truth's raw ids (default SemanticKITTI's)."""
    if not frames:
        raise ValueError("no frames to evaluate")
    if not configs:
        raise ValueError("no modes to evaluate")
    labeled = _has_labels(frames)
    order, added = _run_order(configs, labeled)
    reference = [] if REFERENCE_MODE in order else None
    entries, class_names = {}, None
    # warm up on a real frame (its sizes pick the kernels); the teacher needs a camera
    sample = next((f.frame for f in frames if f.frame.cameras), None)
    for mode, cfg in order.items():
        loaded = load_engine(str(checkpoint), cfg, teacher, device, dino)
        warm_up(loaded.engine, sample)
        class_names = loaded.class_names
        lut = label_lut(class_names, labels) if labeled else None
        out = None if sink is None else functools.partial(sink, mode, loaded.palette)
        entry = run_mode(loaded.engine, frames, lut, class_names, progress,
                         desc=f"eval {mode}", reference=reference,
                         is_reference=mode == REFERENCE_MODE, sink=out)
        entries[mode] = {**entry, "config": asdict(cfg)}
    listed = ([REFERENCE_MODE] if added else []) + list(configs)
    return {
        "frames": len(frames), "classes": list(class_names), "labels": labeled,
        "none_added": added, "modes": {mode: entries[mode] for mode in listed},
        "config": {"checkpoint": str(checkpoint), "teacher": asdict(teacher),
                   "device": str(device)},
    }
