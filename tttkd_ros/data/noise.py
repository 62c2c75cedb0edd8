"""Stateless integer hashing and blocky value noise.

The synthetic town is a pure function of its seed and of world coordinates, so that any
stretch of road can be generated on demand (long drives stream) and every frame is the same
whichever order it is generated in. Randomness that depends on position therefore comes from
hashing integer keys, not from a stateful generator.
"""
from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _splitmix(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def rng_for(*keys: int) -> np.random.Generator:
    """A generator seeded by integer keys; negative keys (segments behind the origin, user
    seeds) are folded onto distinct non-negative ones, as SeedSequence requires."""
    return np.random.default_rng([2 * k if k >= 0 else -2 * k - 1 for k in map(int, keys)])


def hash_u64(*keys: np.ndarray | int) -> np.ndarray:
    """Hash integer keys (broadcast together, negatives allowed) to uint64, elementwise."""
    arrays = np.broadcast_arrays(*[np.atleast_1d(np.asarray(k, dtype=np.int64)) for k in keys])
    h = np.full(arrays[0].shape, _GOLDEN, dtype=np.uint64)
    for key in arrays:
        # uint64 arithmetic wraps, which is what a hash wants.
        h = _splitmix(h + np.ascontiguousarray(key).view(np.uint64) + _GOLDEN)
    return h


def hash01(*keys: np.ndarray | int) -> np.ndarray:
    """Uniform floats in [0, 1) from integer keys; same shape as the broadcast keys."""
    return (hash_u64(*keys) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def block_noise(points: np.ndarray, cell: np.ndarray | float, salt: int) -> np.ndarray:
    """Two octaves of blocky 3D value noise in [0, 1): points (N, 3) -> (N,).

    cell: scalar or (N, 1) cell size per point. Cells of size `cell` and `cell / 3` look like
    panels, pavers or leaves depending on the size, which is enough texture for a DINOv2
    teacher to latch onto.
    """
    coarse = np.floor(points / cell).astype(np.int64)
    fine = np.floor(points * (3.0 / cell)).astype(np.int64)
    a = hash01(salt, coarse[:, 0], coarse[:, 1], coarse[:, 2])
    b = hash01(salt + 1, fine[:, 0], fine[:, 1], fine[:, 2])
    return 0.6 * a + 0.4 * b
