"""Point clouds -> sparse voxel grid (spconv input) and the point -> voxel map back.

Voxel features are the per-voxel mean of the point features
`(x / XYZ_SCALE, y / XYZ_SCALE, z / XYZ_SCALE, intensity)`: LiDAR-frame coordinates in units
of 50 m keep a +-50 m street scene within [-1, 1] (far points stay O(1)), and intensity is
passed through as given, which the data layer delivers in [0, 1] (SemanticKITTI's range).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .sparse import spconv

XYZ_SCALE = 50.0  # metres per feature unit for x, y, z
SPATIAL_MULTIPLE = 16  # 4 stride-2 stages halve the grid exactly when it is a multiple of 16
POINT_DIMS = 4  # x, y, z, intensity
INTENSITY = 3  # column of the intensity feature


@dataclass
class VoxelGrid:
    """A batch of voxelized clouds.

    coords: (M, 4) int32 [batch, z, y, x], unique rows, non-negative.
    features: (M, C) float32 per-voxel mean point features.
    inverse: (N_total,) int64, row of `coords` holding each point; points of cloud b follow
        those of cloud b - 1 in the input order.
    spatial_shape: (z, y, x) grid size, each a multiple of SPATIAL_MULTIPLE.
    batch_size: number of clouds.
    point_counts: points per cloud, to split per-point outputs back into clouds.
    """

    coords: torch.Tensor
    features: torch.Tensor
    inverse: torch.Tensor
    spatial_shape: tuple[int, int, int]
    batch_size: int
    point_counts: tuple[int, ...]

    def to_sparse_tensor(self) -> spconv.SparseConvTensor:
        """The spconv input tensor (features (M, C), indices (M, 4))."""
        return spconv.SparseConvTensor(self.features, self.coords, list(self.spatial_shape),
                                       self.batch_size)


def _check_clouds(clouds: list[torch.Tensor]) -> None:
    if not clouds:
        raise ValueError("voxelize needs at least one cloud")
    device = clouds[0].device
    for i, cloud in enumerate(clouds):
        if cloud.ndim != 2 or cloud.shape[1] != POINT_DIMS:
            raise ValueError(f"cloud {i} has shape {tuple(cloud.shape)}, expected (N, 4): "
                             "x, y, z, intensity")
        if cloud.shape[0] == 0:
            raise ValueError(f"cloud {i} is empty; skip empty frames before voxelize")
        if cloud.device != device:
            raise ValueError(f"cloud {i} is on {cloud.device}, cloud 0 on {device}")
        if not bool(torch.isfinite(cloud).all()):
            raise ValueError(f"cloud {i} holds NaN or inf values; drop them before voxelize")


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def voxelize(clouds: list[torch.Tensor], voxel_size: float) -> VoxelGrid:
    """Voxelize a batch of clouds, each (N_i, 4) float32 x, y, z, intensity.

    Each cloud's integer voxel coordinates are shifted by their own minimum so they start at
    0; the grid is shared by the batch and padded to a multiple of 16 per axis.
    """
    if voxel_size <= 0:
        raise ValueError(f"voxel_size must be > 0, got {voxel_size}")
    _check_clouds(clouds)
    device = clouds[0].device
    points = torch.cat([c.float() for c in clouds])  # (N, 4)
    counts = [int(c.shape[0]) for c in clouds]
    batch = torch.repeat_interleave(torch.arange(len(clouds), device=device),
                                    torch.tensor(counts, device=device))

    # (N, 3) integer z, y, x; a loop over the (one or two) clouds, never over points
    zyx = torch.floor(points[:, [2, 1, 0]] / voxel_size).long()
    for cloud_zyx in zyx.split(counts):
        cloud_zyx -= cloud_zyx.min(dim=0).values
    extent = zyx.max(dim=0).values + 1
    shape = [_round_up(int(v), SPATIAL_MULTIPLE) for v in extent.tolist()]
    if max(shape) >= 2**31:
        raise ValueError(f"grid {shape} overflows int32 coordinates; crop the cloud's range "
                         f"or use a larger voxel_size than {voxel_size}")

    # one int64 key per (batch, z, y, x); unique gives the voxel rows and the point -> row map
    sz, sy, sx = shape
    key = ((batch * sz + zyx[:, 0]) * sy + zyx[:, 1]) * sx + zyx[:, 2]
    unique_key, inverse = torch.unique(key, return_inverse=True)
    coords = torch.stack([unique_key // (sz * sy * sx), unique_key // (sy * sx) % sz,
                          unique_key // sx % sy, unique_key % sx], dim=1).int()

    point_feat = points.clone()
    point_feat[:, :3] /= XYZ_SCALE
    num_voxels = unique_key.shape[0]
    sums = torch.zeros(num_voxels, POINT_DIMS, device=device).index_add_(0, inverse, point_feat)
    hits = torch.bincount(inverse, minlength=num_voxels).unsqueeze(1)  # >= 1 per voxel
    return VoxelGrid(coords=coords, features=sums / hits, inverse=inverse,
                     spatial_shape=(sz, sy, sx), batch_size=len(clouds),
                     point_counts=tuple(counts))
