"""The adaptation and stability suites' JSON as Markdown tables and a stability plot.

A table per teacher, protocol and step count: rows are modes, columns the ID drive and each
shift, a cell is the mode's mIoU and its change relative to `none` on the same frames; the
last columns summarise the shifts (mean relative change, worst change in mIoU points).
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from tttkd_ros.tools.bench.intervals import mean_interval, mean_relative_interval, significant
from tttkd_ros.tools.report import figure

ID_DRIVE = "clean"  # the in-distribution drive of the tables


def _key(run: dict) -> tuple:
    return run["teacher"], run["protocol"], run["steps"]


def _paired(run: dict, base: dict) -> list[float]:
    """Per-frame mIoU differences of a run and its `none` run on the same frames."""
    return [a - b for a, b in zip(run["miou_per_frame"], base["miou_per_frame"])
            if a is not None and b is not None]


def summarize(runs: list[dict]) -> list[dict]:
    """Per teacher, protocol, steps and adapting mode: per drive the mIoU (mean over the
    drive seeds), `none`'s, the change (points, percent; no percent where none scored 0) and
    the 95 % interval of the change from a paired bootstrap over the frames of every seed;
    over the shifts the mean relative change with its interval, the worst change and the ID
    change. A change whose interval holds 0 is `significant: False`."""
    none = {(r["teacher"], r["drive"], r.get("seed"), r["frames"]): r for r in runs
            if r["mode"] == "none"}
    tables: dict[tuple, dict[str, dict[str, list]]] = defaultdict(dict)
    for r in runs:
        if r["mode"] != "none":
            tables[_key(r)].setdefault(r["mode"], {}).setdefault(r["drive"], []).append(r)
    out = []
    for (teacher, protocol, steps), modes in tables.items():
        for mode, drives in modes.items():
            cells, paired = {}, {}
            for drive, seed_runs in drives.items():
                bases = [none[(teacher, drive, r.get("seed"), r["frames"])] for r in seed_runs]
                miou = float(np.mean([r["miou"] for r in seed_runs]))
                base = float(np.mean([b["miou"] for b in bases]))
                paired[drive] = [d for r, b in zip(seed_runs, bases) for d in _paired(r, b)]
                interval = mean_interval(paired[drive])
                cells[drive] = {
                    "miou": miou, "none": base, "delta": miou - base,
                    "relative_pct": 100.0 * (miou - base) / base if base > 0 else None,
                    "delta_interval": interval, "significant": significant(interval),
                    "seeds": [r.get("seed") for r in seed_runs]}
            shifts = [d for d in cells if d != ID_DRIVE]
            relatives = [cells[d]["relative_pct"] for d in shifts
                         if cells[d]["relative_pct"] is not None]
            rel_interval = mean_relative_interval([paired[d] for d in shifts],
                                                  [cells[d]["none"] for d in shifts])
            out.append({
                "teacher": teacher, "protocol": protocol, "steps": steps, "mode": mode,
                "drives": cells,
                "mean_relative_pct_shifts": float(np.mean(relatives)) if relatives else None,
                "mean_relative_interval": rel_interval,
                "mean_relative_significant": significant(rel_interval),
                "worst_delta_shifts": min(cells[d]["delta"] for d in shifts) if shifts else None,
                "id_delta": cells[ID_DRIVE]["delta"] if ID_DRIVE in cells else None,
            })
    return out


def _interval(ci: tuple[float, float] | None, unit: str = "") -> str:
    return "" if ci is None else f" [{ci[0]:+.1f}, {ci[1]:+.1f}{unit}]"


def _cell(c: dict) -> str:
    """mIoU (change relative to none, [its interval in points]); `~` marks a change inside
    its interval's noise."""
    mark = "" if c["significant"] or c["delta_interval"] is None else " ~"
    return f"{c['miou']:.1f} ({_pct(c['relative_pct'])}{_interval(c['delta_interval'])}{mark})"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.1f} %"


