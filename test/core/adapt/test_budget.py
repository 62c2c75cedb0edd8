"""The budget planner refuses a step predicted to overrun, and allows the first."""
from __future__ import annotations

import torch

from tttkd_ros.core.adapt.budget import BudgetPlanner, StepTimer


def test_first_step_allowed_then_predicted_from_slowest_recent() -> None:
    planner = BudgetPlanner(history=3)
    assert planner.fits(0.0, 10.0)
    planner.record(4.0)
    planner.record(6.0)
    assert planner.fits(4.0, 10.0)  # 4 + 6 <= 10
    assert not planner.fits(4.1, 10.0)
    for _ in range(3):
        planner.record(1.0)  # the slow step ages out of the window
    assert planner.fits(8.5, 10.0)


def test_zero_budget_never_fits() -> None:
    assert not BudgetPlanner().fits(0.0, 0.0)


def test_cpu_timer_measures_a_block() -> None:
    times: list[float] = []
    with StepTimer(torch.device("cpu")).measure(times):
        torch.ones(1000).sum()
    assert len(times) == 1 and times[0] >= 0.0


def test_refused_frames_age_out_a_slow_measurement() -> None:
    planner = BudgetPlanner(history=2)
    planner.record(50.0)  # one slow step, far over a 10 ms budget
    assert not planner.fits(0.0, 10.0)
    planner.refused_frame()
    assert planner.fits(0.0, 10.0)  # history empty: probe again


def test_the_guards_predicted_cost_is_reserved_before_a_step() -> None:
    planner = BudgetPlanner(history=2)
    assert planner.predicted_guard_ms() == 0.0  # no history: the first source pass may run
    planner.record(4.0)
    planner.record_guard(3.0)
    assert planner.fits(0.0, 10.0, reserve_ms=planner.predicted_guard_ms())  # 3 + 4 <= 10
    assert not planner.fits(0.0, 6.0, reserve_ms=planner.predicted_guard_ms())
    assert not planner.fits(4.0, 10.0, reserve_ms=3.0)
    planner.refused_frame()  # the guard's estimate ages out like the step's
    assert planner.predicted_guard_ms() == 0.0 and planner.predicted_step_ms() is None
