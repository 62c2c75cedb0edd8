"""Fixtures of the tool tests."""
from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread for a module: on a busy 2-core machine torch's OpenMP pool
    spin-waits on the many tiny spconv GEMMs (measured ~3 s instead of ~0.15 s per frame).
    Use with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

