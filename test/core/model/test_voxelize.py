"""voxelize: point -> voxel map, per-batch separation, mean features, grid shape."""
from __future__ import annotations

import pytest
import torch

from tttkd_ros.core.model.voxelize import SPATIAL_MULTIPLE, XYZ_SCALE, voxelize

VOXEL = 0.5


def lattice_cloud(n: int, seed: int, extent: int = 6, offset: float = -3.0) -> torch.Tensor:
    """(n, 4) points on a coarse lattice of voxels (many points share one), jittered inside
    their voxel, with a negative offset so the shift to non-negative coords matters."""
    g = torch.Generator().manual_seed(seed)
    cells = torch.randint(0, extent, (n, 3), generator=g).float()
    jitter = 0.05 + 0.9 * torch.rand(n, 3, generator=g)
    xyz = (cells + jitter + offset) * VOXEL
    return torch.cat([xyz, torch.rand(n, 1, generator=g)], dim=1)


def expected_cells(cloud: torch.Tensor, batch: int) -> torch.Tensor:
    """(n, 4) [batch, z, y, x] of each point, computed point by point."""
    zyx = torch.floor(cloud[:, [2, 1, 0]] / VOXEL).long()
    zyx -= zyx.min(dim=0).values
    return torch.cat([torch.full((len(cloud), 1), batch), zyx], dim=1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_point_maps_to_its_own_cell(seed: int) -> None:
    cloud = lattice_cloud(400, seed)
    grid = voxelize([cloud], VOXEL)
    assert grid.coords.dtype == torch.int32 and grid.inverse.dtype == torch.int64
    assert grid.inverse.shape == (400,)
    assert int(grid.inverse.min()) >= 0 and int(grid.inverse.max()) < len(grid.coords)
    # the voxel a point maps to is exactly its cell, and voxel rows are unique, so two points
    # share a voxel if and only if they share a cell
    assert torch.equal(grid.coords[grid.inverse].long(), expected_cells(cloud, 0))
    assert len(torch.unique(grid.coords, dim=0)) == len(grid.coords)
    assert bool((torch.bincount(grid.inverse, minlength=len(grid.coords)) > 0).all())
    assert len(grid.coords) < 400  # the lattice forces sharing


def test_coords_non_negative_and_shape_padded() -> None:
    grid = voxelize([lattice_cloud(300, 3, extent=21, offset=-40.0)], VOXEL)
    assert int(grid.coords[:, 1:].min()) == 0
    for axis, size in enumerate(grid.spatial_shape):
        assert size % SPATIAL_MULTIPLE == 0
        assert int(grid.coords[:, axis + 1].max()) < size


def test_features_are_means_of_scaled_point_features() -> None:
    cloud = lattice_cloud(300, 4)
    grid = voxelize([cloud], VOXEL)
    assert grid.features.shape == (len(grid.coords), 4)
    assert grid.features.dtype == torch.float32
    scaled = cloud.clone()
    scaled[:, :3] /= XYZ_SCALE
    for row in range(len(grid.coords)):
        members = scaled[grid.inverse == row]
        torch.testing.assert_close(grid.features[row], members.mean(dim=0))


def test_batch_of_two_keeps_clouds_apart() -> None:
    first, second = lattice_cloud(300, 5), lattice_cloud(200, 6)
    mirrored = second * torch.tensor([1.0, -1.0, 1.0, 1.0])
    grid = voxelize([first, mirrored], VOXEL)
    alone = [voxelize([first], VOXEL), voxelize([mirrored], VOXEL)]
    assert grid.batch_size == 2 and grid.point_counts == (300, 200)
    assert len(grid.coords) == sum(len(g.coords) for g in alone)
    assert torch.equal(grid.coords[grid.inverse[:300]].long(), expected_cells(first, 0))
    assert torch.equal(grid.coords[grid.inverse[300:]].long(), expected_cells(mirrored, 1))
    for batch, single in enumerate(alone):
        rows = grid.coords[:, 0] == batch
        torch.testing.assert_close(grid.features[rows], single.features)


def test_identical_clouds_in_a_batch_stay_separate() -> None:
    cloud = lattice_cloud(200, 7)
    grid = voxelize([cloud, cloud.clone()], VOXEL)
    assert bool((grid.inverse[:200] != grid.inverse[200:]).all())
    assert torch.equal(grid.coords[grid.inverse[:200], 1:], grid.coords[grid.inverse[200:], 1:])


def test_sparse_tensor_carries_the_grid() -> None:
    grid = voxelize([lattice_cloud(100, 8)], VOXEL)
    tensor = grid.to_sparse_tensor()
    assert torch.equal(tensor.indices, grid.coords)
    assert torch.equal(tensor.features, grid.features)
    assert tensor.spatial_shape == list(grid.spatial_shape) and tensor.batch_size == 1


@pytest.mark.parametrize("cloud, message", [
    (torch.zeros(0, 4), "empty"),
    (torch.zeros(5, 3), "expected"),
    (torch.tensor([[0.0, float("nan"), 0.0, 0.0]]), "NaN"),
])
def test_bad_clouds_are_refused(cloud: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        voxelize([cloud], VOXEL)
