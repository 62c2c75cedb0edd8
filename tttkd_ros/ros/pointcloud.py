"""sensor_msgs/PointCloud2 <-> numpy, vectorised (no per-point Python loop).

Reading builds a numpy structured dtype from the message's own field table (offsets,
itemsize = point_step, byte order) and views the data through it with row_step / point_step
strides, so any field order, padding, organised layout and row padding read the same way.
Works on rclpy messages and on rosbags' dataclasses alike (attributes only).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from tttkd_ros.ros.convert_base import (
    ConversionError,
    data_field,
    message_bytes,
    resolve_msg_cls,
)

# sensor_msgs/PointField datatype constants -> numpy type codes (byte order added later).
POINTFIELD_NUMPY = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}
POINTFIELD_NAMES = {1: "INT8", 2: "UINT8", 3: "INT16", 4: "UINT16", 5: "INT32", 6: "UINT32",
                    7: "FLOAT32", 8: "FLOAT64"}
_COORD_TYPES = (7, 8)
_INTENSITY_TYPES = (7, 8, 4, 2)
# numpy (kind, itemsize) -> PointField datatype, for the columns the writer accepts.
_WRITABLE = {("f", 4): 7, ("f", 8): 8, ("u", 1): 2, ("u", 2): 4, ("u", 4): 6}


@dataclass
class CloudArrays:
    """A decoded cloud.

    points: (N, 4) float32 x, y, z, intensity with N = height * width, organised clouds
    flattened row-major. Non-finite coordinates are kept (the engine masks them); FLOAT64
    values beyond float32 range become +-inf. Intensity keeps its numeric value whatever its
    type (a UINT16 of 1000 reads 1000.0, no rescaling); 0 when the cloud has no intensity.
    intensity_max: the largest value an integer intensity field can hold (255, 65535), the
    driver's range; None for float fields and clouds without intensity.
    """

    points: np.ndarray
    has_intensity: bool
    height: int
    width: int
    intensity_max: float | None = None


def pointcloud2_to_xyzi(msg: Any) -> CloudArrays:
    """Decode x, y, z (FLOAT32/FLOAT64) and intensity (FLOAT32/FLOAT64/UINT16/UINT8).

    Other fields are ignored. `is_dense` is not trusted. Raises ConversionError for: a
    missing x/y/z field, a duplicated x/y/z/intensity field, an unsupported datatype for
    those, a field offset outside point_step, a point_step smaller than a field's extent,
    row_step < width * point_step, and data whose length is not row_step * height.
    """
    height, width = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    if min(height, width, point_step, row_step) < 0:
        raise ConversionError(
            f"PointCloud2 has a negative size (height {height}, width {width}, "
            f"point_step {point_step}, row_step {row_step})")
    fields = list(msg.fields)
    _check_extents(fields, point_step)
    used = _used_fields(fields)

    buf = message_bytes(msg.data, "PointCloud2")
    if row_step < width * point_step:
        raise ConversionError(
            f"PointCloud2 row_step {row_step} is smaller than width * point_step "
            f"({width} * {point_step} = {width * point_step})")
    if buf.size != row_step * height:
        raise ConversionError(
            f"PointCloud2 data has {buf.size} bytes, but row_step * height is "
            f"{row_step} * {height} = {row_step * height}")

    has_intensity = "intensity" in used
    kind = POINTFIELD_NUMPY[int(used["intensity"].datatype)] if has_intensity else "f4"
    intensity_max = float(np.iinfo(kind).max) if kind[0] in "iu" else None
    points = np.zeros((height * width, 4), dtype=np.float32)
    if points.shape[0] == 0:
        return CloudArrays(points, has_intensity, height, width, intensity_max)
    order = ">" if msg.is_bigendian else "<"
    dtype = np.dtype({
        "names": list(used),
        "formats": [order + POINTFIELD_NUMPY[int(f.datatype)] for f in used.values()],
        "offsets": [int(f.offset) for f in used.values()],
        "itemsize": point_step,
    })
    view = np.ndarray((height, width), dtype=dtype, buffer=buf, strides=(row_step, point_step))
    grid = points.reshape(height, width, 4)
    with np.errstate(over="ignore"):  # FLOAT64 beyond float32 range -> inf, as documented
        for column, name in enumerate(("x", "y", "z", "intensity")):
            if name in used:
                np.copyto(grid[..., column], view[name], casting="unsafe")
    return CloudArrays(points, has_intensity, height, width, intensity_max)


def _check_extents(fields: list[Any], point_step: int) -> None:
    """Every field must start inside a point and, when its type is known, end inside it."""
    for f in fields:
        offset, datatype = int(f.offset), int(f.datatype)
        if offset < 0 or offset >= point_step:
            raise ConversionError(
                f"PointCloud2 field '{f.name}' offset {offset} is out of range "
                f"(point_step {point_step})")
        if datatype in POINTFIELD_NUMPY:
            end = offset + np.dtype(POINTFIELD_NUMPY[datatype]).itemsize * max(int(f.count), 1)
            if end > point_step:
                raise ConversionError(
                    f"PointCloud2 point_step {point_step} is smaller than field '{f.name}' "
                    f"extent (offset {offset} + {POINTFIELD_NAMES[datatype]} x "
                    f"{max(int(f.count), 1)} = {end} bytes)")


def _used_fields(fields: list[Any]) -> dict[str, Any]:
    """x, y, z and (optional) intensity by name, with their datatypes checked.

    A field's count is read as at least 1 (some drivers leave it 0); only its first element
    is used.
    """
    names = [str(f.name) for f in fields]
    used: dict[str, Any] = {}
    for name in ("x", "y", "z", "intensity"):
        matches = [f for f in fields if f.name == name]
        if not matches:
            if name != "intensity":
                raise ConversionError(
                    f"PointCloud2 has no '{name}' field (fields: {', '.join(names) or 'none'})")
            continue
        if len(matches) > 1:
            raise ConversionError(f"PointCloud2 has {len(matches)} fields named '{name}'")
        field = matches[0]
        allowed = _INTENSITY_TYPES if name == "intensity" else _COORD_TYPES
        datatype = int(field.datatype)
        if datatype not in allowed:
            got = POINTFIELD_NAMES.get(datatype, f"{datatype} (unknown)")
            wanted = ", ".join(POINTFIELD_NAMES[t] for t in allowed)
            raise ConversionError(
                f"PointCloud2 field '{name}' has unsupported datatype {got} "
                f"(supported: {wanted})")
        used[name] = field
    return used


def pack_rgb(colors: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 RGB -> (N,) float32 whose bits are 0x00RRGGBB (PCL / RViz `rgb`)."""
    colors = np.asarray(colors)
    if colors.ndim != 2 or colors.shape[1] != 3 or colors.dtype != np.uint8:
        raise ConversionError(
            f"pack_rgb needs (N, 3) uint8 colours, got {colors.shape} {colors.dtype}")
    rgb = colors.astype(np.uint32)
    packed = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    return packed.view(np.float32)


