"""Batch norm with OCL's statistics modulation (METHOD.md, OCL 7) and running statistics of
the data the model sees now (test-time normalisation)."""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def average_weight(momentum: float, count: int) -> float:
    """Weight of the `count`-th sample in a moving average: a plain mean until 1/momentum
    samples are in, then `momentum`, so a small momentum does not leave the first sample
    dominating the average for long."""
    return max(momentum, 1.0 / count)


@dataclass(eq=False)
class RunningTarget:
    """A moving average of one BN layer's batch statistics on the frames the model sees now,
    which replaces its source (running) statistics while `use` is set.

    `armed`: the layer's next batch joins the average (the layer disarms it). The n-th batch
    after `clear` weighs max(momentum, 1/n): a plain mean until 1/momentum batches are in, so
    a small momentum does not leave the first frame dominating the average for long. Copies
    of a model share their layers' targets (`__deepcopy__`), so the engine's reference,
    moving-average and serving copies normalise as its model does.
    The tensors are replaced, never written in place: a forward on another thread reads
    either the old average or the new one.
    `deferred`: an armed layer keeps its batch in `pending` instead, with the thread whose
    forward it came from (`pending_thread`), for that forward to weigh its rows once its
    predictions exist (core/adapt/class_mix.py); that forward itself normalises with the
    average as its batch's plain statistics would make it (`with_batch`).
    `gate`: while it returns False the layer keeps taking batches in but normalises with the
    source statistics (core/adapt/target_norm.py: the teacher's check); None = always open.
    """

    momentum: float = 0.1
    use: bool = False
    armed: bool = False
    deferred: bool = False
    pending: torch.Tensor | None = None
    pending_thread: int = 0
    gate: Callable[[], bool] | None = None
    mean: torch.Tensor | None = None
    var: torch.Tensor | None = None
    count: int = 0

    def __deepcopy__(self, memo: dict) -> RunningTarget:
        return self

    def with_batch(self, batch_mean: torch.Tensor, batch_var: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, var): the average once this batch is in, without taking it in."""
        if self.mean is None or self.var is None:
            return batch_mean, batch_var
        weight = average_weight(self.momentum, self.count + 1)
        return torch.lerp(self.mean, batch_mean, weight), torch.lerp(self.var, batch_var, weight)

    def add(self, batch_mean: torch.Tensor, batch_var: torch.Tensor) -> None:
        self.mean, self.var = self.with_batch(batch_mean, batch_var)
        self.count += 1

    def clear(self) -> None:
        self.mean = self.var = self.pending = None
        self.count = 0


class PriorBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d over (M, C) features that can mix source and batch statistics.

    `prior is None`: ordinary BatchNorm1d (batch statistics and running-stat updates in train
    mode, running statistics in eval mode).
    `prior = p` in [0, 1], in either mode: normalise with
    `mean = p * running_mean + (1 - p) * batch_mean` and
    `var = p * running_var + (1 - p) * batch_var_unbiased`; the running statistics are never
    written and no gradient flows through the batch statistics. p = 1 is exactly eval-mode
    normalisation; p = 0 is normalisation by the batch's own (unbiased) statistics. A batch
    of fewer than 2 rows has no unbiased variance and uses the running statistics.

    `target` (set by the adaptation engine, core/adapt/target_norm.py): while its `use` is
    set, its moving average of target statistics stands in for the running statistics above
    (and an armed target first takes in this batch's statistics).
    """

    def __init__(self, num_features: int, eps: float = 1e-3, momentum: float = 0.1,
                 prior: float | None = None) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.prior = prior
        self.target: RunningTarget | None = None

    @property
    def prior(self) -> float | None:
        return self._prior

    @prior.setter
    def prior(self, value: float | None) -> None:
        if value is not None and not 0.0 <= value <= 1.0:
            raise ValueError(f"batch-norm prior must be None or in [0, 1], got {value}")
        self._prior = None if value is None else float(value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (M, C) -> (M, C)."""
        target = self.target if self.target is not None and self.target.use else None
        if self._prior is None and target is None:
            return super().forward(x)
        mean, var = self.running_mean, self.running_var
        if target is not None:
            target_mean, target_var = target.mean, target.var
            if target.armed and x.shape[0] > 1:
                target.armed = False
                with torch.no_grad():
                    batch_var, batch_mean = torch.var_mean(x, dim=0, correction=1)
                if target.deferred:
                    # the weighted statistics join after the forward; this forward already
                    # normalises with the frame in (its plain statistics), as without weights
                    target.pending, target.pending_thread = x.detach(), threading.get_ident()
                    target_mean, target_var = target.with_batch(batch_mean, batch_var)
                else:
                    target.add(batch_mean, batch_var)
                    target_mean, target_var = target.mean, target.var
            if target_mean is not None and target_var is not None and (
                    target.gate is None or target.gate()):
                mean, var = target_mean, target_var
        if self._prior is not None and self._prior < 1.0 and x.shape[0] > 1:
            with torch.no_grad():  # statistics are constants for the gradient
                batch_var, batch_mean = torch.var_mean(x, dim=0, correction=1)
            mean = self._prior * mean + (1.0 - self._prior) * batch_mean
            var = self._prior * var + (1.0 - self._prior) * batch_var
        # training=False: normalise with the given statistics and leave the buffers alone
        return F.batch_norm(x, mean, var, self.weight, self.bias, False, 0.0, self.eps)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, prior={self._prior}"


def set_bn_prior(module: nn.Module, prior: float | None) -> int:
    """Set `prior` on every PriorBatchNorm1d inside `module`; returns how many were set."""
    layers = [m for m in module.modules() if isinstance(m, PriorBatchNorm1d)]
    for layer in layers:
        layer.prior = prior
    return len(layers)
