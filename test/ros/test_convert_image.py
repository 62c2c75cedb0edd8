"""Image <-> numpy: every encoding, with and without row padding, and the rejections.

Encoded test images are built here by hand (channel swaps, alpha, padding bytes) from a
reference RGB array, never with the code under test.
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sensor_msgs.msg", reason="rclpy's sensor_msgs is not installed")
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from tttkd_ros.ros.convert import ConversionError, array_to_image, image_to_rgb

RNG = np.random.default_rng(3)
HEIGHT, WIDTH = 5, 7


def encode(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """(H, W, C) stored pixels of `encoding` for the reference image (mono8 uses its R)."""
    alpha = RNG.integers(0, 256, rgb.shape[:2] + (1,), dtype=np.uint8)
    return {
        "rgb8": rgb,
        "bgr8": rgb[..., ::-1],
        "rgba8": np.concatenate([rgb, alpha], axis=2),
        "bgra8": np.concatenate([rgb[..., ::-1], alpha], axis=2),
        "mono8": rgb[..., :1],
    }[encoding]


def make_image(pixels: np.ndarray, encoding: str, padding: int) -> Image:
    height, width, channels = pixels.shape
    step = width * channels + padding
    rows = np.full((height, step), 0xAB, dtype=np.uint8)  # padding bytes hold garbage
    rows[:, : width * channels] = pixels.reshape(height, -1)
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=0, step=step)
    msg.data = rows.tobytes()
    return msg


@pytest.mark.parametrize("padding", [0, 5])
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
def test_every_encoding_reads_as_rgb(encoding: str, padding: int) -> None:
    rgb = RNG.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    if encoding == "mono8":
        rgb = np.repeat(rgb[..., :1], 3, axis=2)
    out = image_to_rgb(make_image(encode(rgb, encoding), encoding, padding))
    assert out.dtype == np.uint8 and out.shape == (HEIGHT, WIDTH, 3)
    np.testing.assert_array_equal(out, rgb)


def test_rosbags_image_reads_like_rclpy() -> None:
    typesys = pytest.importorskip("rosbags.typesys")
    types = typesys.get_typestore(typesys.Stores.ROS2_JAZZY).types
    rgb = RNG.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    rows = np.zeros((HEIGHT, WIDTH * 3 + 3), dtype=np.uint8)
    rows[:, : WIDTH * 3] = rgb[..., ::-1].reshape(HEIGHT, -1)
    header = types["std_msgs/msg/Header"](
        stamp=types["builtin_interfaces/msg/Time"](sec=0, nanosec=0), frame_id="cam")
    msg = types["sensor_msgs/msg/Image"](header=header, height=HEIGHT, width=WIDTH,
                                         encoding="bgr8", is_bigendian=0, step=WIDTH * 3 + 3,
                                         data=rows.reshape(-1))
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)


def test_unsupported_encoding_is_named_with_the_supported_list() -> None:
    msg = make_image(np.zeros((2, 2, 2), np.uint8), "16UC1", 0)
    with pytest.raises(ConversionError, match=r"'16UC1' is not supported \(supported: rgb8, "
                                              r"bgr8, rgba8, bgra8, mono8\)"):
        image_to_rgb(msg)


def test_step_smaller_than_a_row_is_rejected() -> None:
    msg = make_image(np.zeros((2, 4, 3), np.uint8), "rgb8", 0)
    msg.step = 11
    with pytest.raises(ConversionError, match=r"step 11 is smaller than width \* channels "
                                              r"\(4 \* 3 = 12\) for rgb8"):
        image_to_rgb(msg)


def test_short_data_is_rejected() -> None:
    msg = make_image(np.zeros((3, 4, 4), np.uint8), "bgra8", 2)
    msg.data = bytes(msg.data)[:-1]
    with pytest.raises(ConversionError, match=r"data has 53 bytes, fewer than step \* height "
                                              r"\(18 \* 3 = 54\)"):
        image_to_rgb(msg)


@pytest.mark.parametrize("encoding", ["mono8", "rgb8"])
def test_array_to_image_round_trip(encoding: str) -> None:
    shape = (HEIGHT, WIDTH) if encoding == "mono8" else (HEIGHT, WIDTH, 3)
    array = RNG.integers(0, 256, shape, dtype=np.uint8)
    header = Header(frame_id="camera_optical")
    header.stamp.sec = 77
    msg = array_to_image(header, array, encoding)
    assert isinstance(msg, Image)
    channels = 1 if encoding == "mono8" else 3
    assert (msg.height, msg.width, msg.step, msg.encoding) == (HEIGHT, WIDTH, WIDTH * channels,
                                                               encoding)
    assert msg.header.frame_id == "camera_optical" and msg.header.stamp.sec == 77
    assert bytes(msg.data) == array.tobytes()
    back = deserialize_message(serialize_message(msg), Image)
    expected = array if encoding == "rgb8" else np.repeat(array[..., None], 3, axis=2)
    np.testing.assert_array_equal(image_to_rgb(back), expected)


def test_array_to_image_with_rosbags_type_serialises() -> None:
    typesys = pytest.importorskip("rosbags.typesys")
    typestore = typesys.get_typestore(typesys.Stores.ROS2_JAZZY)
    types = typestore.types
    header = types["std_msgs/msg/Header"](
        stamp=types["builtin_interfaces/msg/Time"](sec=1, nanosec=0), frame_id="cam")
    mask = RNG.integers(0, 20, (HEIGHT, WIDTH), dtype=np.uint8)
    msg = array_to_image(header, mask, "mono8", msg_cls=types["sensor_msgs/msg/Image"])
    back = typestore.deserialize_cdr(typestore.serialize_cdr(msg, "sensor_msgs/msg/Image"),
                                     "sensor_msgs/msg/Image")
    np.testing.assert_array_equal(np.asarray(back.data).reshape(HEIGHT, WIDTH), mask)


@pytest.mark.parametrize(("array", "encoding", "match"), [
    (np.zeros((2, 2, 3), np.uint8), "bgr8", r"'bgr8' cannot be written"),
    (np.zeros((2, 2, 3), np.uint8), "mono8", r"mono8 needs a uint8 array of shape \(H, W\)"),
    (np.zeros((2, 2), np.uint8), "rgb8", r"rgb8 needs a uint8 array of shape \(H, W, 3\)"),
    (np.zeros((2, 2, 3), np.float32), "rgb8", r"got \(2, 2, 3\) float32"),
])
def test_array_to_image_rejections(array: np.ndarray, encoding: str, match: str) -> None:
    with pytest.raises(ConversionError, match=match):
        array_to_image(Header(), array, encoding)
