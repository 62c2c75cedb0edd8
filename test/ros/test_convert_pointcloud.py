"""PointCloud2 <-> numpy: odd layouts read right, the writer's output is a valid cloud, and
every documented defect is rejected with a ConversionError naming it.

Test messages are packed here with `struct`, one value at a time, never by the code under
test, and built with rclpy's sensor_msgs (and rosbags' types where marked).
"""
from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sensor_msgs.msg", reason="rclpy's sensor_msgs is not installed")
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from tttkd_ros.ros.convert import (
    ConversionError,
    pack_rgb,
    pointcloud2_to_xyzi,
    xyzi_fields_to_pointcloud2,
)

STRUCT = {1: "b", 2: "B", 3: "h", 4: "H", 5: "i", 6: "I", 7: "f", 8: "d"}
RNG = np.random.default_rng(7)
F32, F64, U8, U16 = PointField.FLOAT32, PointField.FLOAT64, PointField.UINT8, PointField.UINT16


def pack_points(layout: list[tuple[str, int, int]], values: list[dict[str, float]],
                point_step: int, width: int, row_step: int, big: bool = False) -> bytes:
    """Rows of `width` points, each field at its offset, 0xEE in every padding byte."""
    order = ">" if big else "<"
    height = len(values) // width if width else 0
    data = bytearray(b"\xee" * (row_step * height))
    for index, point in enumerate(values):
        row, col = divmod(index, width)
        base = row * row_step + col * point_step
        for name, datatype, offset in layout:
            value = point[name] if datatype in (F32, F64) else int(point[name])
            struct.pack_into(order + STRUCT[datatype], data, base + offset, value)
    return bytes(data)


def make_cloud(layout: list[tuple[str, int, int]], data: bytes, point_step: int, height: int,
               width: int, row_step: int, big: bool = False, dense: bool = True) -> PointCloud2:
    msg = PointCloud2()
    msg.header.frame_id = "lidar"
    msg.height, msg.width = height, width
    msg.fields = [PointField(name=n, offset=o, datatype=t, count=1) for n, t, o in layout]
    msg.is_bigendian = big
    msg.point_step, msg.row_step = point_step, row_step
    msg.data = data
    msg.is_dense = dense
    return msg


def random_points(count: int, intensity: str = "float") -> list[dict[str, float]]:
    """Values exactly representable in float32 (and in the integer intensity types)."""
    xyz = RNG.uniform(-50, 50, size=(count, 3)).astype(np.float32)
    if intensity == "float":
        inten = RNG.uniform(0, 1, count).astype(np.float32).tolist()
    else:
        inten = RNG.integers(0, 256 if intensity == "u8" else 65536, count).tolist()
    return [{"x": float(a), "y": float(b), "z": float(c), "intensity": i,
             "ring": k % 64, "timestamp": 1e9 + k * 1e-6}
            for k, ((a, b, c), i) in enumerate(zip(xyz, inten, strict=True))]


def expected(values: list[dict[str, float]], with_intensity: bool = True) -> np.ndarray:
    cols = ["x", "y", "z", "intensity"] if with_intensity else ["x", "y", "z"]
    out = np.zeros((len(values), 4), dtype=np.float32)
    out[:, : len(cols)] = [[p[c] for c in cols] for p in values]
    return out


def decode(layout, values, point_step, height, width, row_step, big=False):
    data = pack_points(layout, values, point_step, width, row_step, big)
    return pointcloud2_to_xyzi(make_cloud(layout, data, point_step, height, width, row_step, big))


def test_packed_xyzi_reads_every_point() -> None:
    layout = [("x", F32, 0), ("y", F32, 4), ("z", F32, 8), ("intensity", F32, 12)]
    values = random_points(20)
    cloud = decode(layout, values, 16, 1, 20, 320)
    assert cloud.points.dtype == np.float32 and cloud.points.shape == (20, 4)
    np.testing.assert_array_equal(cloud.points, expected(values))
    assert cloud.has_intensity and (cloud.height, cloud.width) == (1, 20)


def test_padding_and_reordered_fields() -> None:
    # intensity first, then z, x, y with gaps between them and a tail after the last one
    layout = [("intensity", F32, 0), ("z", F32, 8), ("x", F32, 16), ("y", F32, 28)]
    values = random_points(9)
    cloud = decode(layout, values, 40, 1, 9, 360)
    np.testing.assert_array_equal(cloud.points, expected(values))


def test_organised_cloud_with_row_padding_flattens_row_major() -> None:
    layout = [("x", F32, 0), ("y", F32, 4), ("z", F32, 8), ("intensity", F32, 16)]
    height, width, point_step = 3, 4, 20
    row_step = width * point_step + 7
    values = random_points(height * width)
    cloud = decode(layout, values, point_step, height, width, row_step)
    assert (cloud.height, cloud.width) == (height, width)
    np.testing.assert_array_equal(cloud.points, expected(values))


