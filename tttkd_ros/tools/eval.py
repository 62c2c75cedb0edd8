"""`tttkd eval`: every adaptation mode on the same frames of a bag or SemanticKITTI folder.

Writes the DESIGN.md eval JSON, a Markdown report and PNG plots (see evaluation.py and
report.py), with `--write-bag` also every mode's outputs as a bag (ros/bag_outputs.py). TENT
runs as a baseline on the batch-norm affine parameters with batch statistics
(params=backbone_bn, bn_prior=0); `--set tent.params=backbone` etc. overrides it.
"""
from __future__ import annotations

import argparse
import json
import sys
from contextlib import nullcontext
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from tttkd_ros.core.config import MODES, PROTOCOLS, AdaptConfig, TeacherConfig
from tttkd_ros.core.device.selection import resolve_device
from tttkd_ros.core.loading import resolved_teacher
from tttkd_ros.core.model.checkpoint import load_checkpoint
from tttkd_ros.data.kitti import load_label_map
from tttkd_ros.ros.bag import BagError, InputTopics
from tttkd_ros.ros.bag_outputs import open_output_bag
from tttkd_ros.ros.camera_info import rectified_from_topic
from tttkd_ros.ros.param_file import settings_from_file
from tttkd_ros.tools.evaluation import evaluate, load_frames, mode_configs
from tttkd_ros.tools.report import write_report

_FIELD_TYPES = {f.name: type(getattr(AdaptConfig(), f.name)) for f in fields(AdaptConfig)}


def register(p: argparse.ArgumentParser) -> None:
    """Fill `tttkd eval`'s parser (tools/cli.py makes it)."""
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--bag", help="rosbag2 folder (sqlite3 or mcap); without ground truth "
                        "(/ground_truth/points) the report is label-free")
    source.add_argument("--data", help="SemanticKITTI-layout root (holds sequences/SS/...)")
    p.add_argument("--sequence", default="00", help="sequence of --data")
    p.add_argument("--checkpoint", required=True, help="source checkpoint (tttkd train)")
    p.add_argument("--modes", default=",".join(MODES),
                   help=f"comma-separated, from {', '.join(MODES)}")
    p.add_argument("--json", required=True, help="result JSON to write")
    p.add_argument("--report-dir", default="",
                   help="report.md and plots (default: JSON_STEM_report beside the JSON)")
    p.add_argument("--max-frames", type=int, default=0, help="first N frames; 0 = all")
    p.add_argument("--label-map", default="", metavar="YAML",
                   help="the class set of the ground truth (semantic-kitti.yaml's format) "
                        "the checkpoint was trained with; default SemanticKITTI's")
    p.add_argument("--write-bag", default="", metavar="OUT",
                   help="new rosbag2 folder for every mode's outputs (the node's topics under "
                        "/MODE/tttkd_adapt/) and the input /points")
    p.add_argument("--steps", type=int, help="adaptation steps per frame (max_steps)")
    p.add_argument("--budget-ms", type=float, help="per-frame adaptation budget")
    p.add_argument("--protocol", choices=PROTOCOLS)
    p.add_argument("--lr", type=float, help="test-time learning rate")
    p.add_argument("--set", action="append", default=[], metavar="[MODE.]FIELD=VALUE",
                   help="any AdaptConfig field, for every mode or one (e.g. tent.lr=1e-4)")
    p.add_argument("--params", default="", metavar="FILE",
                   help="the node's parameter file (e.g. config/adapt.yaml): cameras, their "
                        "transports and extrinsics (unless use_tf: then the bag's tf), sync, "
                        "teacher, and the adaptation settings it changes from the defaults "
                        "(for every mode), as the node would run")
    p.add_argument("--remap", action="append", default=[], metavar="FROM:=TO",
                   help="a node input onto a bag topic, as the node's remaps: "
                        "points:=/velodyne_points, camera/image:=/camera/color/image_raw, "
                        "camera/camera_info:=/camera/color/camera_info (repeatable)")
    p.add_argument("--cameras", default=None,
                   help="camera namespaces of the bag; '' = none (default: --params', else "
                        "camera)")
    p.add_argument("--slop", type=float, default=None,
                   help="sync slop (s), as the node's (default: --params', else 0.05)")
    p.add_argument("--teacher", default="", help="teacher model (default: the checkpoint's)")
    p.add_argument("--teacher-weights", default="", help="local DINOv2 weight file")
    p.add_argument("--teacher-height", type=int, default=None, help="default: --params', "
                   "else the one the checkpoint was trained with")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    p.set_defaults(func=run)


def _value(field: str, text: str) -> Any:
    kind = _FIELD_TYPES[field]
    if kind is bool:
        return text.lower() in ("1", "true", "yes", "on")
    return kind(text)


def parse_overrides(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, dict]]:
    """(changes for every mode, changes per mode) from the flags and `--set`."""
    common, per_mode = parse_set(args.set)
    flags = {k: v for k, v in (
        ("max_steps", args.steps), ("budget_ms", args.budget_ms),
        ("protocol", args.protocol), ("lr", args.lr)) if v is not None}
    return {**flags, **common}, per_mode


