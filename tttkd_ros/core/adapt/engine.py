"""The adaptation engine: one object serves the node, the evaluator, the demo and the bench.

`process(frame)` takes up to `max_steps` self-supervised gradient steps on the frame inside
its time budget (TTT-KD: adapt, then predict), or predicts from the first step's forward pass
(OCL's order), and returns per-point labels, confidences, camera masks and stats. With the
`async` schedule it predicts first and adapts in the background (core/adapt/schedule.py).

Safety (core/adapt/safety.py): a cloud over `max_points` is grid-subsampled for the model and every
point takes its cell's label; a step with a non-finite loss or gradient, or a loss spike, is
discarded and the last good weights are restored; a collapse of the predictions resets to the
source weights. Every such event is named in the frame's stats and counted in `event_counts`.

Harm guard (core/adapt/guard.py, source_pass.py): the source model predicts the frame too
when something needs it, paid from the frame's budget: each frame, a camera whose targets the
source model is far from (compared with the KD loss the checkpoint reached in training) gives
no KD targets; with `w_source` the steps keep the source's sure labels; every `guard_every`
frames a check of how many of those labels adaptation changed rolls back to the last good
weights or to the source. Anchoring (core/adapt/anchor.py): served moving-average weights, an L2
pull towards the source; and RDumb's reset to the source every `reset_every` frames.

Label-level distillation (w_probe, off by default): the checkpoint's teacher probe
(core/model/teacher_probe.py) labels the KD targets, and the steps add a class-balanced
cross-entropy towards its sure labels.

Test-time normalisation (core/adapt/target_norm.py): while adapting, the encoder's first
levels normalise with a moving average of the frames' own statistics, taken in by the
forward that predicts each frame; with `target_norm_check` the levels after the stem only
while the teacher finds them helping (the source pass measures it; event `target_norm_gated`
while they stay on the source's statistics); with `target_norm_balance` each frame's voxels
weigh towards the training class mix (core/adapt/class_mix.py); a reset forgets both.
"""
from __future__ import annotations

import copy
import math
from collections import Counter
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..config import AdaptConfig
from ..device.readback import HostPrediction, read_back
from ..device.streams import EngineStreams, used_here
from ..device.transfer import host_copy, to_device
from ..frame import UNLABELED, Frame, FrameStats, Prediction
from ..geometry import mirror_points
from ..intensity import IntensityReference, out_of_range, scale_factor
from ..masks import splat_mask
from ..model.norm import set_bn_prior
from ..model.segmentation import SegModel, param_groups
from ..model.teacher_probe import TeacherProbe
from ..model.voxelize import voxelize
from .anchor import EmaWeights, anchor_gradient
from .budget import BudgetPlanner, StepTimer
from .guard import HarmGuard, SourceReference, Verdict, drift, mean_brightness
from .objective import (
    KdTargets,
    SourceLabels,
    adaptation_loss,
    has_signal,
    teacher_targets,
    uses_kd,
    uses_ocl,
)
from .restore import copy_into, snapshot, stochastic_restore
from .safety import CollapseDetector, LossSpikeDetector, dominant_share, grid_subsample
from .schedule import SKIPPED, AsyncAdapter, BackgroundWork
from .source_pass import SourceCheck, needs_source_pass, source_pass
from .target_norm import TargetNorm


@dataclass
class StepResult:
    """One gradient step: its (detached, view-averaged) logits, loss parts, event name ('' when
    the step was applied) and its objective (detached, 0-d)."""

    logits: torch.Tensor
    parts: dict[str, float]
    event: str
    loss: torch.Tensor


