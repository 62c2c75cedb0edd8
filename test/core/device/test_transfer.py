"""Host <-> device copies of the per-frame path (core/device/transfer.py), and the stream helper on
CPU. The page-locked path needs a GPU and runs only where there is one."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tttkd_ros.core.device.streams import EngineStreams
from tttkd_ros.core.device.transfer import host_copy, to_device, to_host

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (torch.cuda.is_available() is False)")


def test_host_copy_owns_its_data_and_accepts_read_only_arrays() -> None:
    source = np.arange(12, dtype=np.float32).reshape(3, 4)
    source.flags.writeable = False
    copy = host_copy(source)
    assert copy.dtype == torch.float32 and tuple(copy.shape) == (3, 4)
    np.testing.assert_array_equal(copy.numpy(), source)
    writable = source.copy()
    copy = host_copy(writable)
    writable[0, 0] = 99.0  # the caller reusing its buffer must not change the engine's copy
    assert float(copy[0, 0]) == 0.0
    assert host_copy(np.zeros((2, 2, 3), dtype=np.uint8)).dtype == torch.uint8


def test_cpu_transfers_do_not_copy_again() -> None:
    host = host_copy(np.ones((5, 4), dtype=np.float32))
    assert to_device(host, torch.device("cpu")) is host
    back = to_host(host)
    assert back.dtype == np.float32 and np.shares_memory(back, host.numpy())


def test_cpu_streams_run_blocks_inline() -> None:
    streams = EngineStreams(torch.device("cpu"))
    assert streams.teacher is None and streams.adapt is None and streams.infer is None
    ran = []
    with streams.on(streams.adapt, uses=[torch.zeros(1)]):
        ran.append(True)
    assert ran == [True]


@needs_cuda
def test_pinned_round_trip_through_the_gpu() -> None:
    source = np.random.default_rng(0).normal(size=(1000, 4)).astype(np.float32)
    host = host_copy(source, pinned=True)
    assert host.is_pinned()
    device = to_device(host, torch.device("cuda"))
    assert device.is_cuda
    np.testing.assert_array_equal(to_host(device * 2), source * 2)


@needs_cuda
def test_a_block_on_another_stream_is_ordered_after_the_callers_work() -> None:
    streams = EngineStreams(torch.device("cuda"))
    with streams.on(streams.infer):
        x = torch.full((4096, 4096), 1.0, device="cuda")
        with streams.on(streams.adapt, uses=[x]):
            y = x @ x  # must see x filled, and the caller must see y done
        z = y.sum()
        assert float(z) == 4096.0 * 4096 * 4096
