"""The machine a benchmark ran on: hardware, load and the versions that shape the timings."""
from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

import torch

PACKAGES = ("numpy", "timm", "spconv", "cumm", "rclpy")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def package_versions() -> dict[str, str | None]:
    """Installed version per package; spconv/cumm wheels carry a CUDA suffix in the name."""
    found: dict[str, str | None] = dict.fromkeys(PACKAGES)
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        for package in PACKAGES:
            if name == package or name.startswith(package + "-cu"):
                found[package] = dist.version
    return found


def machine_info(device: torch.device) -> dict[str, Any]:
    """Shared machines: the load average at start says whether the figures had the CPU."""
    info: dict[str, Any] = {
        "platform": platform.platform(), "python": platform.python_version(),
        "cpu": cpu_model(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_avg_1_5_15": list(os.getloadavg()),
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "ros_distro": os.environ.get("ROS_DISTRO"),
        "device": str(device), "gpu": None, **package_versions(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
