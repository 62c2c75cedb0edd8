"""Class-mix-balanced statistics for test-time normalisation (`target_norm_balance`).

A frame's batch statistics move with the sensor and with the scene's class mix: another town
with more buildings and less road moves every level's mean although no sensor changed, and
an average that follows it normalises away part of what tells the classes apart (README,
"500 frames with test-time normalisation"). Weighting each voxel by how common its predicted
class is in the source's training data over how common it is in the frame gives the
statistics the frame would have had with the training class mix: a changed sensor still
moves them, a changed class mix much less. The training shares are the checkpoint's
(`extra["class_shares"]`, written by `tttkd train`); without them the statistics stay plain.

The weights need the frame's predictions, which exist only after the forward that takes the
frame in: its batch norms keep their inputs (`RunningTarget.pending`) and the model calls
`ClassMixCommit` with its voxel logits and each level's voxel coordinates when the forward
ends. That forward itself normalises with the average as the frame's plain statistics
would move it, so the frame is not served a frame late; the average keeps the weighted
ones.
"""
from __future__ import annotations

import threading

import torch

from ..model.norm import RunningTarget

# A class the frame has far less of than training had would otherwise weigh without bound:
# its few (often mislabelled) voxels would set the statistics.
MAX_WEIGHT = 10.0
# bit offsets of a voxel's (batch, z, y, x) in one int64 key; the grid's coordinates are
# below 2**31 (voxelize) and a frame's extent far below 2**16 voxels per axis
_KEY_SHIFTS = (48, 32, 16, 0)


def voxel_weights(voxel_logits: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """(M,) weight of each voxel: the training share of its predicted class over that class's
    share of the frame's voxels, clipped to [1 / MAX_WEIGHT, MAX_WEIGHT]."""
    cls = voxel_logits.detach().argmax(dim=1)
    frame_share = torch.bincount(cls, minlength=len(reference)).float() / len(cls)
    weight = reference.to(voxel_logits.device)[cls] / frame_share[cls]
    return weight.clamp(1.0 / MAX_WEIGHT, MAX_WEIGHT)


def _keys(indices: torch.Tensor) -> torch.Tensor:
    """(M, 4) int (batch, z, y, x) -> (M,) int64 keys."""
    idx = indices.long()
    return sum(idx[:, i] << shift for i, shift in enumerate(_KEY_SHIFTS))


def coarser_weights(fine: torch.Tensor, weights: torch.Tensor,
                    coarse: torch.Tensor) -> torch.Tensor:
    """Weights of the next level's voxels `coarse` (Mc, 4): the mean of their children's.
    The encoder down-samples with kernel 2, stride 2, so the voxel at (z, y, x) feeds the
    coarse voxel at (z // 2, y // 2, x // 2)."""
    parent = fine.long().clone()
    parent[:, 1:] //= 2
    coarse_keys = _keys(coarse)
    order = torch.argsort(coarse_keys)
    rows = order[torch.searchsorted(coarse_keys[order], _keys(parent))]
    sums = torch.zeros(len(coarse), device=weights.device).index_add_(0, rows, weights)
    counts = torch.zeros(len(coarse), device=weights.device).index_add_(
        0, rows, torch.ones_like(weights))
    return sums / counts.clamp_min(1.0)


def weighted_var_mean(x: torch.Tensor, weights: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(var, mean) of the rows of x (M, C) weighted by `weights` (M,)."""
    w = (weights / weights.sum()).unsqueeze(1)
    mean = (w * x).sum(dim=0)
    return (w * (x - mean) ** 2).sum(dim=0), mean


class ClassMixCommit:
    """Takes the kept batches of a forward into their levels' averages, weighted towards the
    training class mix. `reference`: the training class shares (None while the batch norms
    take their batches in directly).
    Copies of the model share it (`__deepcopy__`), as they share the averages."""

    def __init__(self, levels: list[list[RunningTarget]]) -> None:
        self.levels = levels
        self.reference: torch.Tensor | None = None

    def __deepcopy__(self, memo: dict) -> ClassMixCommit:
        return self

    def __call__(self, level_indices: list[torch.Tensor], voxel_logits: torch.Tensor) -> None:
        """level_indices[l]: (M_l, 4) coordinates of level l's voxels (0 = the stem, whose rows
        are voxel_logits')."""
        # under the async schedule the serving forward and the adapting one may each have
        # taken some levels' batches in: each weighs its own rows
        thread = threading.get_ident()
        mine = [[t.pending is not None and t.pending_thread == thread for t in level]
                for level in self.levels]
        if not any(any(level) for level in mine):
            return
        if self.reference is None:
            raise RuntimeError("a batch norm kept its batch for class-mix weights, but no "
                               "training class shares are set")
        with torch.no_grad():
            weights = voxel_weights(voxel_logits, self.reference)
            for index, (targets, indices) in enumerate(zip(self.levels, level_indices)):
                if index > 0:
                    weights = coarser_weights(level_indices[index - 1], weights, indices)
                for target, own in zip(targets, mine[index]):
                    if own:
                        var, mean = weighted_var_mean(target.pending, weights)
                        target.add(mean, var)
                        target.pending = None