def adaptation_markdown(result: dict) -> str:
    runs, summary = result["runs"], result["summary"]
    title = (f"# Does adaptation help? ({result['minutes']:.0f} min on "
             f"{result['machine'].get('cpu', 'this machine')})")
    seeds = result.get("drive_seeds") or [result.get("drive_seed")]
    legend = (f"World {result['world']}, drive seeds {', '.join(map(str, seeds))} (cells are "
              f"means over them); overrides {result['adapt_overrides'] or 'none'}. Cells: "
              "mIoU % (change relative to none on the same frames [95 % bootstrap interval "
              "of the change in points, paired over frames]); `~`: the interval holds 0, no "
              "change. Shifts: mean relative change over the shifts [its interval]; worst: "
              "the lowest change in mIoU points over the shifts.")
    lines = [title, "", legend, ""]
    for teacher, spec in result["teachers"].items():
        weights = spec["weights"] or "seeded random DINOv2 weights"
        lines += [f"## Teacher `{teacher}`: {weights}, input height {spec['image_height']}", ""]
        for protocol in ("continual", "episodic"):
            for steps in sorted({s["steps"] for s in summary if s["teacher"] == teacher
                                 and s["protocol"] == protocol}):
                rows = [s for s in summary if _key(s) == (teacher, protocol, steps)]
                drives = list(dict.fromkeys(d for s in rows for d in s["drives"]))
                frames = {r["frames"] for r in runs if r["teacher"] == teacher
                          and r["protocol"] == protocol and r["steps"] == steps}
                heading = (f"### {protocol}, {steps} step(s) per frame, "
                           f"{'/'.join(map(str, sorted(frames)))} frames per drive")
                lines += [heading, "",
                          "| mode | " + " | ".join(
                              ("ID " if d == ID_DRIVE else "") + d for d in drives)
                          + " | shifts: mean rel. | worst |",
                          "|---" * (len(drives) + 3) + "|"]
                base = rows[0]["drives"]
                lines.append("| none | " + " | ".join(f"{base[d]['none']:.1f}" for d in drives)
                             + " | | |")
                for s in rows:
                    cells = [_cell(s["drives"][d]) for d in drives]
                    worst = s["worst_delta_shifts"]
                    mean = (_pct(s["mean_relative_pct_shifts"])
                            + _interval(s["mean_relative_interval"], " %"))
                    lines.append(f"| {s['mode']} | " + " | ".join(cells) + f" | {mean} | "
                                 f"{'n/a' if worst is None else f'{worst:+.1f}'} |")
                lines.append("")
    return "\n".join(lines)


def write_adaptation_report(result: dict, stem: Path) -> list[Path]:
    path = stem.with_suffix(".md")
    path.write_text(adaptation_markdown(result) + "\n")
    return [path]


def stability_markdown(result: dict) -> str:
    """A row per teacher, shift and mode: first and last window, their difference, the
    lowest window, the mean over the windows and its change relative to `none`, and the
    gain over `none` in the first and the last window (the scene changes along a drive, so
    the gain shows drift better than the raw mIoU), the resets, and the harm guard's
    rollbacks and camera-frames without distillation."""
    head = ("| teacher | shift | mode | first window | last window | last - first | lowest | "
            "mean (rel. to none) | gain vs none: mean [95 % interval over windows] | "
            "gain vs none: first, last | resets | guard rollbacks | untrusted camera-frames |")
    title = (f"# Stability: {result['frames']} frames per shift, windows of "
             f"{result['window']} frames ({result['minutes']:.0f} min)")
    lines = [title, "", head, "|---" * 13 + "|"]
    for teacher, shifts in result["runs"].items():
        for shift, modes in shifts.items():
            base = modes["none"]["window_miou"]
            for mode, r in modes.items():
                w = r["window_miou"]
                mean = f"{np.mean(w):.1f}"
                gain = window_gain = ""
                if mode != "none":
                    mean += f" ({100 * (np.mean(w) - np.mean(base)) / np.mean(base):+.1f} %)"
                    gain = f"{w[0] - base[0]:+.1f}, {w[-1] - base[-1]:+.1f}"
                    diffs = [a - b for a, b in zip(w, base)]
                    ci = mean_interval(diffs)
                    window_gain = (f"{np.mean(diffs):+.1f}{_interval(ci)}"
                                   + ("" if significant(ci) or ci is None else " ~"))
                events = r["events"]
                rollbacks = events.get("guard_rollback", 0) + events.get("guard_source_reset", 0)
                untrusted = events.get("camera_untrusted", 0) + events.get("camera_underexposed", 0)
                lines.append(f"| {teacher} | {shift} | {mode} | {w[0]:.1f} | {w[-1]:.1f} | "
                             f"{w[-1] - w[0]:+.1f} | {min(w):.1f} | {mean} | {window_gain} | "
                             f"{gain} | "
                             f"{r['resets']} | {rollbacks} | "
                             f"{untrusted} |")
    return "\n".join(lines)


def plot_stability(result: dict, teacher: str, path: Path) -> None:
    """One panel per shift: windowed mIoU against the frame, one line per mode."""
    shifts = result["runs"][teacher]
    cols = min(3, len(shifts))
    rows = -(-len(shifts) // cols)
    fig = figure(4.5 * cols, 3.2 * rows)
    window = result["window"]
    for i, (shift, modes) in enumerate(shifts.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        for mode, r in modes.items():
            w = r["window_miou"]
            ends = [min((k + 1) * window, result["frames"]) for k in range(len(w))]
            ax.plot(ends, w, marker="o", markersize=3, label=mode)
        ax.set(title=shift, xlabel="frame", ylabel=f"mIoU per {window} frames (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(f"Continual adaptation over {result['frames']} frames, teacher {teacher}")
    fig.savefig(path)


def write_stability_report(result: dict, stem: Path) -> list[Path]:
    md = stem.with_suffix(".md")
    md.write_text(stability_markdown(result) + "\n")
    written = [md]
    for teacher in result["runs"]:
        png = stem.with_name(f"{stem.name}_{teacher}.png")
        plot_stability(result, teacher, png)
        written.append(png)
    return written
