"""The latest-frame worker: callbacks never wait, a pending frame is replaced by a newer one
(counted as dropped), errors do not stop it, and `exclusive` runs between frames."""
from __future__ import annotations

import threading

import pytest

from tttkd_ros.ros.worker import LatestFrameWorker

TIMEOUT = 10.0


class Gate:
    """A process function that records items and blocks on `release` while told to."""

    def __init__(self) -> None:
        self.seen: list[int] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.inside = False

    def __call__(self, item: int) -> None:
        self.inside = True
        self.seen.append(item)
        self.started.set()
        assert self.release.wait(TIMEOUT)
        self.inside = False


@pytest.fixture
def gate_worker():
    gate = Gate()
    worker = LatestFrameWorker(gate)
    yield gate, worker
    gate.release.set()
    worker.stop()


def test_a_frame_arriving_while_busy_replaces_the_pending_one(gate_worker) -> None:
    gate, worker = gate_worker
    assert worker.submit(1) is False
    assert gate.started.wait(TIMEOUT)  # the worker is now busy with 1
    assert worker.submit(2) is False  # slot was empty
    assert worker.submit(3) is True  # 2 was still pending: replaced
    assert worker.submit(4) is True
    assert worker.dropped == 2
    gate.release.set()
    assert worker.wait_idle(TIMEOUT)
    assert gate.seen == [1, 4]
    assert (worker.submitted, worker.processed, worker.dropped) == (4, 2, 2)


def test_an_idle_worker_processes_every_frame(gate_worker) -> None:
    gate, worker = gate_worker
    gate.release.set()
    for item in range(5):
        worker.submit(item)
        assert worker.wait_idle(TIMEOUT)
    assert gate.seen == list(range(5)) and worker.dropped == 0


def test_a_failing_frame_is_reported_and_the_worker_goes_on() -> None:
    failures: list[tuple[int, str]] = []
    done: list[int] = []

    def process(item: int) -> None:
        if item == 1:
            raise RuntimeError("bad frame")
        done.append(item)

    worker = LatestFrameWorker(process, on_error=lambda item, exc: failures.append((item,
                                                                                   str(exc))))
    try:
        for item in (1, 2):
            worker.submit(item)
            assert worker.wait_idle(TIMEOUT)
        assert failures == [(1, "bad frame")] and done == [2]
        assert worker.errors == 1 and worker.alive
    finally:
        worker.stop()


def test_exclusive_waits_for_the_frame_in_progress(gate_worker) -> None:
    gate, worker = gate_worker
    worker.submit(1)
    assert gate.started.wait(TIMEOUT)
    observed: list[bool] = []
    caller = threading.Thread(target=lambda: observed.append(worker.exclusive(
        lambda: gate.inside)))
    caller.start()
    caller.join(0.2)
    assert caller.is_alive()  # still blocked: frame 1 is being processed
    gate.release.set()
    caller.join(TIMEOUT)
    assert observed == [False]  # ran after the frame, never inside it


def test_stop_ends_the_thread(gate_worker) -> None:
    gate, worker = gate_worker
    gate.release.set()
    worker.stop()
    assert not worker.alive
