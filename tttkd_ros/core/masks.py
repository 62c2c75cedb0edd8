"""Per-camera label masks: splat each labeled point into its pixel, the nearest point wins.

Split in two so that a frame's masks need no copy of their own from the GPU: `pixel_depth`
runs on the device with the prediction and travels back with it (core/device/readback.py), and
`splat_mask` draws the mask on the host from the copied-back pixels, depths and labels.
"""
from __future__ import annotations

import numpy as np
import torch

from .frame import MASK_NONE, CameraView
from .geometry import project_view


def pixel_depth(xyz: torch.Tensor, view: CameraView) -> tuple[torch.Tensor, torch.Tensor]:
    """xyz: (N, 3) LiDAR-frame points. Returns the row-major pixel index (N,) int64 each point
    falls in (-1 where the camera does not see it) and its depth (N,) along the optical axis."""
    height, width = view.size
    proj = project_view(xyz, view)
    # Pixel (u, v) integer is the centre of a pixel, so rounding picks the pixel it falls in.
    uv = torch.floor(proj.uv + 0.5).long()
    u = uv[:, 0].clamp(0, width - 1)
    v = uv[:, 1].clamp(0, height - 1)
    pixel = torch.where(proj.visible, v * width + u, torch.full_like(u, -1))
    return pixel, proj.depth


def splat_mask(pixel: np.ndarray, depth: np.ndarray, labels: np.ndarray,
               size: tuple[int, int]) -> np.ndarray:
    """pixel, depth: from `pixel_depth`; labels: (N,) train ids (values >= MASK_NONE are
    skipped); size: (height, width). Returns an H x W uint8 image of class ids, MASK_NONE
    where no labeled point projects."""
    height, width = size
    mask = np.full((height, width), MASK_NONE, dtype=np.uint8)
    keep = (pixel >= 0) & (labels < MASK_NONE)
    if not keep.any():
        return mask
    pixel, depth, labels = pixel[keep], depth[keep], labels[keep]
    # Sort by pixel then depth; the first entry of each pixel is its nearest point.
    order = np.lexsort((depth, pixel))
    first = np.unique(pixel[order], return_index=True)[1]
    chosen = order[first]
    mask.reshape(-1)[pixel[chosen]] = labels[chosen].astype(np.uint8)
    return mask
