"""The segmentation model: backbone psi with the class head rho_Y and the 2D head rho_2D."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn

from ..config import ADAPT_PARAMS, ModelConfig
from .backbone import SparseUNet, build_backbone, set_conv_algo
from .norm import PriorBatchNorm1d
from .voxelize import INTENSITY, VoxelGrid

HEADS = ("linear", "mlp")


@dataclass
class SegOutput:
    """Per-point outputs (rows follow `VoxelGrid.inverse`) and the per-voxel ones they are
    gathered from.

    logits: (N_total, C); feat2d: (N_total, D);
    voxel_logits: (M, C); voxel_feat2d: (M, D); voxel_features: (M, F) backbone output.
    """

    logits: torch.Tensor
    feat2d: torch.Tensor
    voxel_logits: torch.Tensor
    voxel_feat2d: torch.Tensor
    voxel_features: torch.Tensor


def build_head(kind: str, c_in: int, c_out: int) -> nn.Module:
    """`linear`: one Linear; `mlp`: Linear(c_in, c_in) -> ReLU -> Linear(c_in, c_out)."""
    if kind == "linear":
        return nn.Linear(c_in, c_out)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(c_in, c_in), nn.ReLU(), nn.Linear(c_in, c_out))
    raise ValueError(f"unknown head {kind!r}; choose one of {HEADS}")


class SegModel(nn.Module):
    """psi + rho_Y + rho_2D; the heads act per voxel, then are gathered per point."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone: SparseUNet = build_backbone(cfg.backbone, cfg.in_channels,
                                                   cfg.blocks_per_stage)
        width = self.backbone.out_channels
        self.head_cls = build_head(cfg.head, width, cfg.num_classes)
        self.head_2d = build_head(cfg.head, width, cfg.feat_dim)
        # called with the encoder levels' voxel coordinates and the voxel logits after each
        # forward (core/adapt/class_mix.py: test-time statistics weighted by class)
        self.after_forward: Callable[[list[torch.Tensor], torch.Tensor], None] | None = None

    def forward(self, grid: VoxelGrid) -> SegOutput:
        if not self.cfg.use_intensity:
            features = grid.features.clone()
            features[:, INTENSITY] = 0.0
            grid = replace(grid, features=features)
        feats = self.backbone(grid.to_sparse_tensor()).features  # (M, F), rows of grid.coords
        voxel_logits = self.head_cls(feats)
        voxel_feat2d = self.head_2d(feats)
        if self.after_forward is not None:
            self.after_forward(self.backbone.level_indices, voxel_logits)
        return SegOutput(logits=voxel_logits[grid.inverse], feat2d=voxel_feat2d[grid.inverse],
                         voxel_logits=voxel_logits, voxel_feat2d=voxel_feat2d,
                         voxel_features=feats)


def build_model(cfg: ModelConfig, device: torch.device | str) -> SegModel:
    """A freshly initialised SegModel on `device`, its sparse convs set up for that device."""
    model = SegModel(cfg).to(device)
    set_conv_algo(model, device)
    return model


def param_groups(model: SegModel, which: str) -> list[nn.Parameter]:
    """The parameters to adapt: "backbone" (all of psi), "backbone_bn" (only the affine
    weight and bias of psi's batch norms) or "all" (psi and both heads)."""
    if which == "backbone":
        return list(model.backbone.parameters())
    if which == "backbone_bn":
        return [p for m in model.backbone.modules() if isinstance(m, PriorBatchNorm1d)
                for p in (m.weight, m.bias)]
    if which == "all":
        return list(model.parameters())
    raise ValueError(f"unknown parameter group {which!r}; choose one of {ADAPT_PARAMS}")
