"""Snapshots and stochastic restoration in tttkd_ros.core.restore."""
from __future__ import annotations

import pytest
import torch

from tttkd_ros.core.adapt.restore import copy_into, snapshot, stochastic_restore

SHAPES = [(40, 30), (30,), (8, 4, 3, 3)]


def _params_and_source(seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Trainable params and a source that differs from them in every element."""
    gen = torch.Generator().manual_seed(seed)
    source = [torch.randn(s, generator=gen) for s in SHAPES]
    params = [(s + 1.0 + torch.rand(s.shape, generator=gen)).requires_grad_() for s in source]
    return params, source


def _n_elements() -> int:
    return sum(torch.Size(s).numel() for s in SHAPES)


def test_prob_zero_changes_nothing() -> None:
    params, source = _params_and_source(0)
    before = snapshot(params)
    assert int(stochastic_restore(params, source, 0.0)) == 0
    for p, b in zip(params, before):
        assert torch.equal(p, b)


def test_prob_one_restores_everything() -> None:
    params, source = _params_and_source(1)
    assert int(stochastic_restore(params, source, 1.0)) == _n_elements()
    for p, s in zip(params, source):
        assert torch.equal(p, s)


def test_prob_half_restores_about_half_and_reports_the_count() -> None:
    params, source = _params_and_source(2)
    before, kept_source = snapshot(params), snapshot(source)
    count = int(stochastic_restore(params, source, 0.5, torch.Generator().manual_seed(3)))
    restored = sum(int((p == s).sum()) for p, s in zip(params, source))
    unchanged = sum(int((p == b).sum()) for p, b in zip(params, before))
    assert count == restored
    assert restored + unchanged == _n_elements()  # an element is either restored or untouched
    assert 0.45 < restored / _n_elements() < 0.55
    for s, k in zip(source, kept_source):
        assert torch.equal(s, k)


def test_same_seed_restores_the_same_elements() -> None:
    first, source = _params_and_source(4)
    second = snapshot(first)
    stochastic_restore(first, source, 0.3, torch.Generator().manual_seed(5))
    stochastic_restore(second, source, 0.3, torch.Generator().manual_seed(5))
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_restore_keeps_params_trainable() -> None:
    params, source = _params_and_source(6)
    stochastic_restore(params, source, 0.5, torch.Generator().manual_seed(7))
    sum(p.sum() for p in params).backward()
    assert all(p.requires_grad and p.grad is not None for p in params)


def test_restore_rejects_bad_inputs() -> None:
    params, source = _params_and_source(8)
    with pytest.raises(ValueError):
        stochastic_restore(params, source, 1.5)
    with pytest.raises(ValueError):
        stochastic_restore(params, source[:-1], 0.1)
    with pytest.raises(ValueError):
        stochastic_restore(params, source[::-1], 0.1)


def test_snapshot_is_detached_and_independent() -> None:
    params, _ = _params_and_source(9)
    copies = snapshot(params)
    assert all(not c.requires_grad for c in copies)
    with torch.no_grad():
        params[0].add_(1.0)
    assert not torch.equal(params[0], copies[0])


def test_copy_into_overwrites_in_place() -> None:
    params, source = _params_and_source(10)
    storages = [p.data_ptr() for p in params]
    copy_into(params, source)
    for p, s, ptr in zip(params, source, storages):
        assert torch.equal(p, s) and p.data_ptr() == ptr and p.requires_grad
