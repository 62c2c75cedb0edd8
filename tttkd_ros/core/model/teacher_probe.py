"""A linear probe on the teacher's features: which class the teacher's view of a point says.

Fitted where the labels are, on the teacher features of the training points a camera sees
(`tttkd train` before its first epoch; `tttkd probe` for an older checkpoint), and stored in
the checkpoint. During adaptation it turns the KD targets into
labels: where the camera is intact and the probe is sure, they are more often right than the
source model under a LiDAR shift (README, "Label-level distillation").
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

EXTRA_KEY = "teacher_probe"


@dataclass
class TeacherProbe:
    """softmax(((f - mean) / std) @ weight.T + bias) over the C classes for a (M, D) feature."""

    weight: torch.Tensor  # (C, D)
    bias: torch.Tensor  # (C,)
    mean: torch.Tensor  # (D,)
    std: torch.Tensor  # (D,)
    accuracy: float = float("nan")  # on its training points

    def to(self, device: torch.device | str) -> TeacherProbe:
        return TeacherProbe(*(t.to(device) for t in (self.weight, self.bias, self.mean,
                                                      self.std)), self.accuracy)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        x = (features.float() - self.mean) / self.std
        return x @ self.weight.T + self.bias

    def sure_labels(self, features: torch.Tensor, confidence: float) -> torch.Tensor:
        """(M,) the probe's class where its probability is at least `confidence`, else -1."""
        prob, label = F.softmax(self.logits(features), dim=1).max(dim=1)
        return torch.where(prob >= confidence, label, torch.full_like(label, -1))

    def to_extra(self) -> dict:
        return {"weight": self.weight.cpu(), "bias": self.bias.cpu(), "mean": self.mean.cpu(),
                "std": self.std.cpu(), "accuracy": float(self.accuracy)}

    @staticmethod
    def from_extra(extra: dict) -> TeacherProbe | None:
        """The probe a checkpoint's extra holds, None for checkpoints without one."""
        item = extra.get(EXTRA_KEY)
        if not item:
            return None
        return TeacherProbe(item["weight"], item["bias"], item["mean"], item["std"],
                            float(item.get("accuracy", float("nan"))))


def class_balance_weights(counts: torch.Tensor, power: float) -> torch.Tensor:
    """Cross-entropy class weights from per-class counts (C,): each class present weighs its
    share to the power -power, scaled to mean 1 over those classes; absent classes weigh 1.
    Thin classes (poles, signs) would otherwise hardly count, here and in source training."""
    present = counts > 0
    weights = torch.ones_like(counts, dtype=torch.promote_types(counts.dtype, torch.float32))
    if present.any():
        weights[present] = (counts[present] / counts[present].sum()) ** -power
        weights[present] /= weights[present].mean()
    return weights


def fit_probe(features: torch.Tensor, labels: torch.Tensor, num_classes: int,
              steps: int = 300, batch: int = 65536, lr: float = 1e-2, balance: float = 0.5,
              seed: int = 0) -> TeacherProbe:
    """Multinomial logistic regression of labels (M,) on features (M, D), class weights
    frequency^-balance (thin classes count), Adam on random batches: seconds on a CPU for the
    few hundred thousand visible points of a training set."""
    if len(features) == 0:
        raise ValueError("no labelled point is visible in any camera: nothing to fit a probe on")
    features = features.float()
    mean, std = features.mean(0), features.std(0) + 1e-6
    x = (features - mean) / std
    weight = class_balance_weights(torch.bincount(labels, minlength=num_classes).float(),
                                   balance)
    # its own generator only: training draws from torch's global one after the probe is fit
    gen = torch.Generator().manual_seed(seed)
    w = torch.empty(num_classes, x.shape[1]).normal_(0.0, 0.01, generator=gen).requires_grad_()
    b = torch.zeros(num_classes, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr)
    for _ in range(steps):
        rows = torch.randint(len(x), (min(batch, len(x)),), generator=gen)
        loss = F.cross_entropy(F.linear(x[rows], w, b), labels[rows], weight=weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
    w, b = w.detach(), b.detach()
    accuracy = float((F.linear(x, w, b).argmax(1) == labels).float().mean())
    return TeacherProbe(w, b, mean, std, accuracy)
