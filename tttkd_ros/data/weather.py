"""Fog and rain: what droplets do to LiDAR returns and to camera images.

LiDAR: the two-way extinction exp(-2 a r) dims returns and loses some of them, wet surfaces
lose more, and droplets close to the sensor produce spurious near returns. Those spurious
points are labelled raw id 1 ("outlier", which the learning map sends to unlabeled), so they
are ignored by training and scoring exactly like the dataset's own noise points.
Camera: haze blends each pixel towards the haze colour with depth.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OUTLIER = 1  # raw SemanticKITTI id of spurious returns
_SKY_DEPTH = 300.0


@dataclass(frozen=True)
class WeatherConfig:
    scatter_prob: float = 0.0  # per ray, chance of a droplet return before the surface
    scatter_range: float = 8.0  # metres, mean range of droplet returns (exponential)
    extinction: float = 0.0  # 1/m; returns dim and thin out as exp(-2 extinction range)
    wet_dropout: float = 0.0  # extra chance a surface return is lost (wet, specular)
    visibility: float = 600.0  # metres; camera haze reaches 1 - 1/e there
    haze_color: tuple[float, float, float] = (0.78, 0.80, 0.83)


def lidar_weather(
    t: np.ndarray, labels: np.ndarray, intensity: np.ndarray, weather: WeatherConfig,
    min_range: float, rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply weather to all R rays of a sweep.

    t: (R,) range of the surface return (inf = none); labels (R,) uint32; intensity (R,).
    Returns new (t, labels, intensity); a lost return gets t = inf.
    """
    # Draw for every ray in a fixed order so the result does not depend on what was hit.
    u_loss, u_wet, u_scatter = rng.random(t.shape), rng.random(t.shape), rng.random(t.shape)
    r_scatter = rng.exponential(weather.scatter_range, t.shape)
    u_level = rng.random(t.shape)
    transmission = np.exp(-2.0 * weather.extinction * np.where(np.isfinite(t), t, 0.0))
    lost = (u_loss > transmission) | (u_wet < weather.wet_dropout)
    t = np.where(lost, np.inf, t)
    intensity = intensity * transmission
    droplet = (u_scatter < weather.scatter_prob) & (r_scatter < t) & (r_scatter >= min_range)
    t = np.where(droplet, r_scatter, t)
    labels = np.where(droplet, np.uint32(OUTLIER), labels).astype(np.uint32)
    intensity = np.where(droplet, 0.06 * u_level, intensity)
    return t, labels, intensity


def haze(rgb: np.ndarray, depth: np.ndarray, weather: WeatherConfig) -> np.ndarray:
    """Blend (R, 3) colours towards the haze colour by depth (R,); sky (inf) counts as
    _SKY_DEPTH metres of air, so a clear sky stays blue and fog greys it out."""
    if not np.isfinite(weather.visibility):
        return rgb
    far = np.where(np.isfinite(depth), depth, _SKY_DEPTH)
    a = (1.0 - np.exp(-far / weather.visibility))[:, None]
    return rgb * (1.0 - a) + np.asarray(weather.haze_color) * a