def test_big_endian() -> None:
    layout = [("x", F32, 0), ("y", F32, 4), ("z", F32, 8), ("intensity", U16, 12)]
    values = random_points(6, intensity="u16")
    cloud = decode(layout, values, 16, 2, 3, 48, big=True)
    np.testing.assert_array_equal(cloud.points, expected(values))


def test_float64_coordinates() -> None:
    layout = [("x", F64, 0), ("y", F64, 8), ("z", F64, 16), ("intensity", F32, 24)]
    values = random_points(5)
    values[0]["x"] = 1.0 + 2.0**-40  # finer than float32: must round, not garble
    cloud = decode(layout, values, 32, 1, 5, 160)
    want = expected(values)
    want[0, 0] = np.float32(values[0]["x"])
    np.testing.assert_array_equal(cloud.points, want)


@pytest.mark.parametrize(("datatype", "kind", "size"),
                         [(F32, "float", 4), (F64, "float", 8), (U16, "u16", 2), (U8, "u8", 1)])
def test_intensity_of_every_type_keeps_its_numeric_value(datatype: int, kind: str,
                                                         size: int) -> None:
    layout = [("x", F32, 0), ("y", F32, 4), ("z", F32, 8), ("intensity", datatype, 12)]
    values = random_points(8, intensity=kind)
    if kind == "u16":
        values[0]["intensity"] = 65535
    cloud = decode(layout, values, 12 + size, 1, 8, 8 * (12 + size))
    np.testing.assert_array_equal(cloud.points[:, 3], [np.float32(p["intensity"]) for p in values])


def test_extra_fields_are_ignored() -> None:
    layout = [("x", F32, 0), ("ring", U16, 4), ("y", F32, 6), ("timestamp", F64, 10),
              ("z", F32, 18), ("intensity", U8, 22)]
    values = random_points(7, intensity="u8")
    data = pack_points(layout, values, 28, 7, 196)
    msg = make_cloud(layout, data, 28, 1, 7, 196)
    # a multi-element extra field, and one of a type the reader does not know
    msg.fields.append(PointField(name="rgba", offset=23, datatype=U8, count=4))
    msg.fields.append(PointField(name="custom", offset=27, datatype=99, count=1))
    np.testing.assert_array_equal(pointcloud2_to_xyzi(msg).points, expected(values))


def test_missing_intensity_reads_zero() -> None:
    layout = [("x", F32, 0), ("y", F32, 4), ("z", F32, 8)]
    values = random_points(4)
    cloud = decode(layout, values, 12, 1, 4, 48)
    assert not cloud.has_intensity
    np.testing.assert_array_equal(cloud.points, expected(values, with_intensity=False))


def test_non_finite_coordinates_are_kept_whatever_is_dense_says() -> None:
    layout = [("x", F32, 0), ("y", F32, 4), ("z", F32, 8)]
    values = random_points(3)
    values[0]["x"], values[1]["y"], values[2]["z"] = float("nan"), float("inf"), -float("inf")
    data = pack_points(layout, values, 12, 3, 36)
    cloud = pointcloud2_to_xyzi(make_cloud(layout, data, 12, 1, 3, 36, dense=True))
    np.testing.assert_array_equal(cloud.points, expected(values, with_intensity=False))


def test_empty_cloud() -> None:
    layout = [("x", F32, 0), ("y", F32, 4), ("z", F32, 8)]
    cloud = pointcloud2_to_xyzi(make_cloud(layout, b"", 12, 1, 0, 0))
    assert cloud.points.shape == (0, 4) and cloud.points.dtype == np.float32


def test_rosbags_message_reads_like_rclpy() -> None:
    typesys = pytest.importorskip("rosbags.typesys")
    types = typesys.get_typestore(typesys.Stores.ROS2_JAZZY).types
    layout = [("z", F32, 0), ("y", F32, 4), ("x", F32, 8), ("intensity", U16, 14)]
    values = random_points(6, intensity="u16")
    data = pack_points(layout, values, 16, 3, 52)
    header = types["std_msgs/msg/Header"](
        stamp=types["builtin_interfaces/msg/Time"](sec=1, nanosec=2), frame_id="lidar")
    fields = [types["sensor_msgs/msg/PointField"](name=n, offset=o, datatype=t, count=1)
              for n, t, o in layout]
    msg = types["sensor_msgs/msg/PointCloud2"](
        header=header, height=2, width=3, fields=fields, is_bigendian=False, point_step=16,
        row_step=52, data=np.frombuffer(data, dtype=np.uint8), is_dense=True)
    np.testing.assert_array_equal(pointcloud2_to_xyzi(msg).points, expected(values))


# ---- writer ---------------------------------------------------------------------------------

