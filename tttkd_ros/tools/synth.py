"""`tttkd synth`: write a synthetic drive in the SemanticKITTI layout (and as a rosbag2)."""
from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

from tqdm import tqdm

from ..data.drive import generate_drive
from ..data.kitti import check_camera_count, sequence_dir, write_label_map, write_sequence
from ..data.shifts import SHIFTS, get_shift, list_shifts
from ..data.stats import scan_stats, side_by_side
from ..ros.bag import STORAGES, write_drive_bag


def register(parser: argparse.ArgumentParser) -> None:
    """Fill `tttkd synth`'s parser (tools/cli.py makes it)."""
    parser.description = (
        "Render a seeded synthetic drive (64-beam LiDAR, KITTI-like camera) in a "
        "domain-shift preset and write it as OUT/sequences/SS plus "
        "OUT/semantic-kitti.yaml; with --bag also as a self-contained rosbag2 "
        "OUT/bags/SS (LiDAR, camera, /tf_static, ground truth).")
    parser.add_argument("--out", type=Path, help="dataset root (gets sequences/SS)")
    parser.add_argument("--frames", type=int, default=20, help="number of frames (10 Hz)")
    parser.add_argument("--every", type=int, default=1, metavar="N",
                        help="keep every N-th frame of the drive (training sets: frames "
                             "metres apart); default 1, all frames at 10 Hz")
    parser.add_argument("--shift", default="clean", choices=list_shifts(), metavar="NAME",
                        help="domain-shift preset (see --list-shifts); default clean")
    parser.add_argument("--seed", type=int, default=0, help="drive seed (start, speed, noise)")
    parser.add_argument("--sequence", default="00", help="sequence folder name; default 00")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        dest="overrides",
                        help="synthetic-world setting, repeatable, e.g. lidar_beams=32, "
                             "lidar_azimuth_res_deg=0.72, image_scale=0.5")
    parser.add_argument("--bag", action="store_true",
                        help="also write the drive as a rosbag2 folder OUT/bags/SS")
    parser.add_argument("--storage", default="sqlite3", choices=sorted(STORAGES),
                        help="rosbag2 storage of --bag; default sqlite3")
    parser.add_argument("--list-shifts", action="store_true",
                        help="print the preset names, one per line, clean first, and exit")
    parser.add_argument("--stats", action="store_true",
                        help="print the drive's scan statistics (per class: share, intensity, "
                             "height, range percentiles) as JSON; --out is then optional")
    parser.add_argument("--compare", type=Path, metavar="JSON",
                        help="with --stats: print a Markdown table of the drive's statistics "
                             "next to these (e.g. the same statistics of real scans)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.list_shifts:
        print("\n".join(list_shifts()))
        return 0
    if args.out is None and not args.stats:
        print("tttkd synth: --out is required (or use --list-shifts or --stats)",
              file=sys.stderr)
        return 2
    reference = None
    if args.compare is not None:
        try:
            reference = json.loads(args.compare.read_text())
        except (OSError, ValueError) as err:
            print(f"tttkd synth: --compare {args.compare}: {err}", file=sys.stderr)
            return 2
    if args.frames < 1 or args.every < 1:
        print("tttkd synth: --frames and --every must be at least 1", file=sys.stderr)
        return 2
    try:
        overrides = parse_overrides(args.overrides)
        config = get_shift(args.shift, **overrides)  # fail on a bad setting before writing
    except (TypeError, ValueError) as err:
        print(f"tttkd synth: --set: {err}", file=sys.stderr)
        return 2
    if args.out is None:
        return _print_stats(list(frames_of(args, overrides)), args, reference)
    try:
        check_camera_count(len(config.cameras))
    except ValueError as err:
        print(f"tttkd synth: {err}; use fewer cameras, or --stats without --out (the "
              "benchmarks take a larger rig: tttkd bench --world)", file=sys.stderr)
        return 2
    bag = args.out / "bags" / args.sequence
    if args.bag and bag.exists():
        print(f"tttkd synth: {bag} exists; remove it or choose another --sequence",
              file=sys.stderr)
        return 2
    frames = frames_of(args, overrides)
    if args.bag or args.stats:
        frames = list(frames)  # render once, use twice
    count = write_sequence(args.out, args.sequence, frames)
    write_label_map(args.out / "semantic-kitti.yaml")
    print(f"wrote {count} frames ({args.shift}: {SHIFTS[args.shift][0]}) to "
          f"{sequence_dir(args.out, args.sequence)}")
    if args.bag:
        write_drive_bag(bag, frames, args.storage)
        print(f"wrote the same frames as a rosbag2 ({args.storage}) to {bag}")
    return _print_stats(frames, args, reference) if args.stats else 0


def frames_of(args: argparse.Namespace, overrides: dict[str, object]):
    return tqdm(generate_drive(args.shift, frames=args.frames, seed=args.seed,
                               every=args.every, **overrides),
                total=args.frames, desc=f"synth {args.shift}", unit="frame")


def _print_stats(frames: list, args: argparse.Namespace, reference: dict | None) -> int:
    stats = scan_stats(((f.points, f.labels) for f in frames),
                       f"tttkd synth --shift {args.shift} --seed {args.seed} "
                       f"--frames {args.frames}")
    print(json.dumps(stats, indent=1) if reference is None else side_by_side(stats, reference))
    return 0


def parse_overrides(items: list[str]) -> dict[str, object]:
    """KEY=VALUE strings -> {KEY: value}; a value is a Python literal (number, tuple, bool)
    or else the plain string."""
    overrides: dict[str, object] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{item!r} is not KEY=VALUE")
        try:
            overrides[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            overrides[key] = text
    return overrides
