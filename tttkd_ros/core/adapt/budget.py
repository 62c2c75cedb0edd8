"""Per-frame adaptation budget: time each gradient step and refuse one that would overrun.

On CUDA a block of work (a step, the teacher, an inference) is timed with events recorded on
the stream it runs on (core/device/streams.py; no device-wide synchronize: only the block's own end
event is waited on, which the budget needs anyway to know a step's cost); on CPU a monotonic
clock is exact because the work runs inline.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

import torch


class StepTimer:
    """Measures the wall time of a block of work on a device, in milliseconds."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    @contextmanager
    def measure(self, out: list[float]) -> Iterator[None]:
        """Append the block's duration in ms to `out` when the block ends."""
        if self.cuda:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            yield
            out.append((time.perf_counter() - t0) * 1e3)


class BudgetPlanner:
    """Decides whether another step fits in the frame's budget.

    The next step is predicted to cost as much as the slowest of the last few steps (a
    conservative estimate, so the frame overruns by at most one step's real time when a step
    is unexpectedly slow). With no history the first step is allowed so that a cost exists.
    A frame that gets no step forgets the oldest measurement, so one slow outlier (or a
    budget raised later) cannot block adaptation for good: after `history` refused frames
    the planner probes again.

    The harm guard's source pass (core/adapt/guard.py) is paid from the same budget: its cost
    is predicted the same way from its own history, and it runs only when it and a step fit
    (`fits(0, budget, reserve_ms=predicted_guard_ms())`); its measured time then counts as
    spent for the steps.
    """

    def __init__(self, history: int = 8) -> None:
        self.recent_ms: deque[float] = deque(maxlen=history)
        self.recent_guard_ms: deque[float] = deque(maxlen=history)

    def predicted_step_ms(self) -> float | None:
        return max(self.recent_ms) if self.recent_ms else None

    def predicted_guard_ms(self) -> float:
        """0 with no history: the first pass is allowed so that a cost exists."""
        return max(self.recent_guard_ms) if self.recent_guard_ms else 0.0

    def fits(self, spent_ms: float, budget_ms: float, reserve_ms: float = 0.0) -> bool:
        """Whether a step fits after `spent_ms` and `reserve_ms` of other work."""
        if budget_ms <= 0:
            return False
        predicted = self.predicted_step_ms()
        if predicted is None:
            return True
        return spent_ms + reserve_ms + predicted <= budget_ms

    def record(self, step_ms: float) -> None:
        self.recent_ms.append(step_ms)

    def record_guard(self, guard_ms: float) -> None:
        self.recent_guard_ms.append(guard_ms)

    def refused_frame(self) -> None:
        for recent in (self.recent_ms, self.recent_guard_ms):
            if recent:
                recent.popleft()
