"""The node's health as diagnostic_msgs/DiagnosticArray (for /diagnostics, rqt_robot_monitor).

Four statuses, each OK / WARN / ERROR:
- processing: time of the last frame vs the budget, consecutive over-budget frames, frames
  dropped by the latest-frame slot, frames whose processing raised, the process's host RSS
  and the GPU memory torch holds (for long runs: memory must stay flat);
- sync: messages received per input, LiDAR-only frames, input defects, clock jumps;
- teacher: real or random weights (random weights make distillation meaningless);
- adaptation: enabled, mode, resets, and the safety events: steps discarded (non-finite
  loss or gradient, loss spike), collapse and clock-jump resets, the harm guard's checks and
  rollbacks, periodic resets, and per camera the frames it was not distilled from.
Counters are cumulative; a WARN about them fires when they grew since the previous report.
`DefectLog` counts defective inputs and decides which deserve a log line.
"""
from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR
OVERRUN_ERROR = 10  # consecutive over-budget frames that make the processing status ERROR


@dataclass
class Health:
    """What the node knows about itself; written by the node, read when reporting."""

    teacher_name: str = ""
    teacher_random: bool = False
    frames: int = 0
    last_total_ms: float = 0.0  # teacher + guard + adaptation + inference of the last frame
    last_budget_ms: float = 0.0
    consecutive_overruns: int = 0
    dropped: int = 0  # frames replaced in the latest-frame slot
    failed: int = 0  # frames whose processing raised
    last_failure: str = ""
    lidar_only: int = 0  # frames processed without any camera
    input_defects: dict[str, int] = field(default_factory=dict)  # input -> count
    last_input_defect: str = ""  # "input: defect"
    discarded_steps: int = 0
    event_counts: dict[str, int] = field(default_factory=dict)  # engine event -> count
    # camera -> frames the harm guard did not distil from it (its targets unlike training)
    untrusted_cameras: dict[str, int] = field(default_factory=dict)
    enabled: bool = True
    mode: str = ""
    resets: int = 0
    sync: dict[str, Any] = field(default_factory=dict)  # FrameSynchronizer.stats()
    rss_mb: float | None = None  # host resident memory of this process
    gpu_allocated_mb: float | None = None  # torch's CUDA allocator; None on CPU
    gpu_reserved_mb: float | None = None
    intensity_warning: str = ""  # set once input intensity disagrees with the checkpoint's


