"""Residual sparse U-Net (psi) over voxels, in the style of Pointcept's SpUNet.

Resolution r = 0..4 is the voxel grid downsampled r times by 2. The stem and decoder stage 1
work at r = 0, encoder stage s and decoder stage s + 1 at r = s. Submanifold convolutions at
one resolution share an indice key (their neighbour pairs are computed once); each inverse
convolution reuses the pairs of the stride-2 convolution it undoes, so its output rows are
exactly the skip connection's rows.
"""
from __future__ import annotations

import torch
from spconv.cppconstants import CPU_ONLY_BUILD
from torch import nn

from ..config import BACKBONE_WIDTHS
from .norm import PriorBatchNorm1d
from .sparse import spconv

NUM_STAGES = 4


def conv_algo_for(device: torch.device | str) -> spconv.ConvAlgo:
    """spconv's algorithm for a device: Native on CPU (the only one there), else spconv's
    default for kernels of <= 32 taps (all of ours), MaskImplicitGemm."""
    if torch.device(device).type == "cpu" or CPU_ONLY_BUILD:
        return spconv.ConvAlgo.Native
    return spconv.ConvAlgo.MaskImplicitGemm


def set_conv_algo(model: nn.Module, device: torch.device | str) -> None:
    """Make every sparse convolution in `model` use the algorithm that runs on `device`.

    The weight layout (KRSC) does not depend on the algorithm, so this is safe after loading
    weights and between devices.
    """
    algo = conv_algo_for(device)
    for module in model.modules():
        if isinstance(module, spconv.conv.SparseConvolution):
            module.algo = algo


def _bn_relu(channels: int) -> list[nn.Module]:
    return [PriorBatchNorm1d(channels), nn.ReLU()]


class ResidualBlock(spconv.SparseModule):
    """Two 3x3x3 submanifold convs with BN + ReLU and a residual (1x1 projection when the
    width changes). (M, c_in) -> (M, c_out), same rows."""

    def __init__(self, c_in: int, c_out: int, indice_key: str) -> None:
        super().__init__()
        self.body = spconv.SparseSequential(
            spconv.SubMConv3d(c_in, c_out, 3, padding=1, bias=False, indice_key=indice_key),
            *_bn_relu(c_out),
            spconv.SubMConv3d(c_out, c_out, 3, padding=1, bias=False, indice_key=indice_key),
            PriorBatchNorm1d(c_out),
        )
        self.proj = None
        if c_in != c_out:
            self.proj = spconv.SparseSequential(
                spconv.SubMConv3d(c_in, c_out, 1, bias=False), PriorBatchNorm1d(c_out))
        self.act = nn.ReLU()

    def forward(self, x: spconv.SparseConvTensor) -> spconv.SparseConvTensor:
        shortcut = x.features if self.proj is None else self.proj(x).features
        out = self.body(x)
        return out.replace_feature(self.act(out.features + shortcut))


def _blocks(c_in: int, c_out: int, count: int, indice_key: str) -> spconv.SparseSequential:
    return spconv.SparseSequential(*[
        ResidualBlock(c_in if i == 0 else c_out, c_out, indice_key) for i in range(count)])


class SparseUNet(nn.Module):
    """psi: voxel features (M, in_channels) -> per-voxel features (M, out_channels).

    widths: (stem, enc1, enc2, enc3, enc4, dec4, dec3, dec2, dec1); out_channels = dec1.
    """

    def __init__(self, in_channels: int, widths: tuple[int, ...],
                 blocks_per_stage: int = 1) -> None:
        super().__init__()
        if len(widths) != 1 + 2 * NUM_STAGES:
            raise ValueError(f"backbone widths need {1 + 2 * NUM_STAGES} entries "
                             f"(stem, enc1-4, dec4-1), got {len(widths)}")
        if blocks_per_stage < 1:
            raise ValueError(f"blocks_per_stage must be >= 1, got {blocks_per_stage}")
        stem, enc = widths[0], widths[1:1 + NUM_STAGES]
        dec = widths[1 + NUM_STAGES:][::-1]  # dec[s] = width of decoder stage s + 1
        self.out_channels = dec[0]
        self.stem = spconv.SparseSequential(
            spconv.SubMConv3d(in_channels, stem, 3, padding=1, bias=False, indice_key="subm0"),
            *_bn_relu(stem),
        )
        skip = [stem, *enc[:-1]]  # channels at resolution 0..3
        self.down = nn.ModuleList()
        self.enc = nn.ModuleList()
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        self.level_indices: list[torch.Tensor] = []  # set by each forward
        for s in range(NUM_STAGES):
            self.down.append(spconv.SparseSequential(
                spconv.SparseConv3d(skip[s], enc[s], 2, stride=2, bias=False,
                                    indice_key=f"down{s + 1}"),
                *_bn_relu(enc[s]),
            ))
            self.enc.append(_blocks(enc[s], enc[s], blocks_per_stage, f"subm{s + 1}"))
            below = enc[-1] if s == NUM_STAGES - 1 else dec[s + 1]
            self.up.append(spconv.SparseSequential(
                spconv.SparseInverseConv3d(below, dec[s], 2, bias=False,
                                           indice_key=f"down{s + 1}"),
                *_bn_relu(dec[s]),
            ))
            self.dec.append(_blocks(dec[s] + skip[s], dec[s], blocks_per_stage, f"subm{s}"))

    def encoder_norms(self) -> list[list[PriorBatchNorm1d]]:
        """The encoder's batch norms by level: level 0 the stem's (full resolution), level
        s + 1 encoder stage s's (its downsampling and its blocks)."""
        def norms(*modules: nn.Module) -> list[PriorBatchNorm1d]:
            return [m for module in modules for m in module.modules()
                    if isinstance(m, PriorBatchNorm1d)]
        return [norms(self.stem), *(norms(down, enc) for down, enc in zip(self.down, self.enc))]

    def forward(self, x: spconv.SparseConvTensor) -> spconv.SparseConvTensor:
        """x: features (M, in_channels) -> same rows, features (M, out_channels)."""
        if self.stem[0].algo != conv_algo_for(x.features.device):  # moved between devices
            set_conv_algo(self, x.features.device)
        x = self.stem(x)
        skips = []
        for down, enc in zip(self.down, self.enc):
            skips.append(x)
            x = enc(down(x))
        # each encoder level's voxel coordinates, as `encoder_norms` orders the levels
        self.level_indices = [skip.indices for skip in skips] + [x.indices]
        for s in reversed(range(NUM_STAGES)):
            x = self.up[s](x)
            x = x.replace_feature(torch.cat([x.features, skips[s].features], dim=1))
            x = self.dec[s](x)
        return x


def build_backbone(name: str, in_channels: int, blocks_per_stage: int = 1) -> SparseUNet:
    """A SparseUNet with the widths `config.BACKBONE_WIDTHS[name]`."""
    if name not in BACKBONE_WIDTHS:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONE_WIDTHS)}")
    return SparseUNet(in_channels, BACKBONE_WIDTHS[name], blocks_per_stage)