class AdaptationEngine:
    """Owns the model being adapted, its source snapshot and the optimizer state.

    model: a SegModel whose heads (rho_Y, rho_2D) stay frozen; teacher: a frozen DINOv2
    (`features(image) -> (D, h, w)`) or None, in which case KD has no targets; intensity:
    the intensities the model was trained on (the checkpoint's; default 0..1); kd_reference:
    the KD loss the checkpoint reached in training with this teacher (its
    `extra["teacher"]["kd_loss"]`), the level a trustworthy camera's targets stay near; None
    trusts every camera. probe: the checkpoint's teacher probe (labels from the KD targets,
    for w_probe), None without one. class_shares: the training data's class shares (the
    checkpoint's), for `target_norm_balance`; None leaves the statistics plain.
    """

    def __init__(self, model: SegModel, cfg: AdaptConfig, teacher=None,
                 device: torch.device | str = "cpu",
                 intensity: IntensityReference | None = None,
                 kd_reference: float | None = None,
                 probe: TeacherProbe | None = None,
                 class_shares: torch.Tensor | None = None) -> None:
        cfg.validate()
        self.device = torch.device(device)
        self.intensity = intensity or IntensityReference()
        # (factor, 99th percentile after scaling) of the last frame whose intensity still
        # disagreed with the checkpoint's, for whoever words the warning
        self.intensity_mismatch: tuple[float, float] | None = None
        self.model = model.to(self.device).eval()
        # before any copy of the model is made, so that every copy shares the statistics
        self.target_norm = TargetNorm(  # shares on the device once, not per frame
            self.model, None if class_shares is None else class_shares.to(self.device))
        # the source model: the guard's reference; its weights are the source snapshot
        self.reference = SourceReference(self.model)
        self.source = self.reference.params
        usable = kd_reference is not None and math.isfinite(kd_reference) and kd_reference > 0
        self.kd_reference = kd_reference if usable else None
        self.adapted_frames = 0  # frames processed while adapting (reset_every counts them)
        self.teacher = teacher
        self.probe = probe.to(self.device) if probe is not None else None
        self.cfg = cfg
        self.enabled = True
        self.timer = StepTimer(self.device)
        self.streams = EngineStreams(self.device)
        self.planner = BudgetPlanner()
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.resets = 0
        self.event_counts: Counter[str] = Counter()  # every event since start, by name
        self.background: AsyncAdapter | None = None  # set while the schedule is async
        self._select_params()
        self._make_guards()
        self._apply_schedule()

    # -- configuration -------------------------------------------------------------------

    def _select_params(self) -> None:
        """Freeze everything but the parameters that adapt; pick their source values."""
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.params = list(param_groups(self.model, self.cfg.params))
        for p in self.params:
            p.requires_grad_(True)
        # the source values of the adapted parameters, for stochastic restoration each step
        index = {id(p): i for i, p in enumerate(self.model.parameters())}
        self.params_source = [self.source[index[id(p)]] for p in self.params]
        self.optimizer = self._make_optimizer()
        self.optimizer_start = copy.deepcopy(self.optimizer.state_dict())
        self.last_good = snapshot(self.params)  # the adapted weights of the last normal loss

    def _make_guards(self) -> None:
        c = self.cfg
        self.spikes = LossSpikeDetector(c.spike_factor, c.spike_min_delta, c.spike_window,
                                        c.spike_patience)
        self.collapse = CollapseDetector(c.collapse_jump, c.collapse_window, c.collapse_frames)
        self.guard = HarmGuard(c, self.params)
        self.ema = (EmaWeights(self.model, self.params, c.ema_momentum)
                    if c.ema_momentum > 0 else None)

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
        adapted parameter set change. The spike and collapse detectors start over (the
        objective, and so the loss level, may have changed), and so do the harm guard (the
        current weights are its last good state) and the moving average (from the current
        weights)."""
        new = replace(self.cfg, **changes)
        new.validate()
        self._settle()  # an adaptation in flight finishes under the settings it started with
        rebuild = any(getattr(new, k) != getattr(self.cfg, k)
                      for k in ("optimizer", "lr", "momentum", "weight_decay", "params"))
        self.cfg = new
        if rebuild:
            self._select_params()
        self._make_guards()
        self._apply_schedule()

    def _apply_schedule(self) -> None:
        """Start or stop the background adaptation; the engine's model always holds the newest
        weights, so `sync` simply continues from them."""
        if self.cfg.schedule == "async" and self.background is None:
            self.background = AsyncAdapter(BackgroundWork(
                model=self.model, adapt=self._adapt, adapted_params=lambda: self.params,
                served=self._served, adopted=self._adopted, device=self.device,
                stream=self.streams.adapt))
        elif self.cfg.schedule == "sync" and self.background is not None:
            self.background.close()
            self.background = None

    def close(self) -> None:
        """Finish an adaptation in flight (its weights are kept) and stop the background
        thread; `process` afterwards runs as `sync`. Called when the node shuts down."""
        if self.background is not None:
            self.background.close()
            self.background = None

    def _settle(self) -> None:
        if self.background is not None:
            self.background.settle()

    def reset(self) -> None:
        """Back to the source weights and a fresh optimizer; the detectors start over. An
        adaptation in flight is waited for and overwritten."""
        self._settle()
        copy_into(list(self.model.parameters()), self.source)
        self.target_norm.clear()
        self._restart_from_current()
        if self.background is not None:
            self.background.mirror()
        self.resets += 1

    def clock_jumped(self) -> bool:
        """The input's time went backwards (a looped bag): reset to the source weights when
        `reset_on_clock_jump` is set. Returns whether it reset (counted as an event)."""
        if not self.cfg.reset_on_clock_jump:
            return False
        self.reset()
        self.event_counts["clock_jump_reset"] += 1
        return True

    def _restart_from_current(self) -> None:
        """Fresh optimizer state, the current weights as the last good ones, no history."""
        self._fresh_optimizer()
        self.guard.restart(self.params)
        self.collapse.clear()

    def _fresh_optimizer(self) -> None:
        """A fresh start from the current weights (`_fresh_start`), with no loss history."""
        self._fresh_start()
        self.spikes.clear()

    def _fresh_start(self) -> None:
        """A fresh optimizer state; the current weights are the last good ones and the moving
        average's new start."""
        self.optimizer.load_state_dict(self.optimizer_start)
        copy_into(self.last_good, self.params)
        if self.ema is not None:
            self.ema.reset(self.params)

    def _served(self) -> list[torch.Tensor]:
        """The values that serve for the adapted parameters: their moving average when on."""
        return self.params if self.ema is None else self.ema.values

    @property
    def adapting(self) -> bool:
        c = self.cfg
        return self.enabled and c.mode != "none" and c.max_steps > 0 and c.budget_ms > 0

    # -- per frame -----------------------------------------------------------------------

    def process(self, frame: Frame) -> Prediction:
        """Adapt (per the schedule) and predict one frame. On CUDA the points go up from
        page-locked memory without blocking, the work runs on the engine's streams, and the
        prediction comes back in one copy (core/device/readback.py)."""
        stats = FrameStats(budget_ms=self.cfg.budget_ms if self.adapting else 0.0)
        host, kept = self._host_points(frame, stats)
        labels = np.full(len(kept), UNLABELED, dtype=np.uint16)
        confidence = np.zeros(len(kept), dtype=np.float32)
        if len(host) == 0:
            return Prediction(labels, confidence, {}, stats)

        adapting, background = self.adapting, self.background
        self.target_norm.select(self.cfg.target_norm_levels if adapting else 0,
                                self.cfg.target_norm_momentum, self.cfg.target_norm_check,
                                self.cfg.target_norm_balance)
        if adapting:
            self.target_norm.new_frame()
            self._periodic_reset(stats)
        with self.streams.on(self.streams.infer):
            pts = to_device(host, self.device)
            model_pts, owner = pts, None
            if 0 < self.cfg.max_points < len(pts):
                keep, owner = grid_subsample(pts[:, :3], self.cfg.max_points,
                                             self.model.cfg.voxel_size)
                model_pts = pts[keep]
                self._event(stats, "points_subsampled")
            if background is None:
                logits = self._adapt_on_stream(model_pts, frame, stats) if adapting else None
            else:
                background.swap_in(stats)  # frame boundary: a finished adaptation serves now
                logits = None
            predictor = self._predictor(background)
            if logits is None:
                logits = self._infer(model_pts, stats, predictor)
            out = self._read_back(logits, owner, pts, frame)
            if adapting and stats.steps > 0 and self.collapse.update(self._dominant_share(out)):
                self.reset()  # the prediction came from collapsed weights: redo it from the source
                self._event(stats, "collapse_reset")
                out = self._read_back(self._infer(model_pts, stats, predictor), owner, pts, frame)
            if adapting and self.target_norm.gated():
                self._event(stats, "target_norm_gated")  # deeper levels on source statistics
            labels[kept], confidence[kept] = out.labels, out.confidence
            masks = {v.name: splat_mask(pixel, depth, out.labels, v.size)
                     for v, pixel, depth in zip(frame.cameras, out.pixels, out.depths)}
            if background is not None and adapting and not background.start(model_pts, frame):
                self._event(stats, SKIPPED)  # the prediction is complete; one still in flight
            if background is None and self.cfg.protocol == "episodic" and stats.steps > 0:
                self._end_episode()
        return Prediction(labels, confidence, masks, stats)

    def _exposed(self, frame: Frame, stats: FrameStats) -> list[bool]:
        """Per camera: bright enough to distil from (event `camera_underexposed` else)."""
        floor = self.cfg.guard_min_brightness
        exposed = [floor == 0 or mean_brightness(v.image) >= floor for v in frame.cameras]
        for view, ok in zip(frame.cameras, exposed):
            if not ok:
                stats.cameras_untrusted.append(view.name)
                self._event(stats, "camera_underexposed")
        return exposed

    def _periodic_reset(self, stats: FrameStats) -> None:
        """RDumb: every `reset_every`-th adapted frame starts from the source weights."""
        every = self.cfg.reset_every
        if every and self.adapted_frames and self.adapted_frames % every == 0:
            self.reset()
            self._event(stats, "periodic_reset")
        self.adapted_frames += 1

    def _predictor(self, background: AsyncAdapter | None) -> SegModel:
        """The model that predicts: async's serving copy, else the moving average when on,
        else the engine's model."""
        if background is not None:
            return background.serving
        return self.model if self.ema is None else self.ema.model

    def _host_points(self, frame: Frame, stats: FrameStats) -> tuple[torch.Tensor, np.ndarray]:
        """The rows of the frame's points the model sees (finite, and beyond min_range of the
        origin: no-returns are counted in `stats`), intensity scaled to the checkpoint's
        units, as the engine's own host copy (the caller may reuse its array; async reads the
        copy later), page-locked for a GPU; and their mask. A scaled intensity that still
        disagrees with the checkpoint's is the event `intensity_out_of_range`."""
        array = np.asarray(frame.points, dtype=np.float32)
        finite = np.isfinite(array).all(axis=1)
        xyz = array[:, :3].astype(np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            kept = finite & (np.einsum("ij,ij->i", xyz, xyz) > self.cfg.min_range ** 2)
        stats.no_return_points = int(finite.sum() - kept.sum())
        host = host_copy(array if kept.all() else array[kept], pinned=self.device.type == "cuda")
        if len(host):
            intensity = host[:, 3].numpy()
            factor = scale_factor(self.cfg.intensity_scale, self.intensity, intensity,
                                  frame.intensity_max)
            if factor != 1.0:
                intensity *= factor  # in place: the host copy is the engine's own
            p99 = out_of_range(intensity, self.intensity)
            if p99 is not None:
                self.intensity_mismatch = (factor, p99)
                self._event(stats, "intensity_out_of_range")
        return host, kept

    def _read_back(self, logits: torch.Tensor, owner: torch.Tensor | None, pts: torch.Tensor,
                   frame: Frame) -> HostPrediction:
        """Classes and confidences of every point (a subsampled point takes its cell's) and
        its pixel in each camera, on the host."""
        conf, cls = self._classify(logits)
        if owner is not None:
            conf, cls = conf[owner], cls[owner]
        return read_back(cls, conf, pts[:, :3], frame.cameras)

    def _dominant_share(self, out: HostPrediction) -> float:
        labels = out.labels[out.labels != UNLABELED].astype(np.int64)
        return dominant_share(torch.from_numpy(labels), self.model.cfg.num_classes)

    def _adopted(self, stats: FrameStats) -> None:
        """Async: the serving copy took the weights of a finished adaptation; episodic, each
        adaptation starts from the source again (one frame's memory)."""
        if self.cfg.protocol == "episodic" and stats.steps > 0:
            self._end_episode()

    def _end_episode(self) -> None:
        """Episodic protocol: the source weights and a fresh optimizer for the next frame (the
        loss history stays: spikes are judged across frames)."""
        copy_into(list(self.model.parameters()), self.source)
        self.target_norm.clear()
        self._fresh_start()

    def _event(self, stats: FrameStats, name: str) -> None:
        stats.events.append(name)
        self.event_counts[name] += 1

    @staticmethod
    def _classify(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(confidence (N,) float32, class (N,) int64) from logits (N, C); a point whose
        logits are not finite gets UNLABELED and confidence 0."""
        conf, cls = torch.softmax(logits.float(), dim=1).max(dim=1)
        bad = ~torch.isfinite(conf)
        return conf.masked_fill(bad, 0.0), cls.masked_fill(bad, UNLABELED)

    def _infer(self, pts: torch.Tensor, stats: FrameStats, model: SegModel) -> torch.Tensor:
        """Logits (N, C) of `model` (the engine's, or async's serving copy) with everything
        frozen, and source BN statistics, or in the levels test-time normalisation holds,
        the target's (this forward takes the frame in when it has not been yet)."""
        self.target_norm.arm()
        times: list[float] = []
        with self.timer.measure(times), torch.no_grad():
            logits = model(voxelize([pts], model.cfg.voxel_size)).logits
        stats.infer_ms += times[0]
        return logits

    def _adapt_on_stream(self, pts: torch.Tensor, frame: Frame, stats: FrameStats
                         ) -> torch.Tensor | None:
        """`sync`: `_adapt` on the adaptation stream; the caller's (inference) stream then
        waits for it, so the frame is predicted with the adapted weights."""
        with self.streams.on(self.streams.adapt, uses=[pts]):
            logits = self._adapt(pts, frame, stats)
        if logits is not None:
            used_here([logits])
        return logits

    def _adapt(self, pts: torch.Tensor, frame: Frame, stats: FrameStats) -> torch.Tensor | None:
        """Take steps while they fit the budget; a discarded step ends the frame's steps (the
        same data would fail again). The harm guard's source pass, when this frame needs it,
        runs first and only if it and a step fit; its time counts as spent. Returns the
        logits of the first step's forward (averaged over the OCL views) when the order is
        predict_then_adapt, that step was not discarded (its weights were not trusted), the
        guard did not roll them back and no moving average serves, else None."""
        cfg = self.cfg
        targets = None
        if uses_kd(cfg.mode) and self.teacher is not None and frame.cameras:
            times: list[float] = []
            with self.streams.on(self.streams.teacher, uses=[pts]), \
                    self.timer.measure(times), torch.no_grad():
                targets = teacher_targets(self.teacher, pts[:, :3], frame.cameras,
                                          self._exposed(frame, stats))
                if self.probe is not None and cfg.w_probe > 0:
                    targets = targets.with_labels(self.probe, cfg.probe_confidence)
            used_here([targets.point_index, targets.features])
            stats.teacher_ms = times[0]
        if not has_signal(cfg, targets):
            return None
        judge = self.guard.due() and cfg.protocol == "continual"  # episodic never drifts
        source = None
        if needs_source_pass(cfg, self.kd_reference, targets, judge):
            if not self.planner.fits(0.0, cfg.budget_ms, self.planner.predicted_guard_ms()):
                self.planner.refused_frame()  # the source pass and a step do not both fit
                return None
            guard_times: list[float] = []
            checks = self.target_norm.check.count
            with self.timer.measure(guard_times):
                source = source_pass(self.reference, cfg, self.kd_reference, pts, frame,
                                     targets, judge, stats, lambda e: self._event(stats, e),
                                     self.target_norm.check)
            stats.guard_ms = guard_times[0]
            if self.target_norm.check.count > checks:  # counted, as a guard check is
                self.event_counts["target_norm_check"] += 1
            targets = source.targets
            if not has_signal(cfg, targets):  # KD alone, and no camera is trusted
                self.planner.record_guard(stats.guard_ms)
                return None
        check = source.check if source is not None else None
        labels = source.labels if source is not None else None

        first_logits = None
        step_times: list[float] = []
        while stats.steps < cfg.max_steps and self.planner.fits(
                stats.guard_ms + sum(step_times), cfg.budget_ms):
            if stats.steps == 0 and cfg.order == "predict_then_adapt":
                self.target_norm.arm()  # this step's forward predicts the frame
            with self.timer.measure(step_times):
                step = self._step(pts, targets, labels, first=stats.steps == 0)
            self.planner.record(step_times[-1])
            stats.steps += 1
            stats.losses = step.parts
            rolled_back = stats.steps == 1 and check is not None and self._judge(check, step,
                                                                                 stats)
            if step.event:
                self._event(stats, step.event)
                break
            if stats.steps == 1 and not rolled_back:
                first_logits = step.logits
        if source is not None:
            self.planner.record_guard(stats.guard_ms)
        if stats.steps == 0:
            self.planner.refused_frame()
        stats.adapt_ms = sum(step_times)
        stats.over_budget = stats.adapt_ms + stats.guard_ms > cfg.budget_ms
        served_raw = cfg.order == "predict_then_adapt" and self.ema is None
        return first_logits if served_raw else None

    def _judge(self, check: SourceCheck, step: StepResult, stats: FrameStats) -> bool:
        """The harm guard's verdict on the weights the frame's first step started from
        (rule: core/adapt/guard.py), acted on; True when it rolled them back. A step whose
        objective is not finite is not judged (the check stays due)."""
        times: list[float] = []
        with self.timer.measure(times):
            d = drift(check.logits, step.logits, self.cfg.source_confidence)
            gain = (check.loss - step.loss).float()
            share, kl, flip, gain_v = torch.stack([d.share, d.kl, d.sure_flip, gain]).tolist()
        stats.guard_ms += times[0]
        if not math.isfinite(gain_v):
            return False
        stats.guard_checked = True
        stats.guard_drift, stats.guard_kl, stats.guard_gain = share, kl, gain_v
        stats.guard_flip = flip
        self.event_counts["guard_check"] += 1
        verdict = self.guard.judge(flip, self.last_good)
        if verdict is Verdict.PASSED:
            return False
        self.event_counts["guard_check_failed"] += 1  # counted; the frame's event is an action
        if verdict is Verdict.FAILED:
            return False
        if verdict is Verdict.ROLLBACK:
            copy_into(self.params, self.guard.good)
            self._event(stats, "guard_rollback")
        else:
            copy_into(self.params, self.params_source)
            self.guard.restart(self.params)
            self.resets += 1
            self._event(stats, "guard_source_reset")
        self._fresh_optimizer()
        stats.guard_rollback = True
        return True

    def _step(self, pts: torch.Tensor, targets: KdTargets | None,
              labels: SourceLabels | None, first: bool) -> StepResult:
        """One gradient step. A non-finite loss or a loss spike discards the step and puts
        back the last good weights (those of the last normal loss; a fresh optimizer state
        drops the momentum that led away from them); a non-finite gradient discards the
        step. `first`: the frame's first step, whose loss parts join the spike detector's
        history. The L2 anchor joins the gradient, the moving average follows an applied
        step."""
        cfg = self.cfg
        n = len(pts)
        clouds = [pts, mirror_points(pts)] if uses_ocl(cfg.mode) else [pts]
        set_bn_prior(self.model, cfg.step_bn_prior)
        try:
            out = self.model(voxelize(clouds, self.model.cfg.voxel_size))
        finally:
            set_bn_prior(self.model, None)
        loss, parts = adaptation_loss(cfg, out.logits, out.feat2d, n, targets, labels,
                                      self.model.cfg.kd_center)
        logits = out.logits.detach()
        logits = (logits[:n] + logits[n:]) / 2 if len(clouds) == 2 else logits
        self.optimizer.zero_grad(set_to_none=True)
        rejected = ("nonfinite_loss_discarded" if not torch.isfinite(loss)
                    else "loss_spike_discarded" if self.spikes.check(parts, record=first) else "")
        if rejected:
            copy_into(self.params, self.last_good)
            self.optimizer.load_state_dict(self.optimizer_start)
            return StepResult(logits, parts, rejected, loss.detach())
        copy_into(self.last_good, self.params)  # these weights gave a normal loss
        loss.backward()
        if cfg.anchor_weight > 0:
            anchor_gradient(self.params, self.params_source, cfg.anchor_weight)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, float("inf"))
        if not torch.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            return StepResult(logits, parts, "nonfinite_grad_discarded", loss.detach())
        self.optimizer.step()
        if cfg.restore_prob > 0:
            stochastic_restore(self.params, self.params_source, cfg.restore_prob,
                               self.generator)
        if self.ema is not None:
            self.ema.update(self.params)
        return StepResult(logits, parts, "", loss.detach())
