"""On-disk cache of teacher feature grids, so training runs the frozen teacher once per image."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch


class FeatureCache:
    """Wraps a teacher (`features(image) -> (D, h, w)`); grids are stored as float16 files
    keyed by the image bytes and the teacher's identity (name, input height, weights)."""

    def __init__(self, teacher, root: str | Path, teacher_key: str) -> None:
        self.teacher = teacher
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.teacher_key = teacher_key
        self.hits = 0
        self.misses = 0

    def _path(self, image: np.ndarray) -> Path:
        digest = hashlib.sha1(self.teacher_key.encode())
        digest.update(str(image.shape).encode())
        digest.update(np.ascontiguousarray(image).tobytes())
        return self.root / f"{digest.hexdigest()}.pt"

    def features(self, image: np.ndarray) -> torch.Tensor:
        """Same contract as the teacher's: (D, h, w) float32 on the teacher's device."""
        path = self._path(image)
        if path.exists():
            self.hits += 1
            grid = torch.load(path, weights_only=True)
        else:
            self.misses += 1
            grid = self.teacher.features(image).half().cpu()
            tmp = path.with_suffix(".tmp")
            torch.save(grid, tmp)
            tmp.replace(path)  # atomic: a killed run never leaves a truncated entry
        return grid.float().to(self.teacher.device)
