"""A camera image with a predicted class mask blended in, written as PNG."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tttkd_ros.core.frame import MASK_NONE


def grow_mask(mask: np.ndarray, radius: int) -> np.ndarray:
    """Fill MASK_NONE pixels within `radius` (Chebyshev) of a labeled pixel with its class,
    so that sparse LiDAR splats read as regions. mask: H x W uint8; labeled pixels keep
    their class; where several neighbours compete, the nearest offset in scan order wins."""
    out = mask.copy()
    height, width = mask.shape
    offsets = sorted(((dy, dx) for dy in range(-radius, radius + 1)
                      for dx in range(-radius, radius + 1) if (dy, dx) != (0, 0)),
                     key=lambda o: max(abs(o[0]), abs(o[1])))
    for dy, dx in offsets:
        # shifted[y, x] = mask[y - dy, x - dx] where that pixel exists
        shifted = np.full_like(mask, MASK_NONE)
        shifted[max(dy, 0):height + min(dy, 0), max(dx, 0):width + min(dx, 0)] = \
            mask[max(-dy, 0):height + min(-dy, 0), max(-dx, 0):width + min(-dx, 0)]
        fill = (out == MASK_NONE) & (shifted != MASK_NONE)
        out[fill] = shifted[fill]
    return out


def blend_mask(image: np.ndarray, mask: np.ndarray, palette: np.ndarray, alpha: float = 0.6,
               radius: int = 1) -> np.ndarray:
    """image: H x W x 3 uint8 RGB; mask: H x W uint8 class ids (MASK_NONE = none); palette:
    (C, 3) uint8. Returns H x W x 3 uint8: alpha * class colour + (1 - alpha) * image where
    the (grown) mask has a class below C, the image elsewhere."""
    if image.shape[:2] != mask.shape:
        raise ValueError(f"mask {mask.shape} does not match image {image.shape[:2]}")
    grown = grow_mask(mask, radius) if radius > 0 else mask
    labeled = grown < len(palette)
    out = image.astype(np.float32)
    colors = palette[grown[labeled]].astype(np.float32)
    out[labeled] = alpha * colors + (1.0 - alpha) * out[labeled]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def write_overlay(path: str | Path, image: np.ndarray, mask: np.ndarray, palette: np.ndarray,
                  alpha: float = 0.6, radius: int = 1) -> Path:
    """Blend (see `blend_mask`) and save as PNG; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(blend_mask(image, mask, palette, alpha, radius)).save(path)
    return path
