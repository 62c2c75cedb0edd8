"""The `async` schedule: predict with the weights at hand, adapt on the frame in the background.

The frame is predicted by a serving copy of the model and returned; the engine's own model
(the one its optimizer, snapshots and safety guards belong to) then adapts on the same frame
in a worker thread, on CUDA on the engine's adaptation stream (core/device/streams.py). The adapted
weights are copied into the serving copy at a frame boundary, at the start of a later
`process`, never during a prediction. A frame that arrives while an adaptation is still in
flight is predicted and not adapted on (event `adaptation_skipped`): a frame never waits.
Only reset, configure and the switch back to `sync` wait for the adaptation in flight
(`settle`). The worker reads the frame's camera images after `process` has returned: the
caller must not change them.

Threads: while an adaptation is in flight only the worker touches the engine's model,
optimizer, planner, spike detector, harm guard, moving average, snapshots and generator; the
caller's thread touches the serving copy, the collapse detector and the periodic reset. Both
count events in `event_counts`, never under the same name, so no increment is lost.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from ..frame import Frame, FrameStats
from ..model.segmentation import SegModel
from .restore import copy_into

SKIPPED = "adaptation_skipped"


@dataclass(frozen=True)
class BackgroundWork:
    """What the async schedule runs, handed over by the engine that owns the model; this
    module needs nothing else of the engine."""

    model: SegModel  # the engine's model: the worker's steps change its weights
    adapt: Callable[[torch.Tensor, Frame, FrameStats], object]  # the steps on one frame
    adapted_params: Callable[[], list[torch.Tensor]]  # the parameters those steps change
    # the values the serving copy takes for them: the adapted weights or their moving average
    served: Callable[[], list[torch.Tensor]]
    adopted: Callable[[FrameStats], None]  # called once the serving copy holds the new weights
    device: torch.device
    stream: torch.cuda.Stream | None  # the adaptation stream; None on CPU


class AsyncAdapter:
    """Runs `work.adapt` off the caller's thread and swaps its result in between frames."""

    def __init__(self, work: BackgroundWork) -> None:
        self.work = work
        self.serving: SegModel = copy.deepcopy(work.model).eval()
        for p in self.serving.parameters():
            p.requires_grad_(False)
        # OpenMP's thread count is per thread: the worker takes the caller's
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tttkd_adapt",
                                       initializer=torch.set_num_threads,
                                       initargs=(torch.get_num_threads(),))
        self.pending: Future[FrameStats] | None = None
        self.stream = work.stream
        self.done = torch.cuda.Event() if self.stream is not None else None  # its kernels' end

    @property
    def in_flight(self) -> bool:
        return self.pending is not None and not self.pending.done()

    def swap_in(self, stats: FrameStats) -> None:
        """Frame boundary: an adaptation that has finished serves from now on; its steps,
        times, losses and events go into this frame's `stats`."""
        if self.pending is None or not self.pending.done():
            return
        done = self._take()
        for name in FrameStats.ADAPTATION_FIELDS:
            setattr(stats, name, getattr(done, name))
        stats.events[:0] = done.events

    def start(self, pts: torch.Tensor, frame: Frame) -> bool:
        """Adapt on this frame in the background, unless the last adaptation has not been
        swapped in yet (still running when the frame arrived): then return False, a skip
        for the caller to count."""
        if self.pending is not None:
            return False
        if self.stream is not None:
            # the points were made on the caller's stream; their memory must outlive the use
            self.stream.wait_event(torch.cuda.current_stream(self.work.device).record_event())
            pts.record_stream(self.stream)
        self.pending = self.pool.submit(self._adapt, pts, frame)
        return True

    def settle(self) -> FrameStats | None:
        """Wait for the adaptation in flight, if any, and swap it in; returns its stats."""
        if self.pending is None:
            return None
        self.pending.exception()  # wait; an error is raised by _take
        return self._take()

    def mirror(self) -> None:
        """Serve every current weight of the engine's model (after a reset)."""
        copy_into(list(self.serving.parameters()), list(self.work.model.parameters()))

    def close(self) -> None:
        self.settle()
        self.pool.shutdown(wait=True)

    def _adapt(self, pts: torch.Tensor, frame: Frame) -> FrameStats:
        """The worker: steps on the engine's model, timed on the adaptation stream."""
        stats = FrameStats()
        with torch.cuda.stream(self.stream) if self.stream is not None else nullcontext():
            self.work.adapt(pts, frame, stats)  # its logits are not needed: never served
            if self.done is not None:
                self.done.record(self.stream)
        return stats

    def _take(self) -> FrameStats:
        """Collect the finished adaptation (re-raising its error here) and copy its weights
        into the serving model, then tell the engine (episodic: its weights go back to the
        source)."""
        pending, self.pending = self.pending, None
        assert pending is not None
        stats = pending.result()
        if self.done is not None:  # the copy below runs after the adaptation's kernels
            torch.cuda.current_stream(self.work.device).wait_event(self.done)
        index = {id(p): i for i, p in enumerate(self.work.model.parameters())}
        serving = list(self.serving.parameters())
        adapted = self.work.adapted_params()
        copy_into([serving[index[id(p)]] for p in adapted], self.work.served())
        self.work.adopted(stats)
        return stats
