"""Property tests: random layouts and random bytes give the right array or ConversionError.

The reference decoder here reads one value at a time with `struct`, and the validity rules
are restated from the documented rejections, independently of the code under test.
"""
from __future__ import annotations

import array
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("sensor_msgs.msg", reason="rclpy's sensor_msgs is not installed")
from sensor_msgs.msg import Image, PointCloud2, PointField

from tttkd_ros.ros.convert import ConversionError, image_to_rgb, pointcloud2_to_xyzi

STRUCT = {1: "b", 2: "B", 3: "h", 4: "H", 5: "i", 6: "I", 7: "f", 8: "d"}
SIZE = {t: struct.calcsize(c) for t, c in STRUCT.items()}
COORD_TYPES, INTENSITY_TYPES = {7, 8}, {2, 4, 7, 8}
SETTINGS = settings(max_examples=150, deadline=None)

Field = tuple[str, int, int, int]  # name, datatype, offset, count


def cloud_msg(fields: list[Field], point_step: int, height: int, width: int, row_step: int,
              big: bool, raw: bytes) -> PointCloud2:
    msg = PointCloud2(height=height, width=width, is_bigendian=big, point_step=point_step,
                      row_step=row_step, is_dense=True)
    msg.fields = [PointField(name=n, datatype=t, offset=o, count=c) for n, t, o, c in fields]
    msg.data = array.array("B", raw)
    return msg


def layout_is_valid(fields: list[Field], point_step: int, height: int, width: int,
                    row_step: int, raw: bytes) -> bool:
    names = [f[0] for f in fields]
    if any(names.count(n) != 1 for n in "xyz") or names.count("intensity") > 1:
        return False
    for name, datatype, offset, count in fields:
        if name in ("x", "y", "z") and datatype not in COORD_TYPES:
            return False
        if name == "intensity" and datatype not in INTENSITY_TYPES:
            return False
        if not 0 <= offset < point_step:
            return False
        if datatype in SIZE and offset + SIZE[datatype] * max(count, 1) > point_step:
            return False
    return row_step >= width * point_step and len(raw) == row_step * height


def reference_points(fields: list[Field], point_step: int, height: int, width: int,
                     row_step: int, big: bool, raw: bytes) -> np.ndarray:
    by_name = {f[0]: f for f in fields}
    values = np.zeros((height * width, 4), dtype=np.float64)
    for row in range(height):
        for col in range(width):
            base = row * row_step + col * point_step
            for column, name in enumerate(("x", "y", "z", "intensity")):
                if name in by_name:
                    _, datatype, offset, _ = by_name[name]
                    fmt = (">" if big else "<") + STRUCT[datatype]
                    values[row * width + col, column] = struct.unpack_from(fmt, raw,
                                                                           base + offset)[0]
    with np.errstate(over="ignore"):
        return values.astype(np.float32)


def check_cloud(fields: list[Field], point_step: int, height: int, width: int, row_step: int,
                big: bool, raw: bytes) -> None:
    msg = cloud_msg(fields, point_step, height, width, row_step, big, raw)
    valid = layout_is_valid(fields, point_step, height, width, row_step, raw)
    try:
        cloud = pointcloud2_to_xyzi(msg)
    except ConversionError as err:
        assert not valid, f"valid cloud rejected: {err}"
        assert str(err).startswith("PointCloud2")
        return
    assert valid, "invalid cloud accepted"
    want = reference_points(fields, point_step, height, width, row_step, big, raw)
    np.testing.assert_array_equal(cloud.points, want)
    assert cloud.has_intensity == any(f[0] == "intensity" for f in fields)
    assert (cloud.height, cloud.width) == (height, width)


@st.composite
def valid_layouts(draw: st.DrawFn) -> tuple:
    """Supported x/y/z/intensity plus extras, shuffled, with gaps, tail and row padding."""
    fields = [(n, draw(st.sampled_from(sorted(COORD_TYPES))), 1) for n in "xyz"]
    if draw(st.booleans()):
        fields.append(("intensity", draw(st.sampled_from(sorted(INTENSITY_TYPES))), 1))
    for k in range(draw(st.integers(0, 3))):
        # datatypes 9 and 10 are unknown to ROS: such extras must only be skipped
        fields.append((f"extra{k}", draw(st.integers(1, 10)), draw(st.integers(1, 3))))
    fields = draw(st.permutations(fields))
    placed, end = [], 0
    for name, datatype, count in fields:
        offset = end + draw(st.integers(0, 4))
        placed.append((name, datatype, offset, count))
        end = offset + SIZE.get(datatype, 1) * count
    point_step = end + draw(st.integers(0, 5))
    height, width = draw(st.integers(0, 3)), draw(st.integers(0, 5))
    row_step = width * point_step + draw(st.integers(0, 6))
    raw = draw(st.binary(min_size=row_step * height, max_size=row_step * height))
    return placed, point_step, height, width, row_step, draw(st.booleans()), raw


