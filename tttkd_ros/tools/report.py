"""The eval JSON as a Markdown report with three PNG plots (matplotlib, Agg canvas).

Plots: mIoU along the sequence per mode, per-class IoU per mode, latency per mode. Figures
are drawn on an explicit Agg canvas (no pyplot), so no display and no global state.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

PLOTS = {"sequence": "miou_sequence.png", "classes": "class_iou.png",
         "latency": "latency.png"}
REPORT = "report.md"


def figure(width: float, height: float) -> Figure:
    """A figure of `width` x `height` inches on Agg's canvas (no display needed)."""
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _num(x: float | None) -> float:
    return np.nan if x is None else float(x)


def plot_sequence(result: dict, path: Path) -> None:
    """Per-frame mIoU (percent) against the frame index, one line per mode."""
    fig = figure(8, 4)
    ax = fig.add_subplot()
    for mode, entry in result["modes"].items():
        values = [_num(v) for v in entry["miou_per_frame"]]
        ax.plot(np.arange(len(values)), values, label=f"{mode} ({_num(entry['miou']):.1f})")
    ax.set(xlabel="frame", ylabel="mIoU of the frame (%)", title="mIoU along the sequence")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(title="mode (overall mIoU)", fontsize="small")
    fig.savefig(path)


def plot_classes(result: dict, path: Path) -> None:
    """Grouped bars: IoU (percent) per class present in the ground truth, one bar per mode."""
    classes = [c for c in result["classes"]
               if any(c in e["iou"] for e in result["modes"].values())]
    modes = list(result["modes"])
    fig = figure(min(16.0, max(6.0, 0.5 * len(classes) + 2)), 4.5)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(modes))
    x = np.arange(len(classes))
    for i, mode in enumerate(modes):
        iou = result["modes"][mode]["iou"]
        ax.bar(x + (i - (len(modes) - 1) / 2) * width, [iou.get(c, np.nan) for c in classes],
               width, label=mode)
    ax.set_xticks(x, classes, rotation=45, ha="right")
    ax.set(ylabel="IoU (%)", title="Per-class IoU", ylim=(0, 100))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    fig.savefig(path)


def plot_latency(result: dict, path: Path) -> None:
    """Box plot of the per-frame latency (ms) of every mode."""
    modes = list(result["modes"])
    fig = figure(max(5.0, 1.2 * len(modes) + 2), 4)
    ax = fig.add_subplot()
    ax.boxplot([result["modes"][m]["latency_ms_per_frame"] for m in modes],
               tick_labels=modes, showfliers=True)
    ax.set(ylabel="engine.process time per frame (ms)", title="Latency per mode")
    ax.grid(axis="y", alpha=0.3)
    fig.savefig(path)


def _fmt(x: float | None, spec: str = ".1f") -> str:
    return "n/a" if x is None else format(x, spec)


def markdown(result: dict) -> str:
    """The report text: summary table, per-class table, settings, links to the plots."""
    modes = result["modes"]
    base = modes.get("none", {}).get("miou")
    lines = [f"# Evaluation: {result['frames']} frames", ""]
    source = result.get("config", {}).get("source")
    if source:
        lines += [f"Source: `{source}`", ""]
    lines += ["| mode | mIoU (%) | vs none | p50 (ms) | p99 (ms) | steps/frame | over budget |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for mode, e in modes.items():
        delta = ("" if base is None or e["miou"] is None or mode == "none"
                 else f"{e['miou'] - base:+.2f}")
        lines.append(f"| {mode} | {_fmt(e['miou'])} | {delta} | "
                     f"{_fmt(e['latency_ms']['p50'])} | {_fmt(e['latency_ms']['p99'])} | "
                     f"{e['steps_mean']:.2f} | {e['over_budget_frames']} |")
    classes = [c for c in result["classes"] if any(c in e["iou"] for e in modes.values())]
    lines += ["", "## Per-class IoU (%)", "", "| class | " + " | ".join(modes) + " |",
              "|---|" + "---:|" * len(modes)]
    for c in classes:
        lines.append(f"| {c} | " + " | ".join(_fmt(e["iou"].get(c)) for e in modes.values())
                     + " |")
    lines += ["", "## Plots", ""]
    lines += [f"![{name}]({file})" for name, file in PLOTS.items()]
    lines += ["", "## Settings", ""] + _settings(modes)
    return "\n".join(lines) + "\n"


def _settings(modes: dict) -> list[str]:
    """Adaptation settings shared by every mode on one line, then what each mode changes."""
    configs = {mode: e.get("config", {}) for mode, e in modes.items()}
    keys = {k for cfg in configs.values() for k in cfg if k != "mode"}
    first = next(iter(configs.values()), {})
    shared = sorted(k for k in keys if all(cfg.get(k) == first.get(k)
                                           for cfg in configs.values()))
    lines = ["- every mode: " + ", ".join(f"{k}={first[k]}" for k in shared)]
    for mode, cfg in configs.items():
        own = ", ".join(f"{k}={cfg[k]}" for k in sorted(keys - set(shared)) if k in cfg)
        if own:
            lines.append(f"- {mode}: {own}")
    return lines


def write_report(result: dict, out_dir: str | Path) -> list[Path]:
    """Write report.md and the three PNGs into `out_dir` (created); returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / file for name, file in PLOTS.items()}
    plot_sequence(result, paths["sequence"])
    plot_classes(result, paths["classes"])
    plot_latency(result, paths["latency"])
    report = out / REPORT
    report.write_text(markdown(result))
    return [report, *paths.values()]
