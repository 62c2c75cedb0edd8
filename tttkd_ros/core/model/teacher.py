"""The frozen DINOv2 teacher phi: an RGB image -> its patch-feature grid (the KD targets)."""
from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import os
import warnings
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from timm.models import load_state_dict

from ..config import TEACHER_DIMS, TeacherConfig
from ..device.transfer import host_copy, to_device

# Keys of Meta's original DINOv2 files that timm's model does not have (the iBOT mask token).
_FOREIGN_KEYS = ("mask_token",)


def resized_size(height: int, width: int, target_height: int, patch: int = 14) -> tuple[int, int]:
    """The teacher's input size for an image: height `target_height` rounded to a multiple of
    `patch`, width keeping the aspect ratio, also rounded to a multiple of `patch` (>= patch)."""
    h = max(patch, math.floor(target_height / patch + 0.5) * patch)
    w = max(patch, math.floor(width * h / height / patch + 0.5) * patch)
    return h, w


def resized_unit_image(image: np.ndarray | torch.Tensor, height: int, patch: int,
                       device: torch.device | str = "cpu") -> torch.Tensor:
    """H x W x 3 uint8 RGB -> (1, 3, h, w) float32 in [0, 1], (h, w) = `resized_size`."""
    uint8 = np.uint8 if isinstance(image, np.ndarray) else torch.uint8
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != uint8:
        raise ValueError(f"teacher input must be H x W x 3 uint8 RGB, got "
                         f"{tuple(image.shape)} {image.dtype}")
    device = torch.device(device)
    if isinstance(image, np.ndarray):
        # a copy, so read-only arrays (bag or message buffers) are fine; page-locked for a GPU
        # so that the upload below does not block
        image = host_copy(image, pinned=device.type == "cuda")
    x = to_device(image, device).permute(2, 0, 1).unsqueeze(0).float() / 255.0
    size = resized_size(x.shape[2], x.shape[3], height, patch)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def _describe_mismatch(state: dict, expected: dict) -> str:
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                for k in expected if k in state and state[k].shape != expected[k].shape]
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected),
                        ("with another shape", reshaped)):
        if keys:
            parts.append(f"{len(keys)} {label} (e.g. {'; '.join(keys[:3])})")
    return ", ".join(parts)


@functools.lru_cache(maxsize=16)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def teacher_fingerprint(cfg: TeacherConfig) -> str:
    """What the teacher's weights are, to tell two teachers apart: 'random:SEED' (the seeded
    random init), 'hub', or 'sha256:HEX' of the local weights file (read once per file
    version)."""
    if cfg.weights == "":
        return f"random:{cfg.seed}"
    if cfg.weights == "hub":
        return "hub"
    path = Path(cfg.weights)
    if not path.is_file():
        raise FileNotFoundError(f"teacher weights file not found: {path}")
    stat = path.stat()
    return "sha256:" + _file_sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def load_teacher_weights(model: torch.nn.Module, path: str, name: str) -> None:
    """Load a local .pth / .safetensors state dict into `model` (strict, no resampling).

    Raises FileNotFoundError for a missing file and ValueError, saying what to do, for a
    file that is unreadable or holds weights of another model.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"teacher weights file not found: {path}")
    fix = (f"Use a state dict saved from timm.create_model({name!r}) (.pth or .safetensors) "
           "or Meta's matching DINOv2 *_pretrain.pth, or set teacher.name to the model the "
           "file is for.")
    try:
        state = load_state_dict(path)
    except Exception as err:  # torch.load / safetensors raise many types for a bad file
        raise ValueError(f"{path} is not a readable weights file ({err}). {fix}") from err
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors. {fix}")
    state = {k: v for k, v in state.items() if k not in _FOREIGN_KEYS}
    mismatch = _describe_mismatch(state, model.state_dict())
    if mismatch:
        raise ValueError(f"{path} does not match the teacher {name}: {mismatch}. {fix}")
    model.load_state_dict(state, strict=True)


class DinoTeacher:
    """Frozen DINOv2 ViT (timm) in eval mode; never trained, never in an optimizer.

    Weights (`cfg.weights`): a local file path; "hub" (timm's pretrained download); or ""
    for a seeded random initialisation (`random_weights = True`, warned about once), which
    lets everything run offline but gives targets with no semantics.
    """

    def __init__(self, cfg: TeacherConfig, device: torch.device | str) -> None:
        if cfg.name not in TEACHER_DIMS:
            raise ValueError(f"unknown teacher {cfg.name!r}; choose one of {sorted(TEACHER_DIMS)}")
        self.name = cfg.name
        self.image_height = cfg.image_height
        self.device = torch.device(device)
        self.random_weights = cfg.weights == ""
        kwargs = {"num_classes": 0, "dynamic_img_size": True}
        if cfg.weights == "hub":
            model = timm.create_model(cfg.name, pretrained=True, **kwargs)
        else:
            with torch.random.fork_rng(devices=[]):  # seed the init, leave the caller's RNG
                torch.manual_seed(cfg.seed)
                model = timm.create_model(cfg.name, pretrained=False, **kwargs)
            if self.random_weights:
                warnings.warn(
                    f"DINOv2 teacher {cfg.name} has RANDOM weights (teacher.weights is empty): "
                    "its features carry no semantics, so distillation only tests the plumbing. "
                    "Set teacher.weights to a local DINOv2 file or to 'hub'.", stacklevel=2)
            else:
                load_teacher_weights(model, cfg.weights, cfg.name)
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.feat_dim: int = model.num_features
        self.patch_size: int = model.patch_embed.patch_size[0]
        stats = model.pretrained_cfg
        self._mean = torch.tensor(stats["mean"], device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(stats["std"], device=self.device).view(1, 3, 1, 1)
        if self.image_height <= 0:
            raise ValueError("teacher image_height 0 means the checkpoint's: resolve it "
                             "(core.loading.resolved_teacher) or give a height")

    def preprocess(self, image: np.ndarray | torch.Tensor) -> torch.Tensor:
        """H x W x 3 uint8 RGB -> (1, 3, h, w) float32 ImageNet-normalised, resized by
        `resized_size`, on the teacher's device."""
        x = resized_unit_image(image, self.image_height, self.patch_size, self.device)
        return (x - self._mean) / self._std

    # no_grad rather than inference_mode: the targets enter the student's loss, and autograd
    # refuses to save inference tensors for backward
    @torch.no_grad()
    def features(self, image: np.ndarray | torch.Tensor) -> torch.Tensor:
        """H x W x 3 uint8 RGB -> patch features (D, h / 14, w / 14) float32, where (h, w) is
        `resized_size(H, W, image_height)`; the class token is dropped."""
        x = self.preprocess(image)
        autocast = contextlib.nullcontext()
        if self.device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            autocast = torch.autocast("cuda", dtype=dtype)
        with autocast:
            tokens = self.model.forward_features(x)  # (1, prefix + h * w, D)
        patches = tokens[0, self.model.num_prefix_tokens:].float()  # (h * w, D), row-major
        rows, cols = x.shape[2] // self.patch_size, x.shape[3] // self.patch_size
        return patches.T.reshape(self.feat_dim, rows, cols).contiguous()
