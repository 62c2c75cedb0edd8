"""The adaptation engine: one object serves the node, the evaluator, the demo and the bench.

`process(frame)` takes up to `max_steps` self-supervised gradient steps on the frame inside
its time budget (TTT-KD: adapt, then predict), or predicts from the first step's forward pass
(OCL's order), and returns per-point labels, confidences, camera masks and stats.
"""
from __future__ import annotations

import copy
import time
from dataclasses import replace

import numpy as np
import torch

from .budget import BudgetPlanner, StepTimer
from .config import AdaptConfig
from .frame import UNLABELED, Frame, FrameStats, Prediction
from .geometry import mirror_points
from .masks import render_mask
from .model import SegModel, param_groups
from .norm import set_bn_prior
from .objective import KdTargets, adaptation_loss, has_signal, teacher_targets, uses_kd, uses_ocl
from .restore import copy_into, snapshot, stochastic_restore
from .voxelize import voxelize


class AdaptationEngine:
    """Owns the model being adapted, its source snapshot and the optimizer state.

    model: a SegModel whose heads (rho_Y, rho_2D) stay frozen; teacher: a frozen DINOv2
    (`features(image) -> (D, h, w)`) or None, in which case KD has no targets.
    """

    def __init__(self, model: SegModel, cfg: AdaptConfig, teacher=None,
                 device: torch.device | str = "cpu") -> None:
        cfg.validate()
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.teacher = teacher
        self.cfg = cfg
        self.enabled = True
        self.timer = StepTimer(self.device)
        self.planner = BudgetPlanner()
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.resets = 0
        self._select_params()

    # -- configuration -------------------------------------------------------------------

    def _select_params(self) -> None:
        """Freeze everything but the parameters that adapt; snapshot them as the source."""
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.params = list(param_groups(self.model, self.cfg.params))
        for p in self.params:
            p.requires_grad_(True)
        if not hasattr(self, "source"):
            self.source = snapshot(list(self.model.parameters()))
        self.optimizer = self._make_optimizer()
        self.optimizer_start = copy.deepcopy(self.optimizer.state_dict())

    def _make_optimizer(self) -> torch.optim.Optimizer:
        c = self.cfg
        if c.optimizer == "sgd":
            return torch.optim.SGD(self.params, lr=c.lr, momentum=c.momentum,
                                   weight_decay=c.weight_decay)
        if c.optimizer == "adam":
            return torch.optim.Adam(self.params, lr=c.lr, weight_decay=c.weight_decay)
        return torch.optim.AdamW(self.params, lr=c.lr, weight_decay=c.weight_decay)

    def configure(self, **changes) -> None:
        """Change adaptation settings at run time; invalid values raise ValueError and change
        nothing. The adapted weights are kept; a new optimizer starts if its settings or the
        adapted parameter set change."""
        new = replace(self.cfg, **changes)
        new.validate()
        rebuild = any(getattr(new, k) != getattr(self.cfg, k)
                      for k in ("optimizer", "lr", "momentum", "weight_decay", "params"))
        self.cfg = new
        if rebuild:
            self._select_params()

    def reset(self) -> None:
        """Back to the source weights and a fresh optimizer."""
        copy_into(list(self.model.parameters()), self.source)
        self.optimizer.load_state_dict(self.optimizer_start)
        self.resets += 1

    @property
    def adapting(self) -> bool:
        c = self.cfg
        return self.enabled and c.mode != "none" and c.max_steps > 0 and c.budget_ms > 0

    # -- per frame -----------------------------------------------------------------------

    def process(self, frame: Frame) -> Prediction:
        points = torch.tensor(np.asarray(frame.points, dtype=np.float32))  # own copy
        finite = torch.isfinite(points).all(dim=1).numpy()
        pts = points[torch.from_numpy(finite)].to(self.device)
        stats = FrameStats(budget_ms=self.cfg.budget_ms if self.adapting else 0.0)
        labels = np.full(len(points), UNLABELED, dtype=np.uint16)
        confidence = np.zeros(len(points), dtype=np.float32)
        if len(pts) == 0:
            return Prediction(labels, confidence, {}, stats)

        logits = None
        if self.adapting:
            logits = self._adapt(pts, frame, stats)
        if logits is None:
            logits = self._infer(pts, stats)
        prob = torch.softmax(logits.float(), dim=1)
        conf, cls = prob.max(dim=1)
        labels[finite] = cls.cpu().numpy().astype(np.uint16)
        confidence[finite] = conf.cpu().numpy()
        masks = {v.name: render_mask(pts[:, :3], labels[finite], v) for v in frame.cameras}

        if self.cfg.protocol == "episodic" and stats.steps > 0:
            copy_into(list(self.model.parameters()), self.source)
            self.optimizer.load_state_dict(self.optimizer_start)
        return Prediction(labels, confidence, masks, stats)

    def _infer(self, pts: torch.Tensor, stats: FrameStats) -> torch.Tensor:
        """Logits (N, C) with everything frozen and source BN statistics."""
        times: list[float] = []
        with self.timer.measure(times), torch.no_grad():
            logits = self.model(voxelize([pts], self.model.cfg.voxel_size)).logits
        stats.infer_ms = times[0]
        return logits

    def _adapt(self, pts: torch.Tensor, frame: Frame, stats: FrameStats) -> torch.Tensor | None:
        """Take steps while they fit the budget. Returns the logits of the first step's
        forward (averaged over the OCL views) when the order is predict_then_adapt."""
        cfg = self.cfg
        targets = None
        if uses_kd(cfg.mode) and self.teacher is not None and frame.cameras:
            t0 = time.perf_counter()
            with torch.no_grad():
                targets = teacher_targets(self.teacher, pts[:, :3], frame.cameras)
            stats.teacher_ms = (time.perf_counter() - t0) * 1e3
        if not has_signal(cfg, targets):
            return None

        first_logits = None
        step_times: list[float] = []
        while stats.steps < cfg.max_steps and self.planner.fits(sum(step_times), cfg.budget_ms):
            with self.timer.measure(step_times):
                logits, parts, event = self._step(pts, targets)
            self.planner.record(step_times[-1])
            stats.steps += 1
            stats.losses = parts
            if event:
                stats.events.append(event)
            if first_logits is None:
                first_logits = logits
        if stats.steps == 0:
            self.planner.refused_frame()
        stats.adapt_ms = sum(step_times)
        stats.over_budget = stats.adapt_ms > cfg.budget_ms
        return first_logits if cfg.order == "predict_then_adapt" else None

    def _step(self, pts: torch.Tensor, targets: KdTargets | None
              ) -> tuple[torch.Tensor, dict[str, float], str]:
        """One gradient step. A non-finite loss or gradient discards the step (the weights
        are not touched). Returns the step's (detached, view-averaged) logits, loss parts and
        an event name ('' when the step was applied)."""
        cfg = self.cfg
        n = len(pts)
        clouds = [pts, mirror_points(pts)] if uses_ocl(cfg.mode) else [pts]
        set_bn_prior(self.model, cfg.bn_prior if cfg.bn_prior < 1.0 else None)
        try:
            out = self.model(voxelize(clouds, self.model.cfg.voxel_size))
        finally:
            set_bn_prior(self.model, None)
        loss, parts = adaptation_loss(cfg, out.logits, out.feat2d, n, targets)
        logits = out.logits.detach()
        logits = (logits[:n] + logits[n:]) / 2 if len(clouds) == 2 else logits
        self.optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            return logits, parts, "nonfinite_loss_discarded"
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, float("inf"))
        if not torch.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            return logits, parts, "nonfinite_grad_discarded"
        self.optimizer.step()
        if cfg.restore_prob > 0:
            stochastic_restore(self.params, self._source_of(self.params), cfg.restore_prob,
                               self.generator)
        return logits, parts, ""

    def _source_of(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        index = {id(p): i for i, p in enumerate(self.model.parameters())}
        return [self.source[index[id(p)]] for p in params]
