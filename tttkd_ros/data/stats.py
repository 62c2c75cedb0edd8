"""Scan statistics in the format of the real-scan reference: per class the share of points
and the percentiles of intensity, height and range, plus the same over all points.

The synthetic world is calibrated by putting these numbers side by side with the ones of
real labelled scans (`tttkd synth --stats`, `--compare REAL.json`). Heights are LiDAR-frame
z (the sensor is the origin), ranges are horizontal (x, y) distances.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..core.labels import CLASS_NAMES, IGNORE_INDEX, raw_to_train


def _pct(values: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    return [round(float(v), 3) for v in np.percentile(values, qs)]


def scan_stats(clouds: Iterable[tuple[np.ndarray, np.ndarray]], source: str) -> dict:
    """Statistics of labelled scans: clouds of (points (N, 4) x y z intensity, raw labels)."""
    points, labels, scans = [], [], 0
    for cloud, raw in clouds:
        points.append(np.asarray(cloud, np.float32)[:, :4])
        labels.append(raw_to_train(raw))
        scans += 1
    if not scans:
        raise ValueError("no scans to describe")
    pts, train = np.concatenate(points), np.concatenate(labels)
    rng_xy = np.hypot(pts[:, 0], pts[:, 1])
    out: dict = {
        "source": source,
        "points_per_scan": round(len(pts) / scans),
        "all_points": {
            "z_m_percentiles_1_10_50_90_99": _pct(pts[:, 2], (1, 10, 50, 90, 99)),
            "range_xy_m_percentiles_10_50_90_99": _pct(rng_xy, (10, 50, 90, 99)),
            "intensity_percentiles_10_50_90": _pct(pts[:, 3], (10, 50, 90)),
        },
        "classes": {},
    }
    labelled = train != IGNORE_INDEX
    total = max(int(labelled.sum()), 1)
    for cls, name in enumerate(CLASS_NAMES):
        mine = train == cls
        if not mine.any():
            continue
        out["classes"][name] = {
            "share_%": round(100.0 * float(mine.sum()) / total, 2),
            "intensity_p10_p50_p90": _pct(pts[mine, 3], (10, 50, 90)),
            "z_m_p10_p50_p90": _pct(pts[mine, 2], (10, 50, 90)),
            "range_m_p10_p50_p90": _pct(rng_xy[mine], (10, 50, 90)),
        }
    return out


def side_by_side(ours: dict, reference: dict) -> str:
    """A Markdown table: every class of either, share / intensity / z / range medians (p10
    and p90 for z), ours against the reference's."""
    names = list(reference.get("classes", {}))
    names += [n for n in ours["classes"] if n not in names]
    rows = ["| class | share % | intensity p50 | z p10 / p50 / p90 m | range p50 m |",
            "|---|---|---|---|---|"]

    def cell(stats: dict, name: str, key: str, index: int | None) -> str:
        entry = stats.get("classes", {}).get(name)
        if entry is None:
            return "-"
        value = entry[key]
        if index is None:
            return "/".join(f"{v:.2f}" for v in value) if isinstance(value, list) else \
                f"{value:.1f}"
        return f"{value[index]:.2f}"

    for name in names:
        rows.append(
            f"| {name} | {cell(ours, name, 'share_%', None)}"
            f" ({cell(reference, name, 'share_%', None)})"
            f" | {cell(ours, name, 'intensity_p10_p50_p90', 1)}"
            f" ({cell(reference, name, 'intensity_p10_p50_p90', 1)})"
            f" | {cell(ours, name, 'z_m_p10_p50_p90', None)}"
            f" ({cell(reference, name, 'z_m_p10_p50_p90', None)})"
            f" | {cell(ours, name, 'range_m_p10_p50_p90', 1)}"
            f" ({cell(reference, name, 'range_m_p10_p50_p90', 1)}) |")
    a, b = ours["all_points"], reference.get("all_points", {})
    for key in a:
        rows.append(f"| all: {key} | {a[key]} ({b.get(key, '-')}) | | | |")
    rows.append(f"| points per scan | {ours['points_per_scan']} "
                f"({reference.get('points_per_scan', '-')}) | | | |")
    return "\n".join(rows)
