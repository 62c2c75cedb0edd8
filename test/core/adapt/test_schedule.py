"""The adaptation schedule: `sync` adapts then predicts; `async` predicts with the weights at
hand, adapts in the background and serves the new weights from a later frame on."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from test_engine_safety import VectorTeacher, engine, frame, params, same

from tttkd_ros.core.adapt.engine import AdaptationEngine
from tttkd_ros.core.adapt.schedule import SKIPPED

WAIT_S = 60.0  # only bounds a hang if the engine ever waited for the gate


class GatedTeacher(VectorTeacher):
    """Blocks inside `features` (so inside the background adaptation) until released."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def features(self, image: np.ndarray) -> torch.Tensor:
        self.entered.set()
        assert self.release.wait(WAIT_S), "the gate was never opened"
        return super().features(image)


def serving(e: AdaptationEngine) -> list[torch.Tensor]:
    assert e.background is not None
    return [p.detach().clone() for p in e.background.serving.parameters()]


def adapted_ref(**cfg) -> AdaptationEngine:
    """A sync engine that adapted on frame 0 and now only predicts."""
    ref = engine(VectorTeacher(), **cfg)
    assert ref.process(frame(0)).stats.steps == 1
    ref.enabled = False
    return ref


KD = {"mode": "kd", "params": "all", "lr": 0.2}


def test_async_returns_before_adapting_and_the_next_frame_uses_the_new_weights() -> None:
    gate = GatedTeacher()
    e = engine(gate, schedule="async", **KD)
    none = engine(mode="none")
    source = [p.detach().clone() for p in e.model.parameters()]
    try:
        first = e.process(frame(0))  # returns although the adaptation is held in the teacher
        assert gate.entered.wait(WAIT_S) and e.background.in_flight
        np.testing.assert_array_equal(first.labels, none.process(frame(0)).labels)
        assert first.stats.steps == 0

        busy = e.process(frame(1))  # the adaptation still runs: predicted, not adapted on
        assert SKIPPED in busy.stats.events and e.event_counts[SKIPPED] == 1
        np.testing.assert_array_equal(busy.confidence, none.process(frame(1)).confidence)

        gate.release.set()
        e.background.pending.result(WAIT_S)
        assert same(serving(e), source)  # finished, but swapped in only at a frame boundary
        after = e.process(frame(1))
    finally:
        gate.release.set()
        e.configure(schedule="sync")
    ref = adapted_ref(**KD)
    assert after.stats.steps == 1 and "kd" in after.stats.losses
    expected = ref.process(frame(1))
    np.testing.assert_allclose(after.confidence, expected.confidence, atol=1e-5)
    assert not np.allclose(after.confidence, none.process(frame(1)).confidence, atol=1e-5)


@pytest.mark.parametrize("schedule", ["sync", "async"])
def test_zero_steps_gives_the_labels_of_mode_none(schedule) -> None:
    e = engine(VectorTeacher(), mode="kd+ocl", max_steps=0, schedule=schedule)
    none = engine(mode="none")
    for seed in range(2):
        got, want = e.process(frame(seed)), none.process(frame(seed))
        np.testing.assert_array_equal(got.labels, want.labels)
        np.testing.assert_array_equal(got.confidence, want.confidence)
        assert got.stats.steps == 0 and got.stats.events == []


def test_async_first_frame_is_predicted_by_the_unadapted_weights() -> None:
    e = engine(VectorTeacher(), mode="kd+ocl", schedule="async")
    got = e.process(frame(0))
    want = engine(mode="none").process(frame(0))
    np.testing.assert_array_equal(got.labels, want.labels)
    np.testing.assert_array_equal(got.confidence, want.confidence)
    e.configure(schedule="sync")  # waits for the adaptation it started


def test_reset_waits_for_the_adaptation_and_serves_the_source() -> None:
    e = engine(VectorTeacher(), schedule="async", **KD)
    source = params(e)
    e.process(frame(0))
    e.reset()
    assert e.background.pending is None and e.resets == 1
    assert same(params(e), source) and same(serving(e), [p for p in e.model.parameters()])
    e.configure(schedule="sync")


def test_switching_to_sync_keeps_the_adapted_weights() -> None:
    e = engine(VectorTeacher(), schedule="async", **KD)
    e.process(frame(0))
    e.configure(schedule="sync")  # waits for the adaptation in flight
    assert e.background is None
    assert same(params(e), params(adapted_ref(**KD)))


def test_async_episodic_serves_one_frame_of_adaptation_then_starts_from_the_source() -> None:
    e = engine(VectorTeacher(), schedule="async", protocol="episodic", **KD)
    source = params(e)
    e.process(frame(0))
    e.background.pending.result(WAIT_S)
    assert e.process(frame(1)).stats.steps == 1  # swapped in: adapted on frame 0 only
    e.background.settle()
    assert same(params(e), source)
    assert not same(serving(e), source)
    e.configure(schedule="sync")


def test_a_background_failure_surfaces_at_the_next_frame() -> None:
    teacher = VectorTeacher()
    e = engine(teacher, schedule="async", **KD)
    teacher.features = lambda image: 1 / 0  # fails inside the worker
    e.process(frame(0))
    e.background.pending.exception(WAIT_S)
    with pytest.raises(ZeroDivisionError):
        e.process(frame(1))
    assert e.background.pending is None  # the next frame adapts again


def test_close_finishes_the_adaptation_in_flight_and_stops_its_thread() -> None:
    e = engine(VectorTeacher(), schedule="async", **KD)
    adapter = e.background
    e.process(frame(0))
    e.close()
    assert e.background is None and adapter.pending is None
    assert same(params(e), params(adapted_ref(**KD)))  # the in-flight adaptation was kept
    with pytest.raises(RuntimeError, match="shutdown"):
        adapter.pool.submit(print)
