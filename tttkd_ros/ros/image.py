"""sensor_msgs/Image <-> numpy for the 8-bit encodings the node reads and writes, and
sensor_msgs/CompressedImage (JPEG, PNG) -> numpy, decoded by Pillow."""
from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image as PilImage
from PIL import UnidentifiedImageError

from tttkd_ros.ros.convert_base import (
    ConversionError,
    data_field,
    message_bytes,
    resolve_msg_cls,
)

# encoding -> (channels, indices that turn the stored channels into R, G, B)
_READABLE = {
    "rgb8": (3, (0, 1, 2)),
    "bgr8": (3, (2, 1, 0)),
    "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)),
    "mono8": (1, (0, 0, 0)),
}
_WRITABLE = {"mono8": 1, "rgb8": 3}


def image_to_rgb(msg: Any) -> np.ndarray:
    """(H, W, 3) uint8 RGB from an rgb8 / bgr8 / rgba8 / bgra8 / mono8 Image.

    Row padding (step > width * channels) is skipped; alpha is dropped; mono8 is replicated
    into the three channels. The result is a new contiguous array. Raises ConversionError
    for another encoding, step < width * channels, or data shorter than step * height.
    """
    encoding = str(msg.encoding)
    if encoding not in _READABLE:
        raise ConversionError(
            f"Image encoding '{encoding}' is not supported (supported: {', '.join(_READABLE)})")
    channels, order = _READABLE[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if min(height, width, step) < 0:
        raise ConversionError(
            f"Image has a negative size (height {height}, width {width}, step {step})")
    if step < width * channels:
        raise ConversionError(
            f"Image step {step} is smaller than width * channels "
            f"({width} * {channels} = {width * channels}) for {encoding}")
    buf = message_bytes(msg.data, "Image")
    if buf.size < step * height:
        raise ConversionError(
            f"Image data has {buf.size} bytes, fewer than step * height "
            f"({step} * {height} = {step * height})")
    rows = buf[: step * height].reshape(height, step)
    pixels = rows[:, : width * channels].reshape(height, width, channels)
    rgb = np.empty((height, width, 3), dtype=np.uint8)
    for out_channel, source in enumerate(order):  # per-plane copies beat fancy indexing ~5x
        rgb[..., out_channel] = pixels[..., source]
    return rgb


def array_to_image(
    header: Any, array: np.ndarray, encoding: str, msg_cls: type | None = None
) -> Any:
    """An Image from (H, W) uint8 ('mono8') or (H, W, 3) uint8 RGB ('rgb8'), rows unpadded.

    The header is used as given (never restamped). msg_cls defaults to sensor_msgs.msg.Image.
    """
    if encoding not in _WRITABLE:
        raise ConversionError(
            f"Image encoding '{encoding}' cannot be written (supported: {', '.join(_WRITABLE)})")
    array = np.asarray(array)
    channels = _WRITABLE[encoding]
    shape_ok = array.ndim == 2 if channels == 1 else array.ndim == 3 and array.shape[2] == 3
    if not shape_ok or array.dtype != np.uint8:
        raise ConversionError(
            f"{encoding} needs a uint8 array of shape "
            f"{'(H, W)' if channels == 1 else '(H, W, 3)'}, got {array.shape} {array.dtype}")
    height, width = int(array.shape[0]), int(array.shape[1])
    msg_cls = resolve_msg_cls(msg_cls, "Image")
    return msg_cls(
        header=header, height=height, width=width, encoding=encoding, is_bigendian=0,
        step=width * channels, data=data_field(msg_cls, array.reshape(-1)))


# what image_transport's `compressed` plugin writes in `format`: "<encoding>; <codec> compressed
# <encoding>" (e.g. "bgr8; jpeg compressed bgr8"); older drivers write just "jpeg" or "png"
_CODECS = {"jpeg": "JPEG", "jpg": "JPEG", "png": "PNG"}
_PIL_8BIT = ("RGB", "L", "RGBA", "LA", "P", "YCbCr", "CMYK", "1")


def any_image_to_rgb(msg: Any) -> np.ndarray:
    """(H, W, 3) uint8 RGB from an Image or a CompressedImage (told apart by its fields)."""
    if hasattr(msg, "format") and not hasattr(msg, "encoding"):
        return compressed_to_rgb(msg)
    return image_to_rgb(msg)


def compressed_codec(fmt: str) -> str:
    """The Pillow format name ('JPEG' or 'PNG') a CompressedImage `format` field names;
    ConversionError for anything else (compressedDepth, theora, ...)."""
    words = str(fmt).replace(";", " ").lower().split()
    codecs = {_CODECS[w] for w in words if w in _CODECS}
    if len(codecs) != 1 or "compresseddepth" in words:
        raise ConversionError(
            f"CompressedImage format '{fmt}' is not a JPEG or PNG colour image (supported: "
            "image_transport's 'compressed' plugin, e.g. 'bgr8; jpeg compressed bgr8', or "
            "'jpeg' / 'png')")
    return codecs.pop()


def compressed_to_rgb(msg: Any) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a JPEG or PNG CompressedImage (8-bit colour or grey).

    The `format` field must name JPEG or PNG and the bytes must be one; the colours come out
    as the codec stores them (image_transport encodes from BGR, so they are true colours).
    Raises ConversionError naming what is wrong for anything else.
    """
    codec = compressed_codec(msg.format)
    data = message_bytes(msg.data, "CompressedImage")
    try:
        with PilImage.open(io.BytesIO(data.tobytes()), formats=[codec]) as image:
            if image.mode not in _PIL_8BIT:
                raise ConversionError(
                    f"CompressedImage {codec} has pixel mode {image.mode}; only 8-bit colour "
                    "or grey images are supported")
            return np.array(image.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ConversionError(
            f"CompressedImage data ({data.size} bytes) is not a readable {codec} image "
            f"(format '{msg.format}'): {err}") from err
