"""CompressedImage -> numpy: JPEG and PNG as robots record them (image_transport's
`compressed` plugin), with the format strings drivers write, and the rejections. Test images
are encoded here with Pillow from a reference RGB array; PNG must come back exactly, JPEG
within its loss."""
from __future__ import annotations

import io

import numpy as np
import pytest

pytest.importorskip("sensor_msgs.msg", reason="rclpy's sensor_msgs is not installed")
from PIL import Image as PilImage
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage

from tttkd_ros.ros.convert import ConversionError, compressed_to_rgb

# a smooth image (JPEG reproduces it closely) of an odd size
_y, _x = np.mgrid[0:37, 0:53]
REFERENCE = np.stack([_x * 4, _y * 6, (_x + _y) * 2], axis=2).astype(np.uint8)


def encoded(array: np.ndarray, codec: str, mode: str | None = None, **options) -> bytes:
    buf = io.BytesIO()
    PilImage.fromarray(array, mode=mode).save(buf, format=codec, **options)
    return buf.getvalue()


def message(data: bytes, fmt: str) -> CompressedImage:
    """A CompressedImage as it arrives over DDS (serialised and read back)."""
    msg = CompressedImage(format=fmt, data=data)
    return deserialize_message(serialize_message(msg), CompressedImage)


@pytest.mark.parametrize("fmt", ["rgb8; png compressed rgb8", "bgr8; png compressed bgr8", "png"])
def test_png_comes_back_exactly(fmt: str) -> None:
    rgb = compressed_to_rgb(message(encoded(REFERENCE, "PNG"), fmt))
    assert rgb.dtype == np.uint8 and rgb.shape == REFERENCE.shape
    np.testing.assert_array_equal(rgb, REFERENCE)


@pytest.mark.parametrize("fmt", ["bgr8; jpeg compressed bgr8", "jpeg", "JPEG"])
def test_jpeg_comes_back_within_its_loss(fmt: str) -> None:
    rgb = compressed_to_rgb(message(encoded(REFERENCE, "JPEG", quality=95), fmt))
    assert rgb.shape == REFERENCE.shape
    assert np.abs(rgb.astype(int) - REFERENCE.astype(int)).mean() < 3.0


def test_grey_images_are_replicated_into_three_channels() -> None:
    grey = REFERENCE[..., 0]
    rgb = compressed_to_rgb(message(encoded(grey, "PNG"), "mono8; png compressed mono8"))
    np.testing.assert_array_equal(rgb, np.repeat(grey[..., None], 3, axis=2))


def test_rosbags_messages_decode_too() -> None:
    from rosbags.typesys import Stores, get_typestore

    cls = get_typestore(Stores.ROS2_JAZZY).types["sensor_msgs/msg/CompressedImage"]
    header = get_typestore(Stores.ROS2_JAZZY).types["std_msgs/msg/Header"]
    stamp = get_typestore(Stores.ROS2_JAZZY).types["builtin_interfaces/msg/Time"](sec=1,
                                                                                  nanosec=0)
    msg = cls(header=header(stamp=stamp, frame_id="cam"), format="png",
              data=np.frombuffer(encoded(REFERENCE, "PNG"), np.uint8))
    np.testing.assert_array_equal(compressed_to_rgb(msg), REFERENCE)


@pytest.mark.parametrize("data, fmt, phrase", [
    (b"", "jpeg", "not a readable JPEG image"),
    (b"\xff\xd8\xff\xe0 this is not a jpeg", "jpeg", "not a readable JPEG image"),
    (encoded(REFERENCE, "PNG"), "jpeg", "not a readable JPEG image"),  # format lies
    (encoded(REFERENCE, "PNG"), "16UC1; compressedDepth png", "not a JPEG or PNG colour"),
    (encoded(REFERENCE, "PNG"), "theora", "not a JPEG or PNG colour"),
    (encoded((REFERENCE[..., 0].astype(np.uint16) * 200), "PNG"), "png", "pixel mode"),
])
def test_bad_compressed_images_are_refused_with_the_reason(data: bytes, fmt: str,
                                                           phrase: str) -> None:
    with pytest.raises(ConversionError, match=phrase):
        compressed_to_rgb(message(data, fmt))
