"""What every message converter shares: the error type and the byte / message-class helpers.

Messages come from two libraries with the same field names: rclpy (`data` is an
array.array('B')) and rosbags (dataclasses whose `data` is a numpy uint8 array). Nothing here
imports a message package at module level, so the offline tools never need rclpy.
"""
from __future__ import annotations

import array
import dataclasses
import importlib
from typing import Any

import numpy as np


class ConversionError(ValueError):
    """A message that cannot be converted; the text names the message and the defect."""


def message_bytes(data: Any, what: str) -> np.ndarray:
    """The `data` field of a message as a 1-D uint8 array (a view where the input allows).

    Accepts bytes, bytearray, array.array('B'), memoryview and numpy uint8 arrays.
    """
    if isinstance(data, np.ndarray):
        buf = data
    else:
        try:
            buf = np.frombuffer(data, dtype=np.uint8)
        except TypeError:
            buf = np.asarray(data)
    if buf.dtype != np.uint8:
        raise ConversionError(f"{what} data must be bytes or uint8, got dtype {buf.dtype}")
    return np.ascontiguousarray(buf).reshape(-1)


def data_field(msg_cls: type, raw: np.ndarray) -> Any:
    """`raw` (1-D uint8) in the form `msg_cls` stores in its `data` field.

    rosbags message classes are dataclasses and hold a numpy array; rclpy ones hold an
    array.array('B'), which their setter accepts without a per-byte check.
    """
    if dataclasses.is_dataclass(msg_cls):
        return np.array(raw, dtype=np.uint8, copy=True).reshape(-1)
    return array.array("B", np.ascontiguousarray(raw, dtype=np.uint8).tobytes())


def resolve_msg_cls(msg_cls: type | None, name: str) -> type:
    """`msg_cls`, or `sensor_msgs.msg.<name>` imported only now (rclpy's message package)."""
    if msg_cls is not None:
        return msg_cls
    return getattr(importlib.import_module("sensor_msgs.msg"), name)
