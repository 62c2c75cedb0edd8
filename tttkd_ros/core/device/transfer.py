"""Host <-> device copies of the per-frame path.

In: a frame's data is copied once into a new host tensor, page-locked when it is bound for a
GPU, so that `.to(device, non_blocking=True)` is a true asynchronous DMA on the caller's
stream rather than a staged, blocking copy. Out: one tensor per frame comes back with a
single non_blocking copy into page-locked memory, and the host waits for that copy's event,
not for the whole device. torch's caching host allocator keeps a page-locked block from being
reused until the copies queued on it are done.
"""
from __future__ import annotations

import numpy as np
import torch


def host_copy(array: np.ndarray, pinned: bool = False) -> torch.Tensor:
    """A copy of `array` in a new host tensor (read-only sources are fine); page-locked when
    `pinned` (needs CUDA)."""
    dtype = torch.from_numpy(np.empty(0, dtype=array.dtype)).dtype
    out = torch.empty(array.shape, dtype=dtype, pin_memory=pinned)
    out.numpy()[...] = array
    return out


def to_device(host: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`host` on `device`, queued on the current stream (the same tensor when on the host)."""
    return host.to(device, non_blocking=True)


def to_host(tensor: torch.Tensor) -> np.ndarray:
    """The values of `tensor` as a numpy array, copied back with one non_blocking copy into
    page-locked memory when on CUDA, waited for on an event of the current stream."""
    if not tensor.is_cuda:
        return tensor.detach().numpy()
    out = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    out.copy_(tensor.detach(), non_blocking=True)
    done = torch.cuda.Event()
    done.record()
    done.synchronize()
    return out.numpy()
