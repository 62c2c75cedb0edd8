"""Weight snapshots and OCL's stochastic restoration.

A snapshot of the source weights serves episodic reset, stochastic restoration and recovery
from a diverged step (restore the last good copy).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch


def snapshot(params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Detached copies of params, each with its own storage."""
    return [p.detach().clone() for p in params]


@torch.no_grad()
def copy_into(params: Sequence[torch.Tensor], values: Sequence[torch.Tensor]) -> None:
    """Overwrite each params[i] in place with values[i] (same shapes)."""
    _check_pairs(params, values)
    for p, v in zip(params, values):
        p.copy_(v)


@torch.no_grad()
def stochastic_restore(
    params: Sequence[torch.Tensor],
    source: Sequence[torch.Tensor],
    prob: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Reset each element of params to its source value with probability prob, in place.

    Applied after every adaptation step (OCL uses prob = 0.01) so that no weight drifts
    far from the source for long. generator: seeds the draws, which are made on each
    parameter's device (a generator on another device seeds one there, so a CPU generator
    never makes a GPU model draw on the CPU). Returns how many elements were reset, as a 0-d
    tensor on the parameters' device (reading it waits for the device, so the engine does
    not); prob = 0 draws nothing and touches nothing.
    """
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"prob must be in [0, 1], got {prob}")
    _check_pairs(params, source)
    if prob == 0.0 or not params:
        return torch.zeros((), dtype=torch.int64)
    restored = torch.zeros((), dtype=torch.int64, device=params[0].device)
    generators: dict[torch.device, torch.Generator | None] = {}
    for p, s in zip(params, source):
        if p.device not in generators:
            generators[p.device] = _generator_on(p.device, generator)
        mask = torch.rand(p.shape, generator=generators[p.device], device=p.device) < prob
        p.copy_(torch.where(mask, s.to(dtype=p.dtype, device=p.device), p))
        restored += mask.sum().to(restored.device)
    return restored


def _generator_on(
    device: torch.device, generator: torch.Generator | None
) -> torch.Generator | None:
    """generator itself if it lives on device, else one there seeded from it (or None)."""
    if generator is None or generator.device == device:
        return generator
    seed = int(torch.randint(0, 2**62, (), generator=generator, device=generator.device))
    return torch.Generator(device=device).manual_seed(seed)


def _check_pairs(params: Sequence[torch.Tensor], others: Sequence[torch.Tensor]) -> None:
    if len(params) != len(others):
        raise ValueError(f"{len(params)} parameters but {len(others)} values")
    for i, (p, o) in enumerate(zip(params, others)):
        if p.shape != o.shape:
            raise ValueError(f"entry {i}: shape {tuple(p.shape)} != {tuple(o.shape)}")
