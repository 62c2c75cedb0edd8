"""Model timings on this machine: voxelize, forward, forward + backward, full SGD step.

Run `python -m tttkd_ros.tools.bench.model [--points 20000 120000] [--backbones tiny base]`.
The cloud is a synthetic street (ground disc with LiDAR-like 1/r density plus box-shaped
objects) within +-50 m. Each figure is the median of `--repeats` runs after one warm-up run
(the first optimizer step of a process also pays a one-off import, excluded this way).
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from tttkd_ros.core.config import ModelConfig
from tttkd_ros.core.model.segmentation import SegModel, build_model, param_groups
from tttkd_ros.core.model.voxelize import VoxelGrid, voxelize


def street_cloud(n: int, seed: int = 0, radius: float = 50.0) -> torch.Tensor:
    """(n, 4) x, y, z, intensity: 70 % ground, 30 % on the faces of 40 random boxes."""
    g = torch.Generator().manual_seed(seed)
    n_ground = int(0.7 * n)
    r = 2.0 + (radius - 2.0) * torch.rand(n_ground, generator=g)  # uniform r: 1/r density
    phi = 2 * torch.pi * torch.rand(n_ground, generator=g)
    ground = torch.stack([r * phi.cos(), r * phi.sin(),
                          -1.7 + 0.05 * torch.randn(n_ground, generator=g)], dim=1)
    n_box = n - n_ground
    centres = (torch.rand(40, 3, generator=g) * 2 - 1) * (radius - 5.0)
    sizes = 1.5 + 8.5 * torch.rand(40, 3, generator=g)
    centres[:, 2] = -1.7 + sizes[:, 2] / 2
    which = torch.randint(0, 40, (n_box,), generator=g)
    local = torch.rand(n_box, 3, generator=g) - 0.5
    face_axis = torch.randint(0, 3, (n_box,), generator=g)
    local[torch.arange(n_box), face_axis] = torch.where(
        torch.rand(n_box, generator=g) < 0.5, -0.5, 0.5)  # push each point onto a face
    boxes = centres[which] + local * sizes[which]
    xyz = torch.cat([ground, boxes])
    return torch.cat([xyz, torch.rand(n, 1, generator=g)], dim=1)


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def loss_of(model: SegModel, grid: VoxelGrid, target: torch.Tensor) -> torch.Tensor:
    """A KD-shaped loss (1 - cosine to fixed targets) plus an entropy term on the logits."""
    out = model(grid)
    kd = 1.0 - F.cosine_similarity(out.feat2d, target, dim=1).mean()
    prob = out.logits.softmax(dim=1)
    return kd - (prob * prob.clamp_min(1e-8).log()).sum(dim=1).mean()


def bench_one(backbone: str, points: int, repeats: int, batch: int) -> dict:
    cfg = ModelConfig(backbone=backbone)
    torch.manual_seed(0)
    model = build_model(cfg, "cpu")
    clouds = [street_cloud(points, seed=i) for i in range(batch)]
    grid = voxelize(clouds, cfg.voxel_size)
    target = torch.randn(batch * points, cfg.feat_dim)
    opt = torch.optim.SGD(param_groups(model, "backbone"), lr=1e-4, momentum=0.9)

    def forward() -> None:
        model.eval()
        with torch.no_grad():
            model(grid)

    def forward_backward() -> None:
        model.train()
        model.zero_grad(set_to_none=True)
        loss_of(model, grid, target).backward()

    def step() -> None:
        forward_backward()
        opt.step()

    return {
        "backbone": backbone, "points": points * batch, "voxels": len(grid.coords),
        "voxelize_ms": median_ms(lambda: voxelize(clouds, cfg.voxel_size), repeats),
        "forward_ms": median_ms(forward, repeats),
        "fwd_bwd_ms": median_ms(forward_backward, repeats),
        "step_ms": median_ms(step, repeats),
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, nargs="+", default=[20_000, 120_000])
    parser.add_argument("--backbones", nargs="+", default=["tiny", "base"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1, help="clouds per pass (OCL uses 2)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = default")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, CPU, {torch.get_num_threads()} threads, "
          f"batch {args.batch}, median of {args.repeats}")
    print(f"{'backbone':>8} {'points':>7} {'voxels':>7} {'params M':>8} {'voxelize':>9} "
          f"{'forward':>9} {'fwd+bwd':>9} {'SGD step':>9}  (ms)")
    for backbone in args.backbones:
        for points in args.points:
            r = bench_one(backbone, points, args.repeats, args.batch)
            print(f"{r['backbone']:>8} {r['points']:>7} {r['voxels']:>7} {r['params_m']:>8.2f} "
                  f"{r['voxelize_ms']:>9.1f} {r['forward_ms']:>9.1f} {r['fwd_bwd_ms']:>9.1f} "
                  f"{r['step_ms']:>9.1f}", flush=True)


if __name__ == "__main__":
    main()
