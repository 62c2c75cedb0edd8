"""The camera's own imperfections, applied to the rendered radiance: exposure, gamma, optical
blur and sensor noise, then 8-bit quantisation. These are the camera-side shifts that a
robust teacher should shrug off."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ImagingConfig:
    exposure: float = 1.0  # gain before clipping (< 1 darker, > 1 over-exposed)
    gamma: float = 1.0  # output = (exposure * value) ** gamma
    blur_sigma: float = 0.0  # Gaussian blur in pixels
    noise_std: float = 1.5  # sensor noise in 8-bit units


def develop(rgb: np.ndarray, config: ImagingConfig, rng: np.random.Generator) -> np.ndarray:
    """H x W x 3 float RGB (about 0..1) -> H x W x 3 uint8."""
    img = np.clip(config.exposure * rgb, 0.0, 1.0) ** config.gamma
    if config.blur_sigma > 0:
        img = gaussian_blur(img, config.blur_sigma)
    img = img * 255.0 + config.noise_std * rng.standard_normal(img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of H x W x C with edge padding."""
    radius = max(1, int(np.ceil(3.0 * sigma)))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    for axis in (0, 1):
        pad = [(0, 0)] * img.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(img, pad, mode="edge")
        n = img.shape[axis]
        img = sum(w * np.take(padded, np.arange(k, k + n), axis=axis)
                  for k, w in enumerate(kernel))
    return img
