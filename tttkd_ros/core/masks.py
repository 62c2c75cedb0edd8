"""Per-camera label masks: splat each labeled point into its pixel, the nearest point wins."""
from __future__ import annotations

import numpy as np
import torch

from .frame import MASK_NONE, CameraView
from .geometry import project_view


def render_mask(xyz: torch.Tensor, labels: np.ndarray, view: CameraView) -> np.ndarray:
    """xyz: (N, 3) LiDAR-frame points; labels: (N,) train ids (values >= MASK_NONE are skipped).

    Returns an H x W uint8 image of class ids, MASK_NONE where no labeled point projects.
    """
    height, width = view.size
    mask = np.full((height, width), MASK_NONE, dtype=np.uint8)
    if xyz.shape[0] == 0:
        return mask
    proj = project_view(xyz, view)
    keep = proj.visible.cpu().numpy() & (labels < MASK_NONE)
    if not keep.any():
        return mask
    # Pixel (u, v) integer is the centre of a pixel, so rounding picks the pixel it falls in.
    uv = np.floor(proj.uv.cpu().numpy()[keep] + 0.5).astype(np.int64)
    depth = proj.depth.cpu().numpy()[keep]
    vis_labels = labels[keep]
    u = np.clip(uv[:, 0], 0, width - 1)
    v = np.clip(uv[:, 1], 0, height - 1)
    pixel = v * width + u
    # Sort by pixel then depth; the first entry of each pixel is its nearest point.
    order = np.lexsort((depth, pixel))
    first = np.unique(pixel[order], return_index=True)[1]
    chosen = order[first]
    mask.reshape(-1)[pixel[chosen]] = vis_labels[chosen].astype(np.uint8)
    return mask
