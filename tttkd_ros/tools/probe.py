"""`tttkd probe`: fit the teacher probe (core/model/teacher_probe.py) of a trained checkpoint
on its training data and write the checkpoint with it and the data's class shares;
adaptation's w_probe then distils the probe's sure labels, and test-time normalisation weighs
each frame towards the class shares (core/adapt/class_mix.py). `--shares-only` records the
shares alone, for a checkpoint from before `tttkd train` recorded them."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from tttkd_ros.core.config import TeacherConfig
from tttkd_ros.core.loading import resolved_teacher
from tttkd_ros.core.model.checkpoint import (
    CLASS_SHARES_KEY,
    LoadedCheckpoint,
    load_checkpoint,
    save_checkpoint,
)
from tttkd_ros.core.model.feature_cache import FeatureCache
from tttkd_ros.core.model.teacher import DinoTeacher, teacher_fingerprint
from tttkd_ros.core.model.teacher_probe import EXTRA_KEY, TeacherProbe
from tttkd_ros.data.kitti import load_label_map
from tttkd_ros.tools.train import (
    cache_key,
    class_shares,
    teacher_probe,
    teacher_record,
    training_frames,
)


def register(p: argparse.ArgumentParser) -> None:
    """Fill `tttkd probe`'s parser (tools/cli.py makes it)."""
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by tttkd train")
    p.add_argument("--data", required=True, help="its training data (holds sequences/SS/...)")
    p.add_argument("--train-seqs", default="00", help="comma-separated training sequences")
    p.add_argument("--label-map", default="", metavar="YAML",
                   help="the class set the checkpoint was trained with (default SemanticKITTI's)")
    p.add_argument("--teacher-weights", default="",
                   help="the checkpoint's teacher weights (a local DINOv2 file)")
    p.add_argument("--teacher-height", type=int, default=0,
                   help="teacher input height; 0 = the one the checkpoint records")
    p.add_argument("--cache", default="", help="teacher feature cache folder (default: none)")
    p.add_argument("--out", default="", help="checkpoint to write (default: --checkpoint)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--shares-only", action="store_true",
                   help="record only the training data's class shares (no teacher needed)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    summary = add_probe(args)
    print(json.dumps(summary, indent=2))
    return 0


def add_probe(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    loaded = load_checkpoint(args.checkpoint, "cpu")
    classes = load_label_map(args.label_map)
    if list(classes.class_names) != loaded.class_names:
        raise SystemExit("--label-map is not the class set the checkpoint was trained with")
    frames = training_frames(args.data, args.train_seqs)
    if not frames:
        raise SystemExit(f"no training frames found in {args.data} (sequences "
                         f"{args.train_seqs})")
    lut = classes.lut()
    shares = class_shares(frames, lut, len(loaded.class_names), loaded.cfg.voxel_size)
    extra = {**loaded.extra, CLASS_SHARES_KEY: shares}
    out = Path(args.out or args.checkpoint)
    summary: dict = {"checkpoint": str(out)}
    if not args.shares_only:
        probe, teacher = _fit_probe(args, loaded, frames, lut, device)
        extra = {**extra, EXTRA_KEY: probe.to_extra(), "teacher": teacher}
        summary["probe_accuracy"] = round(probe.accuracy, 4)
    save_checkpoint(out, loaded.model, loaded.cfg, class_names=loaded.class_names,
                    palette=loaded.palette, teacher_name=loaded.teacher_name, extra=extra)
    return summary


def _fit_probe(args: argparse.Namespace, loaded: LoadedCheckpoint, frames: list,
               lut: np.ndarray, device: torch.device) -> tuple[TeacherProbe, dict]:
    """The probe fitted on `frames` and the record of the teacher it depends on."""
    tcfg = resolved_teacher(TeacherConfig(name=loaded.teacher_name, weights=args.teacher_weights,
                                          image_height=args.teacher_height), loaded.teacher)
    trained = (loaded.teacher or {}).get("weights")
    if trained is not None and trained != teacher_fingerprint(tcfg):
        raise SystemExit("--teacher-weights is not the teacher the checkpoint was trained with "
                         f"({(loaded.teacher or {}).get('weights_file') or 'random weights'})")
    teacher = DinoTeacher(tcfg, device)
    if args.cache:
        teacher = FeatureCache(teacher, args.cache, cache_key(tcfg))
    probe = teacher_probe(frames, teacher, lut, len(loaded.class_names), device)
    if probe is None:
        raise SystemExit("no labelled point of the training data is visible in a camera: "
                         "check --data and the cameras' calibration")
    return probe, {**teacher_record(tcfg), **(loaded.teacher or {})}