@SETTINGS
@given(valid_layouts())
def test_valid_random_layouts_decode_exactly(case: tuple) -> None:
    fields, point_step, height, width, row_step, _, raw = case
    assert layout_is_valid(fields, point_step, height, width, row_step, raw)
    check_cloud(*case)


@st.composite
def arbitrary_clouds(draw: st.DrawFn) -> tuple:
    """Any field table (names may repeat or be missing, any datatype), any sizes and bytes."""
    fields = draw(st.lists(st.tuples(
        st.sampled_from(["x", "y", "z", "intensity", "ring"]), st.integers(0, 10),
        st.integers(0, 40), st.integers(0, 3)), max_size=7))
    point_step = draw(st.integers(0, 40))
    height, width = draw(st.integers(0, 3)), draw(st.integers(0, 4))
    row_step = max(0, width * point_step + draw(st.integers(-4, 6)))
    size = draw(st.one_of(st.just(row_step * height), st.integers(0, row_step * height + 8)))
    raw = draw(st.binary(min_size=size, max_size=size))
    return fields, point_step, height, width, row_step, draw(st.booleans()), raw


@SETTINGS
@given(arbitrary_clouds())
def test_arbitrary_clouds_decode_or_raise_conversion_error(case: tuple) -> None:
    check_cloud(*case)


@st.composite
def near_valid_clouds(draw: st.DrawFn) -> tuple:
    """A valid layout with one random defect: the cases that sit right at each rule's edge."""
    fields, point_step, height, width, row_step, big, raw = draw(valid_layouts())
    fields = list(fields)
    index = draw(st.integers(0, len(fields) - 1))
    name, datatype, offset, count = fields[index]
    defect = draw(st.sampled_from(["offset", "datatype", "count", "point_step", "row_step",
                                   "length", "drop", "duplicate"]))
    if defect == "offset":
        fields[index] = (name, datatype, draw(st.integers(0, point_step + 8)), count)
    elif defect == "datatype":
        fields[index] = (name, draw(st.integers(0, 10)), offset, count)
    elif defect == "count":
        fields[index] = (name, datatype, offset, draw(st.integers(0, 5)))
    elif defect == "point_step":
        point_step = max(0, point_step + draw(st.integers(-6, 2)))
    elif defect == "row_step":
        row_step = max(0, row_step + draw(st.integers(-4, 4)))
    elif defect == "length":
        raw = raw[: draw(st.integers(0, len(raw)))] + draw(st.binary(max_size=3))
    elif defect == "drop":
        del fields[index]
    else:
        fields.append(fields[index])
    return fields, point_step, height, width, row_step, big, raw


@SETTINGS
@given(near_valid_clouds())
def test_near_valid_clouds_decode_or_raise_conversion_error(case: tuple) -> None:
    check_cloud(*case)


@SETTINGS
@given(fields=st.just([("x", 7, 0, 1), ("y", 7, 4, 1), ("z", 7, 8, 1)]),
       width=st.integers(0, 6), extra=st.integers(-3, 3), data=st.data())
def test_packed_xyz_with_random_bytes_and_length(fields: list[Field], width: int, extra: int,
                                                 data: st.DataObject) -> None:
    size = max(0, 12 * width + extra)
    raw = data.draw(st.binary(min_size=size, max_size=size))
    check_cloud(fields, 12, 1, width, 12 * width, False, raw)


CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
TO_RGB = {"rgb8": (0, 1, 2), "bgr8": (2, 1, 0), "rgba8": (0, 1, 2), "bgra8": (2, 1, 0),
          "mono8": (0, 0, 0)}


@SETTINGS
@given(encoding=st.sampled_from([*CHANNELS, "16UC1", "bayer_rggb8", ""]),
       height=st.integers(0, 4), width=st.integers(0, 4), pad=st.integers(-2, 4),
       extra=st.integers(-3, 3), data=st.data())
def test_random_images_decode_or_raise_conversion_error(encoding: str, height: int, width: int,
                                                        pad: int, extra: int,
                                                        data: st.DataObject) -> None:
    channels = CHANNELS.get(encoding, 2)
    step = max(0, width * channels + pad)
    size = max(0, step * height + extra)
    raw = data.draw(st.binary(min_size=size, max_size=size))
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=0, step=step)
    msg.data = array.array("B", raw)
    valid = encoding in CHANNELS and step >= width * channels and size >= step * height
    try:
        rgb = image_to_rgb(msg)
    except ConversionError:
        assert not valid
        return
    assert valid
    want = np.zeros((height, width, 3), dtype=np.uint8)
    for r in range(height):
        for c in range(width):
            for k, source in enumerate(TO_RGB[encoding]):
                want[r, c, k] = raw[r * step + c * channels + source]
    np.testing.assert_array_equal(rgb, want)
