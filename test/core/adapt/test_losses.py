"""The test-time losses in tttkd_ros.core.losses."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tttkd_ros.core.adapt.losses import entropy_loss, kd_loss, ocl_loss


def _all_pairs_neg(logits: torch.Tensor) -> torch.Tensor:
    """mean_{i,j} <p_hat_i, p_hat_j> written as the explicit N x N matrix."""
    p = F.softmax(logits, dim=1)
    p_hat = p / p.norm(dim=1, keepdim=True)
    return (p_hat @ p_hat.T).mean()


def test_ocl_negative_term_equals_the_all_pairs_mean() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(37, 6, generator=gen, dtype=torch.float64) * 3
    b = torch.randn(37, 6, generator=gen, dtype=torch.float64) * 3
    loss, l_pos, l_neg = ocl_loss(a, b, pos_coeff=2.5, neg_coeff=0.7)
    expected_neg = 0.5 * (_all_pairs_neg(a) + _all_pairs_neg(b))
    p_a, p_b = F.softmax(a, dim=1), F.softmax(b, dim=1)
    expected_pos = -F.cosine_similarity(p_a, p_b, dim=1).mean()
    torch.testing.assert_close(l_neg, expected_neg, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(l_pos, expected_pos, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(loss, 2.5 * expected_pos + 0.7 * expected_neg)


def test_ocl_of_uniform_outputs() -> None:
    loss, l_pos, l_neg = ocl_loss(torch.zeros(9, 5), torch.zeros(9, 5))
    assert l_pos.item() == pytest.approx(-1.0)
    assert l_neg.item() == pytest.approx(1.0)
    assert loss.item() == pytest.approx(-2.0)


@pytest.mark.parametrize("classes", [2, 5, 19])
def test_ocl_negative_term_of_evenly_spread_one_hot_views(classes: int) -> None:
    logits = 60.0 * F.one_hot(torch.arange(4 * classes) % classes, classes).double()
    _, l_pos, l_neg = ocl_loss(logits, logits.clone())
    assert l_neg.item() == pytest.approx(1.0 / classes)
    assert l_pos.item() == pytest.approx(-1.0)


def test_ocl_gradient_reaches_both_views() -> None:
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(20, 4, generator=gen, requires_grad=True)
    b = torch.randn(20, 4, generator=gen, requires_grad=True)
    ocl_loss(a, b)[0].backward()
    for grad in (a.grad, b.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_ocl_of_no_points_is_a_zero_that_backpropagates() -> None:
    a = torch.zeros(0, 4, requires_grad=True)
    loss, l_pos, l_neg = ocl_loss(a, torch.zeros(0, 4))
    loss.backward()
    assert loss.item() == l_pos.item() == l_neg.item() == 0.0
    assert a.grad is not None


def test_kd_loss_measures_the_angle() -> None:
    t = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    assert kd_loss(t.clone(), t).item() == pytest.approx(0.0, abs=1e-7)
    orthogonal = torch.tensor([[0.0, 3.0, 0.0], [0.0, 0.0, -1.0]])
    assert kd_loss(orthogonal, t).item() == pytest.approx(1.0)
    assert kd_loss(-0.5 * t, t).item() == pytest.approx(2.0)


def test_kd_loss_is_scale_invariant_and_averages_rows() -> None:
    gen = torch.Generator().manual_seed(2)
    s = torch.randn(15, 8, generator=gen, dtype=torch.float64)
    t = torch.randn(15, 8, generator=gen, dtype=torch.float64)
    scales = torch.rand(15, 1, generator=gen, dtype=torch.float64) * 10 + 0.1
    expected = (1 - F.cosine_similarity(s, t, dim=1)).mean()
    torch.testing.assert_close(kd_loss(s, t), expected)
    torch.testing.assert_close(kd_loss(s * scales, t / scales), expected)


def test_centred_kd_loss_sees_past_a_common_direction() -> None:
    gen = torch.Generator().manual_seed(3)
    parts = torch.randn(20, 8, generator=gen, dtype=torch.float64)
    parts -= parts.mean(dim=0)
    common = 50 * torch.ones(8, dtype=torch.float64)
    student, target = common - parts, common + parts  # each point's own part points away
    assert kd_loss(student, target).item() < 0.01  # the common direction hides it
    assert kd_loss(student, target, center=True).item() == pytest.approx(2.0)
    shifted = kd_loss(student + 3.0, target - 7.0, center=True)  # any common offset
    torch.testing.assert_close(shifted, kd_loss(-parts, parts))


def test_kd_loss_trains_the_student_only() -> None:
    s = torch.randn(6, 4, requires_grad=True)
    t = torch.randn(6, 4, requires_grad=True)
    kd_loss(s, t).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_kd_loss_of_no_points_is_a_zero_that_backpropagates() -> None:
    s = torch.zeros(0, 384, requires_grad=True)
    loss = kd_loss(s, torch.zeros(0, 384))
    loss.backward()
    assert loss.item() == 0.0
    assert s.grad is not None and s.grad.shape == (0, 384)


@pytest.mark.parametrize("classes", [2, 19])
def test_entropy_of_uniform_and_confident_outputs(classes: int) -> None:
    assert entropy_loss(torch.zeros(7, classes)).item() == pytest.approx(math.log(classes))
    confident = 50.0 * F.one_hot(torch.arange(7) % classes, classes).float()
    assert entropy_loss(confident).item() == pytest.approx(0.0, abs=1e-6)


def test_entropy_is_the_mean_over_points() -> None:
    logits = torch.cat([torch.zeros(1, 4), 50.0 * F.one_hot(torch.tensor([2]), 4).float()])
    assert entropy_loss(logits).item() == pytest.approx(math.log(4) / 2, rel=1e-5)