def xyzi_fields_to_pointcloud2(
    header: Any,
    columns: Mapping[str, np.ndarray],
    msg_cls: type | None = None,
    field_cls: type | None = None,
) -> Any:
    """A PointCloud2 (height 1, densely packed, little-endian) from named 1-D columns.

    columns: name -> (N,) array, written in the mapping's order; dtypes float32, float64,
    uint8, uint16, uint32 map to FLOAT32, FLOAT64, UINT8, UINT16, UINT32. The header is
    used as given (never restamped). is_dense is true when the x, y, z columns present are
    all finite. msg_cls / field_cls default to sensor_msgs.msg.PointCloud2 / PointField
    (rclpy); pass rosbags' types to build bag messages.
    """
    msg_cls = resolve_msg_cls(msg_cls, "PointCloud2")
    field_cls = resolve_msg_cls(field_cls, "PointField")
    if not columns:
        raise ConversionError("PointCloud2 needs at least one column")
    arrays = {name: np.asarray(col) for name, col in columns.items()}
    lengths = {name: col.shape for name, col in arrays.items()}
    count = next(iter(arrays.values())).shape[:1]
    for name, col in arrays.items():
        if col.ndim != 1 or col.shape != count:
            raise ConversionError(f"PointCloud2 columns must be 1-D and equal length: {lengths}")
        if (col.dtype.kind, col.dtype.itemsize) not in _WRITABLE:
            raise ConversionError(
                f"PointCloud2 column '{name}' has unsupported dtype {col.dtype} "
                "(supported: float32, float64, uint8, uint16, uint32)")
    layout = np.dtype([(name, col.dtype.newbyteorder("<")) for name, col in arrays.items()])
    packed = np.empty(count, dtype=layout)
    for name, col in arrays.items():
        packed[name] = col
    fields = [
        field_cls(name=name, offset=int(layout.fields[name][1]),
                  datatype=_WRITABLE[(col.dtype.kind, col.dtype.itemsize)], count=1)
        for name, col in arrays.items()
    ]
    dense = all(bool(np.isfinite(arrays[c]).all()) for c in ("x", "y", "z") if c in arrays)
    return msg_cls(
        header=header, height=1, width=int(count[0]), fields=fields, is_bigendian=False,
        point_step=int(layout.itemsize), row_step=int(layout.itemsize * count[0]),
        data=data_field(msg_cls, packed.view(np.uint8)), is_dense=dense)