def labeled_columns(count: int) -> dict[str, np.ndarray]:
    return {
        "x": RNG.normal(size=count).astype(np.float32),
        "y": RNG.normal(size=count).astype(np.float32),
        "z": RNG.normal(size=count).astype(np.float32),
        "intensity": RNG.uniform(size=count).astype(np.float32),
        "label": RNG.integers(0, 65536, count).astype(np.uint16),
        "confidence": RNG.uniform(size=count).astype(np.float32),
        "extra64": RNG.normal(size=count),
        "flag": RNG.integers(0, 256, count).astype(np.uint8),
        "id": RNG.integers(0, 2**32, count).astype(np.uint32),
    }


def unpack_column(msg, name: str) -> list[float]:
    """Read one column back with struct, one point at a time."""
    field = next(f for f in msg.fields if f.name == name)
    data = bytes(msg.data)
    fmt = "<" + STRUCT[field.datatype]
    return [struct.unpack_from(fmt, data, i * msg.point_step + field.offset)[0]
            for i in range(msg.width)]


def test_writer_packs_columns_in_order_little_endian() -> None:
    columns = labeled_columns(11)
    header = Header(frame_id="velodyne")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = xyzi_fields_to_pointcloud2(header, columns)
    assert isinstance(msg, PointCloud2)
    assert [f.name for f in msg.fields] == list(columns)
    types = {"float32": F32, "float64": F64, "uint8": U8, "uint16": U16,
             "uint32": PointField.UINT32}
    assert [f.datatype for f in msg.fields] == [types[str(c.dtype)] for c in columns.values()]
    sizes = [c.dtype.itemsize for c in columns.values()]
    assert [f.offset for f in msg.fields] == np.cumsum([0, *sizes[:-1]]).tolist()
    assert msg.point_step == sum(sizes) and msg.row_step == 11 * sum(sizes)
    assert (msg.height, msg.width, msg.is_bigendian, msg.is_dense) == (1, 11, False, True)
    assert msg.header.frame_id == "velodyne" and msg.header.stamp.nanosec == 345
    for name, col in columns.items():
        assert unpack_column(msg, name) == col.tolist()
    # it survives rclpy serialisation and reads back
    back = deserialize_message(serialize_message(msg), PointCloud2)
    points = pointcloud2_to_xyzi(back).points
    np.testing.assert_array_equal(points[:, 0], columns["x"])
    np.testing.assert_array_equal(points[:, 3], columns["intensity"])


def test_writer_with_rosbags_types_serialises() -> None:
    typesys = pytest.importorskip("rosbags.typesys")
    typestore = typesys.get_typestore(typesys.Stores.ROS2_JAZZY)
    types = typestore.types
    header = types["std_msgs/msg/Header"](
        stamp=types["builtin_interfaces/msg/Time"](sec=3, nanosec=4), frame_id="lidar")
    columns = labeled_columns(5)
    msg = xyzi_fields_to_pointcloud2(header, columns, msg_cls=types["sensor_msgs/msg/PointCloud2"],
                                     field_cls=types["sensor_msgs/msg/PointField"])
    raw = typestore.serialize_cdr(msg, "sensor_msgs/msg/PointCloud2")
    back = typestore.deserialize_cdr(raw, "sensor_msgs/msg/PointCloud2")
    assert back.header.frame_id == "lidar" and back.width == 5
    for name, col in columns.items():
        assert unpack_column(back, name) == col.tolist()


def test_writer_marks_non_finite_xyz_not_dense() -> None:
    columns = {"x": np.array([0.0, np.nan], np.float32), "y": np.zeros(2, np.float32),
               "z": np.zeros(2, np.float32)}
    assert not xyzi_fields_to_pointcloud2(Header(), columns).is_dense


def test_pack_rgb_bits_are_0x00rrggbb() -> None:
    colors = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [18, 52, 86]], dtype=np.uint8)
    packed = pack_rgb(colors)
    assert packed.dtype == np.float32 and packed.shape == (4,)
    bits = [struct.unpack("<I", struct.pack("<f", v))[0] for v in packed.tolist()]
    assert bits == [0xFF0000, 0x00FF00, 0x0000FF, 0x123456]


@pytest.mark.parametrize(("columns", "match"), [
    ({}, "at least one column"),
    ({"x": np.zeros(3, np.int64)}, "'x' has unsupported dtype int64"),
    ({"x": np.zeros(3, np.float32), "y": np.zeros(2, np.float32)}, "equal length"),
    ({"x": np.zeros((3, 1), np.float32)}, "1-D"),
])
def test_writer_rejections(columns: dict[str, np.ndarray], match: str) -> None:
    with pytest.raises(ConversionError, match=match):
        xyzi_fields_to_pointcloud2(Header(), columns)


