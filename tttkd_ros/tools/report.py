"""The eval JSON as a Markdown report with PNG plots (matplotlib, Agg canvas).

With ground truth (`labels` true): mIoU along the sequence per mode, per-class IoU per mode,
latency per mode. Without (a robot's drive): the self-supervised losses along the drive per
mode, agreement with mode `none` per frame, class shares per mode, latency per mode. Figures
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
LABEL_FREE_PLOTS = {"losses": "losses.png", "agreement": "agreement_with_none.png",
                    "shares": "class_shares.png", "latency": "latency.png"}
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


def _class_bars(result: dict, key: str, classes: list[str], scale: float, path: Path,
                **labels: str) -> None:
    """Grouped bars of the per-class dict `key` of every mode (times `scale`), one group per
    class of `classes`, one bar per mode; `labels`: the axes' ylabel and title."""
    modes = list(result["modes"])
    fig = figure(min(16.0, max(6.0, 0.5 * len(classes) + 2)), 4.5)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(modes))
    x = np.arange(len(classes))
    for i, mode in enumerate(modes):
        values = result["modes"][mode][key]
        ax.bar(x + (i - (len(modes) - 1) / 2) * width,
               [scale * values.get(c, np.nan) for c in classes], width, label=mode)
    ax.set_xticks(x, classes, rotation=45, ha="right")
    ax.set(ylim=(0, 100), **labels)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    fig.savefig(path)


def plot_classes(result: dict, path: Path) -> None:
    """Grouped bars: IoU (percent) per class present in the ground truth, one bar per mode."""
    classes = [c for c in result["classes"]
               if any(c in e["iou"] for e in result["modes"].values())]
    _class_bars(result, "iou", classes, 1.0, path, ylabel="IoU (%)", title="Per-class IoU")


def plot_shares(result: dict, path: Path) -> None:
    """Grouped bars: share (percent) of each mode's labeled points per class; without ground
    truth a mode that drifts shows as classes growing or vanishing against `none`."""
    _class_bars(result, "class_shares", _shared_classes(result), 100.0, path,
                ylabel="share of labeled points (%)", title="Class shares per mode")


def _shared_classes(result: dict) -> list[str]:
    """The classes some mode gave points to (the others would be empty bars and rows)."""
    return [c for c in result["classes"]
            if any(e["class_shares"].get(c) for e in result["modes"].values())]


def _loss_names(result: dict) -> list[str]:
    return sorted({k for e in result["modes"].values() for k in e["losses_mean"]})


def plot_losses(result: dict, path: Path) -> None:
    """Each self-supervised loss part against the frame index, one panel per loss (their
    scales differ), one line per mode that has it; a gap is a frame without a step."""
    names = _loss_names(result)
    fig = figure(8, 2.5 * max(1, len(names)) + 0.5)
    axes = fig.subplots(max(1, len(names)), 1, sharex=True, squeeze=False)[:, 0]
    for ax, name in zip(axes, names):
        for mode, entry in result["modes"].items():
            if name in entry["losses_mean"]:
                values = [_num(f.get(name)) for f in entry["losses_per_frame"]]
                ax.plot(np.arange(len(values)), values, marker=".", label=mode)
        ax.set(ylabel=name)
        ax.ticklabel_format(axis="y", useOffset=False)  # small changes of a loss near -2
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if not names:
        axes[0].text(0.5, 0.5, "no mode adapted: no losses", ha="center", va="center",
                     transform=axes[0].transAxes)
    axes[0].set(title="Self-supervised losses along the drive (last step of each frame)")
    axes[-1].set(xlabel="frame")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.savefig(path)


