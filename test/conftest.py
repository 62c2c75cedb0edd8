"""Suite-wide fixtures: DDS tests run only inside a loopback-only network namespace."""
from __future__ import annotations

import os
import socket

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