def process_rss_mb() -> float | None:
    """This process's resident set size in MiB (Linux /proc), None where unavailable."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


_NUMBER = re.compile(r"[-+]?\d+(\.\d+)?(e[-+]?\d+)?")


class DefectLog:
    """Counts defective inputs in a Health and throttles their log lines.

    The first defect of each kind on each input is logged at once, a repeat at most once per
    `period_s`; the kind is the message with its numbers masked, so a new defect is never
    hidden behind an old one while a flood of the same one stays quiet. At most `max_kinds`
    kinds are remembered (the oldest is forgotten), whatever the inputs send. Thread-safe.
    """

    def __init__(self, health: Health, period_s: float, max_kinds: int = 256) -> None:
        self.health = health
        self.period_s = period_s
        self.max_kinds = max_kinds
        self._last_logged: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._lock = threading.Lock()

    def record(self, source: str, text: str, now_s: float) -> int | None:
        """Count a defect of input `source` at monotonic time `now_s`. Returns how many that
        input has had when this one should be logged, else None."""
        with self._lock:
            h = self.health
            h.input_defects[source] = h.input_defects.get(source, 0) + 1
            h.last_input_defect = f"{source}: {text}"
            key = (source, _NUMBER.sub("#", text))
            last = self._last_logged.get(key)
            if last is not None and now_s - last < self.period_s:
                return None
            self._last_logged[key] = now_s
            self._last_logged.move_to_end(key)
            while len(self._last_logged) > self.max_kinds:
                self._last_logged.popitem(last=False)
            return h.input_defects[source]


@dataclass
class Report:
    level: int
    message: str
    values: dict[str, Any]


def _grew(now: int, before: int | None) -> bool:
    return before is not None and now > before


class DiagnosticsReporter:
    """Turns Health snapshots into statuses; remembers the previous counters for deltas."""

    def __init__(self, node_name: str, hardware_id: str = "") -> None:
        self.prefix = f"{node_name}: "
        self.hardware_id = hardware_id
        self._previous: dict[str, int] = {}

    def reports(self, h: Health) -> dict[str, Report]:
        """Status name -> Report, and remember the counters for the next call."""
        counters = {"failed": h.failed, "lidar_only": h.lidar_only,
                    "defects": sum(h.input_defects.values()),
                    "clock_jumps": int(h.sync.get("clock_jumps", 0)),
                    "discarded": h.discarded_steps, "dropped": h.dropped,
                    "collapses": h.event_counts.get("collapse_reset", 0),
                    "jump_resets": h.event_counts.get("clock_jump_reset", 0),
                    "guard_rollbacks": sum(h.event_counts.get(name, 0) for name in (
                        "guard_rollback", "guard_source_reset")),
                    "untrusted": sum(h.untrusted_cameras.values())}
        prev = self._previous
        self._previous = counters
        return {
            "processing": self._processing(h, counters, prev),
            "sync": self._sync(h, counters, prev),
            "teacher": self._teacher(h),
            "intensity": self._intensity(h),
            "adaptation": self._adaptation(h, counters, prev),
        }

    def message(self, h: Health, stamp) -> DiagnosticArray:
        """A DiagnosticArray stamped with `stamp` (builtin_interfaces/Time)."""
        array = DiagnosticArray()
        array.header.stamp = stamp
        for name, r in self.reports(h).items():
            array.status.append(DiagnosticStatus(
                level=r.level, name=self.prefix + name, message=r.message,
                hardware_id=self.hardware_id,
                values=[KeyValue(key=k, value=str(v)) for k, v in r.values.items()]))
        return array

    @staticmethod
    def _processing(h: Health, c: dict[str, int], prev: dict[str, int]) -> Report:
        values = {"frames": h.frames, "last_frame_ms": round(h.last_total_ms, 2),
                  "budget_ms": h.last_budget_ms, "consecutive_overruns": h.consecutive_overruns,
                  "dropped_frames": h.dropped, "failed_frames": h.failed}
        values.update({k: round(v, 1) for k, v in (
            ("rss_mb", h.rss_mb), ("gpu_allocated_mb", h.gpu_allocated_mb),
            ("gpu_reserved_mb", h.gpu_reserved_mb)) if v is not None})
        if _grew(c["failed"], prev.get("failed")) or (h.failed and h.frames == 0):
            return Report(ERROR, f"frame processing failed: {h.last_failure}", values)
        if h.consecutive_overruns >= OVERRUN_ERROR:
            return Report(ERROR, f"adaptation over budget on {h.consecutive_overruns} "
                          "consecutive frames: lower adaptation.max_steps or raise "
                          "adaptation.budget_ms", values)
        if h.consecutive_overruns:
            return Report(WARN, f"adaptation over budget on the last {h.consecutive_overruns} "
                          "frame(s)", values)
        if _grew(c["dropped"], prev.get("dropped")):
            return Report(WARN, "frames arrive faster than they are processed; the newest is "
                          "kept, older ones are dropped", values)
        if h.frames == 0:
            return Report(OK, "ready, no frame processed yet", values)
        return Report(OK, "within budget", values)

    @staticmethod
    def _sync(h: Health, c: dict[str, int], prev: dict[str, int]) -> Report:
        values = {f"received {k}": v for k, v in h.sync.get("received", {}).items()}
        values.update({f"last gap ms {k}": round(v / 1e6, 2)
                       for k, v in h.sync.get("last_gap_ns", {}).items() if v is not None})
        values.update({"lidar_only_frames": h.lidar_only, "clock_jumps": c["clock_jumps"],
                       "frames_dropped_by_sync": h.sync.get("frames_dropped", 0)})
        values.update({f"input defects {k}": v for k, v in h.input_defects.items()})
        if h.last_input_defect:
            values["last input defect"] = h.last_input_defect
        if _grew(c["defects"], prev.get("defects")):
            return Report(WARN, f"input defect: {h.last_input_defect}", values)
        if _grew(c["lidar_only"], prev.get("lidar_only")):
            return Report(WARN, "clouds processed without camera images (timeout): no "
                          "distillation and no masks for those frames", values)
        if _grew(c["clock_jumps"], prev.get("clock_jumps")):
            return Report(WARN, "time jumped backwards (looped bag?): sync queues cleared",
                          values)
        if not h.sync.get("received", {}).get("cloud"):
            return Report(WARN, "no point cloud received yet", values)
        return Report(OK, "inputs synchronized", values)

    @staticmethod
    def _teacher(h: Health) -> Report:
        values = {"name": h.teacher_name, "random_weights": h.teacher_random}
        if h.teacher_random:
            return Report(WARN, "teacher has RANDOM weights: distillation targets carry no "
                          "semantics; set teacher.weights to a DINOv2 weights file", values)
        return Report(OK, "pretrained weights", values)

    @staticmethod
    def _intensity(h: Health) -> Report:
        if h.intensity_warning:
            return Report(WARN, h.intensity_warning, {})
        return Report(OK, "input intensity in the checkpoint's units", {})

    @staticmethod
    def _adaptation(h: Health, c: dict[str, int], prev: dict[str, int]) -> Report:
        values = {"enabled": h.enabled, "mode": h.mode, "resets": h.resets,
                  "discarded_steps": h.discarded_steps, **h.event_counts}
        values.update({f"untrusted frames {cam}": n for cam, n in h.untrusted_cameras.items()})
        if _grew(c["collapses"], prev.get("collapses")):
            return Report(WARN, "predictions collapsed (the dominant class's share jumped): "
                          "reset to the source weights", values)
        if _grew(c["discarded"], prev.get("discarded")):
            return Report(WARN, "adaptation steps discarded (non-finite loss or gradient, or a "
                          "loss spike): the last good weights were restored", values)
        if _grew(c["jump_resets"], prev.get("jump_resets")):
            return Report(WARN, "time jumped backwards (looped bag?): reset to the source "
                          "weights", values)
        if _grew(c["guard_rollbacks"], prev.get("guard_rollbacks")):
            return Report(WARN, "adaptation was hurting (no better than the source model at "
                          "its own objective, labels drifted): weights rolled back", values)
        if _grew(c["untrusted"], prev.get("untrusted")):
            cams = ", ".join(sorted(h.untrusted_cameras))
            return Report(WARN, f"not distilling from camera(s) {cams}: their features are "
                          "unlike training (dark, over-exposed or noisy image?)", values)
        state = f"mode {h.mode}" if h.enabled else "disabled (inference only)"
        return Report(OK, f"{state}, {h.resets} reset(s)", values)
