"""Choosing the compute device from a user setting."""
from __future__ import annotations

import torch


def resolve_device(setting: str) -> torch.device:
    """'auto' -> CUDA when available else CPU; 'cpu'; 'cuda' or 'cuda:N' (must be available)."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cpu":
        return torch.device("cpu")
    if setting.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"device '{setting}' was requested but CUDA is not available to torch "
                f"(torch {torch.__version__}); set device to 'cpu' or 'auto', or install a "
                "CUDA build of torch and check the GPU driver (nvidia-smi)"
            )
        return torch.device(setting)
    raise ValueError(f"unknown device '{setting}': use auto, cpu, cuda or cuda:N")
