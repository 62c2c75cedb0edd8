"""Suite-wide fixtures: DDS tests run only inside a loopback-only network namespace."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest


def loopback_only_reason() -> str | None:
    """None when this process can only reach loopback; otherwise why DDS tests must skip."""
    names = sorted(name for _, name in socket.if_nameindex())
    if names != ["lo"]:
        return os.environ.get(
            "TTTKD_NETNS_SKIP_REASON",
            f"not inside a loopback-only network namespace (interfaces: {', '.join(names)});"
            " run the suite with `sh test/run.sh`",
        )
    if os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") != "LOCALHOST":
        return "ROS_AUTOMATIC_DISCOVERY_RANGE is not LOCALHOST; run the suite with `sh test/run.sh`"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = loopback_only_reason()
    if reason is None:
        return
    for item in items:
        if "dds" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init `tiny` model saved with save_checkpoint (19 SemanticKITTI classes, the
    ViT-S/14 teacher's 384-d features)."""
    import torch

    from tttkd_ros.core.config import ModelConfig
    from tttkd_ros.core.labels import CLASS_NAMES, palette_rgb
    from tttkd_ros.core.model.checkpoint import save_checkpoint
    from tttkd_ros.core.model.segmentation import build_model

    torch.manual_seed(0)
    cfg = ModelConfig(backbone="tiny", feat_dim=384)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, build_model(cfg, "cpu"), cfg, class_names=CLASS_NAMES,
                    palette=palette_rgb(), teacher_name="vit_small_patch14_dinov2")
    return path
