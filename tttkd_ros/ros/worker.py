"""One worker thread fed by a latest-frame slot.

Subscription callbacks hand frames over with `submit` and return at once; they never wait
for the model. The slot holds at most one pending frame: a frame that arrives while the
worker is busy replaces the pending one, and the replaced frame is counted as dropped, so the
node always works on the newest data and its latency never grows with a backlog.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class LatestFrameWorker(Generic[T]):
    """Runs `process(item)` on its own thread for the newest submitted item.

    `on_error(item, exc)` is called (on the worker thread) when `process` raises; the worker
    keeps running. `exclusive(fn)` runs `fn` while no item is being processed, so run-time
    changes to the engine (reset, reconfigure) never land in the middle of a frame.
    """

    def __init__(self, process: Callable[[T], None],
                 on_error: Callable[[T, BaseException], None] | None = None,
                 name: str = "tttkd-worker") -> None:
        self._process = process
        self._on_error = on_error
        self._cond = threading.Condition()
        self._pending: T | None = None
        self._has_pending = False
        self._stopping = False
        self._active = False  # an item has been taken from the slot and is not finished
        self._busy = threading.Lock()  # held while an item is processed or `exclusive` runs
        self.submitted = 0
        self.dropped = 0
        self.processed = 0
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: T) -> bool:
        """Put `item` in the slot. Returns True when it replaced a pending (dropped) item."""
        with self._cond:
            replaced = self._has_pending
            if replaced:
                self.dropped += 1
            self._pending = item
            self._has_pending = True
            self.submitted += 1
            self._cond.notify()
        return replaced

    def exclusive(self, fn: Callable[[], R]) -> R:
        """Run `fn` on the calling thread between two items; waits for the current one."""
        with self._busy:
            return fn()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until the slot is empty and no item is being processed (True), or timeout."""
        with self._cond:
            return self._cond.wait_for(
                lambda: (not self._has_pending and not self._active) or self._stopping,
                timeout,
            )

    def stop(self, timeout: float | None = 10.0) -> None:
        """Finish the item in progress, discard a pending one and join the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._has_pending or self._stopping)
                if self._stopping:
                    return
                item = self._pending
                self._pending = None
                self._has_pending = False
                self._active = True
            try:
                with self._busy:
                    self._process(item)
                self.processed += 1
            except Exception as exc:  # noqa: BLE001 -- a bad frame must not stop the node
                self.errors += 1
                if self._on_error is not None:
                    self._on_error(item, exc)
            finally:
                with self._cond:
                    self._active = False
                    self._cond.notify_all()