def plot_agreement(result: dict, path: Path) -> None:
    """Per frame, the percentage of the points `none` labeled that keep its label, one line
    per mode (none's own is the 100 % reference)."""
    fig = figure(8, 4)
    ax = fig.add_subplot()
    for mode, entry in result["modes"].items():
        values = [100.0 * _num(v) for v in entry["agreement_with_none_per_frame"]]
        overall = 100.0 * _num(entry["agreement_with_none"])
        ax.plot(np.arange(len(values)), values, marker=".", label=f"{mode} ({overall:.1f})")
    ax.set(xlabel="frame", ylabel="same label as none (%)", title="Agreement with none")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(title="mode (overall %)", fontsize="small")
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
    """The report text: summary table, per-class table, settings, links to the plots; the
    label-free report (`label_free_markdown`) for frames without ground truth."""
    if not result.get("labels", True):
        return label_free_markdown(result)
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


def _percent(x: float | None) -> str:
    return "n/a" if x is None else f"{100.0 * x:.1f}"


def label_free_markdown(result: dict) -> str:
    """The report of a drive without ground truth: agreement with none, latency and steps,
    the losses, the guard and safety events, class shares, plots and settings."""
    modes = result["modes"]
    lines = [f"# Evaluation: {result['frames']} frames, no ground truth", ""]
    source = result.get("config", {}).get("source")
    if source:
        lines += [f"Source: `{source}`", ""]
    lines.append("Without per-point labels there is no mIoU: each mode is compared with mode "
                 "`none` (the source model, no adaptation), and what the engine did is shown.")
    if result.get("none_added"):
        lines.append("`none` was not asked for; it ran as the reference.")
    lines += ["", ("| mode | agreement with none (%) | p50 (ms) | p99 (ms) | steps/frame "
                   "| over budget | events |"), "|---|---:|---:|---:|---:|---:|---:|"]
    for mode, e in modes.items():
        lines.append(f"| {mode} | {_percent(e['agreement_with_none'])} | "
                     f"{_fmt(e['latency_ms']['p50'])} | {_fmt(e['latency_ms']['p99'])} | "
                     f"{e['steps_mean']:.2f} | {e['over_budget_frames']} | "
                     f"{sum(e['events'].values())} |")
    lines += ["", "## Self-supervised losses (mean over the drive)", ""] + _losses_table(result)
    lines += ["", "## Guard and safety events", ""]
    for mode, e in modes.items():
        events = ", ".join(f"{name} x{count}" for name, count in e["events"].items())
        lines.append(f"- {mode}: {events or 'none'}")
    classes = _shared_classes(result)
    lines += ["", "## Class shares (% of labeled points)", "",
              "| class | " + " | ".join(modes) + " |", "|---|" + "---:|" * len(modes)]
    for c in classes:
        lines.append(f"| {c} | " + " | ".join(_percent(e["class_shares"].get(c))
                                              for e in modes.values()) + " |")
    lines += ["", "## Plots", ""]
    lines += [f"![{name}]({file})" for name, file in LABEL_FREE_PLOTS.items()]
    lines += ["", "## Settings", ""] + _settings(modes)
    return "\n".join(lines) + "\n"


def _losses_table(result: dict) -> list[str]:
    """Mean loss parts, a row per mode that adapted, a column per loss."""
    names = _loss_names(result)
    if not names:
        return ["No mode adapted: no losses."]
    lines = ["| mode | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for mode, e in result["modes"].items():
        if e["losses_mean"]:
            means = (_fmt(e["losses_mean"].get(name), ".4g") for name in names)
            lines.append(f"| {mode} | " + " | ".join(means) + " |")
    return lines


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
    """Write report.md and the PNGs (PLOTS, or LABEL_FREE_PLOTS without ground truth) into
    `out_dir` (created); returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labeled = result.get("labels", True)
    plotters = ({"sequence": plot_sequence, "classes": plot_classes} if labeled else
                {"losses": plot_losses, "agreement": plot_agreement, "shares": plot_shares})
    paths = {name: out / file for name, file in (PLOTS if labeled else LABEL_FREE_PLOTS).items()}
    for name, plot in {**plotters, "latency": plot_latency}.items():
        plot(result, paths[name])
    report = out / REPORT
    report.write_text(markdown(result))
    return [report, *paths.values()]
