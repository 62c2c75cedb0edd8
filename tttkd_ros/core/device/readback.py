"""A frame's prediction, brought back from the device in one copy.

Per point: class, confidence and, for each camera, the pixel it falls in (-1 where not seen)
and its depth, which the host needs to draw the masks. They travel as float64 columns of one
(N, 2 + 2 * cameras) tensor: every value is exact in float64 (classes and pixel indices are
integers far below 2**53, confidence and depth are float32), so unpacking gives back the
very numbers computed on the device.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..frame import CameraView
from ..masks import pixel_depth
from .transfer import to_host


@dataclass
class HostPrediction:
    """labels (N,) uint16, confidence (N,) float32; per camera, pixel (N,) int64 (-1 where
    not seen) and depth (N,) float32."""

    labels: np.ndarray
    confidence: np.ndarray
    pixels: list[np.ndarray]
    depths: list[np.ndarray]


def read_back(cls: torch.Tensor, conf: torch.Tensor, xyz: torch.Tensor,
              cameras: list[CameraView]) -> HostPrediction:
    """cls (N,) int64 class ids, conf (N,) float confidences, xyz (N, 3) the points, all on
    one device. One copy comes back (core/device/transfer.to_host)."""
    columns = [cls.double(), conf.double()]
    for view in cameras:
        pixel, depth = pixel_depth(xyz, view)
        columns += [pixel.double(), depth.double()]
    host = to_host(torch.stack(columns, dim=1))
    return HostPrediction(
        labels=host[:, 0].astype(np.uint16),
        confidence=host[:, 1].astype(np.float32),
        pixels=[host[:, 2 + 2 * i].astype(np.int64) for i in range(len(cameras))],
        depths=[host[:, 3 + 2 * i].astype(np.float32) for i in range(len(cameras))],
    )
