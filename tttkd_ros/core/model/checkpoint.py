"""One-file source checkpoints: model config, labels, palette, teacher and weights.

The file is a plain dict of tensors, lists, dicts, strings and numbers, so it loads with
`torch.load(weights_only=True)` and needs nothing else to rebuild the model.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import ModelConfig
from ..intensity import IntensityReference
from .segmentation import SegModel, build_model

FORMAT = "tttkd_ros.checkpoint"
VERSION = 1
_PLAIN = (str, int, float, bool, type(None), torch.Tensor)
# extra's key of the training data's class shares (core/adapt/class_mix.py)
CLASS_SHARES_KEY = "class_shares"
_REQUIRED = ("model_config", "class_names", "palette", "teacher_name", "feat_dim", "state_dict")


@dataclass
class LoadedCheckpoint:
    """A checkpoint's contents; `model` is on the requested device, in eval mode."""

    model: SegModel
    cfg: ModelConfig
    class_names: list[str]
    palette: np.ndarray  # (C, 3) uint8 RGB
    teacher_name: str
    feat_dim: int
    extra: dict = field(default_factory=dict)

    @property
    def teacher(self) -> dict | None:
        """The teacher the model was trained with, as `tttkd train` records it: name, weights
        (teacher_fingerprint), image_height, and kd_loss (the distillation loss it reached);
        None for checkpoints from before it was recorded."""
        return self.extra.get("teacher")

    @property
    def intensity(self) -> IntensityReference:
        """The intensities the model was trained on (`tttkd train` records them; 0..1 for
        checkpoints from before)."""
        return IntensityReference.from_dict(self.extra.get("intensity"))

    @property
    def class_shares(self) -> torch.Tensor | None:
        """(C,) share of each class among the training data's labelled voxels (`tttkd train`
        records them); None for checkpoints from before, or shares that do not fit."""
        shares = self.extra.get(CLASS_SHARES_KEY)
        if shares is None or len(shares) != len(self.class_names):
            return None
        shares = torch.tensor(shares, dtype=torch.float32)
        usable = bool(torch.isfinite(shares).all() and (shares >= 0).all() and shares.sum() > 0)
        return shares / shares.sum() if usable else None


def _check_plain(value: object, where: str) -> None:
    """Raise TypeError where `value` holds something weights_only loading would refuse."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where} has a non-string key {key!r}")
            _check_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif not isinstance(value, _PLAIN):
        raise TypeError(f"{where} is a {type(value).__name__}; checkpoints hold only tensors, "
                        "lists, dicts, str and numbers")


def save_checkpoint(path: str | os.PathLike, model: SegModel, cfg: ModelConfig, *,
                    class_names: list[str], palette: np.ndarray, teacher_name: str,
                    extra: dict | None = None) -> None:
    """Write the checkpoint atomically (a crash never leaves a half-written file at `path`)."""
    palette = np.asarray(palette)
    if len(class_names) != cfg.num_classes:
        raise ValueError(f"{len(class_names)} class names for {cfg.num_classes} classes")
    if palette.shape != (cfg.num_classes, 3) or palette.dtype != np.uint8:
        raise ValueError(f"palette must be ({cfg.num_classes}, 3) uint8, "
                         f"got {palette.shape} {palette.dtype}")
    extra = dict(extra or {})
    _check_plain(extra, "extra")
    payload = {
        "format": FORMAT, "version": VERSION, "model_config": cfg.to_dict(),
        "class_names": list(class_names), "palette": torch.from_numpy(palette.copy()),
        "teacher_name": teacher_name, "feat_dim": cfg.feat_dim,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _summary(payload: dict) -> dict:
    """The checkpoint's comparable facts: config fields plus class names and teacher."""
    return {**payload["model_config"], "class_names": payload["class_names"],
            "teacher_name": payload["teacher_name"], "feat_dim": payload["feat_dim"]}


def _check_expect(path: Path, payload: dict, expect: dict) -> None:
    have = _summary(payload)
    unknown = sorted(set(expect) - set(have))
    if unknown:
        raise ValueError(f"cannot check {unknown} against {path}: known keys are {sorted(have)}")
    diffs = [f"{k}: checkpoint has {have[k]!r}, expected {v!r}"
             for k, v in expect.items() if have[k] != v]
    if diffs:
        raise ValueError(f"checkpoint {path} does not fit this setup: " + "; ".join(diffs))


def load_checkpoint(path: str | os.PathLike, device: torch.device | str,
                    expect: dict | None = None) -> LoadedCheckpoint:
    """Load a checkpoint written by `save_checkpoint` onto `device`.

    expect: facts the caller relies on, e.g. {"num_classes": 19, "feat_dim": 384,
    "teacher_name": ...} (keys: ModelConfig fields, class_names, teacher_name, feat_dim);
    every mismatch is listed in one ValueError.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path} (make one with `tttkd train "
                                f"--data DIR --out {path}`)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types for a damaged or foreign file
        raise ValueError(f"{path} is not a tttkd checkpoint: {err}") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a tttkd checkpoint: no {FORMAT!r} marker")
    if payload.get("version") != VERSION:
        raise ValueError(f"{path} is not a tttkd checkpoint: version {payload.get('version')}"
                         f", this code reads version {VERSION}")
    missing = [k for k in _REQUIRED if k not in payload]
    if missing:
        raise ValueError(f"{path} is not a tttkd checkpoint: it lacks {missing}")
    if expect:
        _check_expect(path, payload, expect)
    cfg = ModelConfig.from_dict(payload["model_config"])
    model = build_model(cfg, device)
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path} is not a tttkd checkpoint: weights do not fit its config "
                         f"({err})") from err
    return LoadedCheckpoint(
        model=model.eval(), cfg=cfg, class_names=list(payload["class_names"]),
        palette=payload["palette"].numpy().astype(np.uint8), teacher_name=payload["teacher_name"],
        feat_dim=int(payload["feat_dim"]), extra=payload.get("extra", {}))
