"""The engine's CUDA streams: teacher, adaptation and inference each run on a stream of their
own, ordered by explicit events instead of device-wide synchronizes.

`on(stream, uses)` runs a block on `stream` once the caller's stream has reached that point
(an event recorded there), and afterwards makes the caller's stream wait for the block's work
(another event), so its results can be used there. Tensors that cross streams are marked with
`record_stream`, so the caching allocator does not hand their memory to new work while the
other stream may still read it. On CPU every stream is None and a block simply runs inline,
in program order: the same code path, with nothing to order.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch


class EngineStreams:
    """One stream each for the teacher, the adaptation steps and the inference (CUDA only)."""

    def __init__(self, device: torch.device) -> None:
        cuda = device.type == "cuda"
        self.teacher = torch.cuda.Stream(device) if cuda else None
        self.adapt = torch.cuda.Stream(device) if cuda else None
        self.infer = torch.cuda.Stream(device) if cuda else None

    @staticmethod
    @contextmanager
    def on(stream: torch.cuda.Stream | None, uses: Iterable[torch.Tensor] = ()
           ) -> Iterator[None]:
        """Run the block on `stream` after the caller's queued work; `uses`: tensors of the
        caller's stream that the block reads. The caller's stream then waits for the block."""
        if stream is None:
            yield
            return
        caller = torch.cuda.current_stream(stream.device)
        stream.wait_event(caller.record_event())
        for tensor in uses:
            tensor.record_stream(stream)
        try:
            with torch.cuda.stream(stream):
                yield
        finally:
            caller.wait_event(stream.record_event())


def used_here(tensors: Iterable[torch.Tensor]) -> None:
    """Mark tensors made on another stream as used by the current one (no-op on CPU)."""
    for tensor in tensors:
        if tensor.is_cuda:
            tensor.record_stream(torch.cuda.current_stream(tensor.device))