def parse_set(items: list[str], flag: str = "--set"
              ) -> tuple[dict[str, Any], dict[str, dict]]:
    """'[MODE.]FIELD=VALUE' items -> (changes for every mode, changes per mode); ValueError
    naming `flag` and the item for a malformed one."""
    common: dict[str, Any] = {}
    per_mode: dict[str, dict] = {}
    for item in items:
        key, sep, text = item.partition("=")
        mode, dot, field = key.rpartition(".")
        if not sep or field not in _FIELD_TYPES or (dot and mode not in MODES):
            raise ValueError(f"{flag} {item!r}: expected [MODE.]FIELD=VALUE with MODE in "
                             f"{MODES} and FIELD in {sorted(_FIELD_TYPES)}")
        try:
            value = _value(field, text)
        except ValueError as err:
            raise ValueError(f"{flag} {item!r}: {err}") from err
        (per_mode.setdefault(mode, {}) if mode else common)[field] = value
    return common, per_mode


def run(args: argparse.Namespace) -> int:
    try:
        result = _evaluate(args)
    except (BagError, ValueError, FileNotFoundError) as err:
        print(f"tttkd eval: error: {err}", file=sys.stderr)
        return 2
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    report_dir = Path(args.report_dir) if args.report_dir else out.with_name(f"{out.stem}_report")
    written = write_report(result, report_dir)
    if args.write_bag:
        written.append(Path(args.write_bag))
    print(f"{'mode':<8} {'mIoU %' if result['labels'] else 'agree %':>7} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'steps':>6} {'guard checks/rollbacks/untrusted':>33}")
    for mode, e in result["modes"].items():
        score = _score(result["labels"], e)
        score_text = "n/a" if score is None else f"{score:.1f}"
        g = e["guard"]
        guard = (f"{g['checks']}/{g['rollbacks'] + g['source_resets']}/"
                 f"{sum(g['cameras_untrusted'].values())}")
        print(f"{mode:<8} {score_text:>7} {e['latency_ms']['p50']:>8.1f} "
              f"{e['latency_ms']['p99']:>8.1f} {e['steps_mean']:>6.2f} {guard:>33}")
    print(f"wrote {out} and {', '.join(str(p) for p in written)}")
    return 0


def _score(labeled: bool, entry: dict) -> float | None:
    """The table's score: mIoU (%), or without ground truth the percentage of the points the
    unadapted model labeled that keep its label (how far adaptation moved the labels)."""
    if labeled:
        return entry["miou"]
    agree = entry["agreement_with_none"]
    return None if agree is None else 100.0 * agree


def parse_remaps(items: list[str]) -> dict[str, str]:
    """'FROM:=TO' items (the node's input name, the bag topic) -> {FROM: TO}."""
    remaps = {}
    for item in items:
        source, sep, target = item.partition(":=")
        if not sep or not source or not target:
            raise ValueError(f"--remap {item!r}: expected FROM:=TO, e.g. points:=/velodyne_points")
        remaps[source.strip("/")] = target if target.startswith("/") else f"/{target}"
    return remaps


def _evaluate(args: argparse.Namespace) -> dict:
    node = settings_from_file(args.params) if args.params else None
    common, per_mode = parse_overrides(args)
    # every mode as the node would run it with this parameter file (its adaptation settings,
    # the mode's preset unless adaptation.use_mode_presets is off), then the flags
    configs = mode_configs([m.strip() for m in args.modes.split(",") if m.strip()],
                           common, per_mode, base=node.adapt if node is not None else None,
                           presets=node.mode_presets if node is not None else True)
    device = resolve_device(args.device)
    base = node.teacher if node is not None else TeacherConfig()
    trained = load_checkpoint(args.checkpoint, "cpu")
    # unless told otherwise, the teacher the checkpoint was trained with
    teacher = resolved_teacher(replace(
        base, name=args.teacher or (base.name if node is not None else trained.teacher_name),
        weights=args.teacher_weights or base.weights,
        image_height=args.teacher_height or base.image_height), trained.teacher)
    if args.cameras is not None:
        cameras = [c.strip() for c in args.cameras.split(",") if c.strip()]
    else:
        cameras = node.cameras if node is not None else ["camera"]
    compressed = [c for c in cameras
                  if node is not None and node.camera_transports.get(c) == "compressed"]
    inputs = InputTopics.remapped(cameras, parse_remaps(args.remap), compressed)
    rectified = [c for c in cameras if rectified_from_topic(
        node.camera_rectified.get(c, "auto") if node is not None else "auto", inputs.image(c))]
    slop = args.slop if args.slop is not None else node.slop if node is not None else 0.05
    options: dict[str, Any] = {}  # what the node's parameter file sets for reading the bag
    if node is not None:
        options = {"timeout_s": node.sync_timeout, "queue_size": node.queue_size,
                   # a cloud in another frame than the model's, moved as the node moves it
                   "sensor_frame": node.sensor_frame if node.use_tf else "",
                   "cloud_to_sensor": node.cloud_to_sensor}
    extrinsics = None if node is None or node.use_tf else {
        c: node.extrinsics[c] for c in cameras if c in node.extrinsics}
    frames = load_frames(bag=args.bag, data=args.data, sequence=args.sequence,
                         max_frames=args.max_frames, cameras=cameras, slop_s=slop,
                         inputs=inputs, extrinsics=extrinsics, rectified=rectified, **options)
    with open_output_bag(args.write_bag) if args.write_bag else nullcontext() as outputs:
        if outputs is not None:
            outputs.write_inputs(frames)
        labels = load_label_map(args.label_map)
        result = evaluate(frames, args.checkpoint, configs, teacher, device,
                          progress=not args.no_progress, labels=labels,
                          sink=None if outputs is None else outputs.write_prediction)
    result["config"].update(source=args.bag or f"{args.data} sequence {args.sequence}",
                            cameras=cameras, rectified=rectified, slop_s=slop,
                            params=args.params or None,
                            topics={"points": inputs.points, "images": dict(inputs.images),
                                    "infos": dict(inputs.infos)})
    return result