def test_pack_rgb_rejects_wrong_shape_or_dtype() -> None:
    with pytest.raises(ConversionError, match=r"\(N, 3\) uint8"):
        pack_rgb(np.zeros((4, 3), np.float32))
    with pytest.raises(ConversionError, match=r"\(N, 3\) uint8"):
        pack_rgb(np.zeros((4, 4), np.uint8))


# ---- rejections -----------------------------------------------------------------------------

XYZI = [("x", F32, 0), ("y", F32, 4), ("z", F32, 8), ("intensity", F32, 12)]


def good_cloud(layout=XYZI, point_step: int = 16, width: int = 3) -> PointCloud2:
    values = random_points(width)
    data = pack_points(layout, values, point_step, width, width * point_step)
    return make_cloud(layout, data, point_step, 1, width, width * point_step)


def with_fields(msg: PointCloud2, fields: list[PointField]) -> PointCloud2:
    msg.fields = fields
    return msg


@pytest.mark.parametrize(("build", "match"), [
    (lambda: good_cloud([("x", F32, 0), ("y", F32, 4), ("intensity", F32, 8)], 12),
     r"no 'z' field \(fields: x, y, intensity\)"),
    (lambda: good_cloud([("x", PointField.INT32, 0), ("y", F32, 4), ("z", F32, 8)], 12),
     r"field 'x' has unsupported datatype INT32 \(supported: FLOAT32, FLOAT64\)"),
    (lambda: good_cloud([("x", F32, 0), ("y", F32, 4), ("z", F32, 8),
                         ("intensity", PointField.UINT32, 12)]),
     r"field 'intensity' has unsupported datatype UINT32"),
    (lambda: with_fields(good_cloud(), [PointField(name="x", offset=0, datatype=F32, count=1),
                                        PointField(name="y", offset=4, datatype=42, count=1),
                                        PointField(name="z", offset=8, datatype=F32, count=1)]),
     r"field 'y' has unsupported datatype 42 \(unknown\)"),
    (lambda: with_fields(good_cloud(), [PointField(name=n, offset=o, datatype=F32, count=1)
                                        for n, o in (("x", 0), ("y", 4), ("z", 8), ("x", 12))]),
     r"2 fields named 'x'"),
    (lambda: with_fields(good_cloud(), [*good_cloud().fields,
                                        PointField(name="ring", offset=16, datatype=U16,
                                                   count=1)]),
     r"field 'ring' offset 16 is out of range \(point_step 16\)"),
    (lambda: with_fields(good_cloud(), [*good_cloud().fields,
                                        PointField(name="custom", offset=30, datatype=99,
                                                   count=1)]),
     r"field 'custom' offset 30 is out of range \(point_step 16\)"),
    (lambda: with_fields(good_cloud(), [*good_cloud().fields[:3],
                                        PointField(name="intensity", offset=14, datatype=F32,
                                                   count=1)]),
     r"point_step 16 is smaller than field 'intensity' extent"),
    (lambda: with_fields(good_cloud(), [*good_cloud().fields,
                                        PointField(name="ring", offset=12, datatype=U8,
                                                   count=5)]),
     r"point_step 16 is smaller than field 'ring' extent"),
])
def test_layout_rejections(build, match: str) -> None:
    with pytest.raises(ConversionError, match=match):
        pointcloud2_to_xyzi(build())


def test_data_length_rejections() -> None:
    short = good_cloud()
    short.data = bytes(short.data)[:-1]
    with pytest.raises(ConversionError, match=r"data has 47 bytes, but row_step \* height is "
                                              r"48 \* 1 = 48"):
        pointcloud2_to_xyzi(short)
    narrow_rows = good_cloud()
    narrow_rows.row_step = 40
    with pytest.raises(ConversionError, match=r"row_step 40 is smaller than width \* point_step"):
        pointcloud2_to_xyzi(narrow_rows)
    organised = good_cloud()
    organised.height = 2  # claims two rows of 48 bytes but carries one
    with pytest.raises(ConversionError, match=r"data has 48 bytes"):
        pointcloud2_to_xyzi(organised)


def test_data_of_the_wrong_element_type_is_rejected() -> None:
    msg = good_cloud()

    class Loose:  # a duck-typed message whose data is float32, as a buggy writer might send
        pass

    loose = Loose()
    for attr in ("height", "width", "fields", "is_bigendian", "point_step", "row_step"):
        setattr(loose, attr, getattr(msg, attr))
    loose.data = np.zeros(12, dtype=np.float32)
    with pytest.raises(ConversionError, match=r"data must be bytes or uint8, got dtype float32"):
        pointcloud2_to_xyzi(loose)


def test_conversion_and_sync_import_without_rclpy() -> None:
    """The offline evaluator uses them with rosbags only: no message package at import."""
    code = ("import sys, tttkd_ros.ros.convert, tttkd_ros.ros.sync; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('rclpy', 'sensor_msgs', 'std_msgs')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]"
