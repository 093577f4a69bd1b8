"""Read an image file or bytes into a uint8 array, refusing oversized images before decoding.

The size is read from the file header (PNG, JPEG, BMP, TIFF, WebP), so a small file that
claims a huge image (a decompression bomb) never reaches the decoder; the decoded size counts its
channels and 16-bit samples too. A file is read up to MAX_IMAGE_BYTES, whatever it is (a device
such as /dev/zero has no size to check first). The caps live in edge_verify.edge.limits.
"""
import os
import struct
from pathlib import Path

import cv2
import numpy as np

from edge_verify.edge.errors import ImageError
from edge_verify.edge.limits import MAX_DECODED_BYTES, MAX_IMAGE_BYTES, MAX_PIXELS, MAX_SIDE

# Bytes a decoded pixel may take at most, per format (PNG: read from its header).
BYTES_PER_PIXEL = {"JPEG": 3, "BMP": 4, "TIFF": 8, "WebP": 4}
PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 4, 6: 4}  # colour type -> channels as OpenCV decodes them

FORMATS = "PNG, JPEG, BMP, TIFF or WebP"


def load_image(source) -> np.ndarray:
    """Decode a path or raw bytes into uint8: HxW grey, HxWx3 BGR or HxWx4 BGRA."""
    name = "the image" if isinstance(source, (bytes, bytearray, memoryview)) else str(source)
    data = _read_bytes(source, name)
    if not data:
        raise ImageError("empty", f"{name} is empty (0 bytes)")
    kind, width, height = image_header(data, name)
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise ImageError("too_large", f"{name} is {width}x{height} pixels, larger than this "
                                      f"tool accepts ({MAX_PIXELS // 1_000_000} Mpixel, {MAX_SIDE} px a side)")
    if width * height * _bytes_per_pixel(kind, data) > MAX_DECODED_BYTES:
        raise ImageError("too_large", f"{name} is {width}x{height} pixels of {_bytes_per_pixel(kind, data)} "
                                      f"bytes, more than this tool decodes ({MAX_DECODED_BYTES // 1_000_000} MB)")
    # JPEG: any flag but UNCHANGED applies the EXIF orientation (phone photos); others keep alpha.
    flags = cv2.IMREAD_ANYCOLOR if kind == "JPEG" else cv2.IMREAD_UNCHANGED
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None or image.size == 0:
        raise ImageError("unreadable", f"{name} looks like a {kind} file but is damaged or truncated")
    if image.dtype == np.uint16:
        image = cv2.convertScaleAbs(image, alpha=1 / 257)
    elif image.dtype != np.uint8:
        raise ImageError("unreadable", f"{name} uses a pixel format ({image.dtype}) this tool does not read")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    return image


def _read_bytes(source, name: str) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"load_image takes a path or bytes, not {type(source).__name__}")
    path = Path(source)
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_IMAGE_BYTES + 1)
        if len(data) > MAX_IMAGE_BYTES:
            raise ImageError("too_large", f"{name} is larger than {MAX_IMAGE_BYTES // 1_000_000} MB")
        return data
    except FileNotFoundError:
        raise ImageError("unreadable", f"{name} does not exist") from None
    except IsADirectoryError:
        raise ImageError("unreadable", f"{name} is a folder, not an image file") from None
    except OSError as error:
        raise ImageError("unreadable", f"cannot read {name}: {error.strerror or error}") from None


def _bytes_per_pixel(kind: str, data: bytes) -> int:
    """The most bytes one decoded pixel can take (PNG: its channels and bit depth)."""
    if kind != "PNG":
        return BYTES_PER_PIXEL[kind]
    depth, colour = (data[24:26] + b"\0\0")[:2]
    return PNG_CHANNELS.get(colour, 4) * (2 if depth == 16 else 1)


def image_header(data: bytes, name: str = "the image") -> tuple[str, int, int]:
    """(format, width, height) read from the header alone; ImageError if not a known image."""
    try:
        if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
            return ("PNG", *struct.unpack(">II", data[16:24]))
        if data.startswith(b"\xff\xd8"):
            return ("JPEG", *_jpeg_size(data))
        if data.startswith(b"BM"):
            return ("BMP", *_bmp_size(data))
        if data[:4] in (b"II*\x00", b"MM\x00*"):
            return ("TIFF", *_tiff_size(data))
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return ("WebP", *_webp_size(data))
    except (struct.error, ValueError, KeyError, IndexError):
        raise ImageError("unreadable", f"{name} has a damaged image header") from None
    raise ImageError("not_an_image", f"{name} is not a {FORMATS} image")


def _jpeg_size(data: bytes) -> tuple[int, int]:
    # Walk the marker segments up to the first start-of-frame (SOF0..SOF15 but DHT, JPG, DAC).
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ValueError("not a marker")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            if width == 0 or height == 0:
                raise ValueError("no size")
            return width, height
        pos += 2 + length
    raise ValueError("no frame header")


def _bmp_size(data: bytes) -> tuple[int, int]:
    if struct.unpack("<I", data[14:18])[0] == 12:  # OS/2 core header
        return struct.unpack("<HH", data[18:22])
    width, height = struct.unpack("<ii", data[18:26])
    return abs(width), abs(height)


def _tiff_size(data: bytes) -> tuple[int, int]:
    order = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack(order + "I", data[4:8])
    (count,) = struct.unpack(order + "H", data[ifd:ifd + 2])
    size = {}
    for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
        tag, kind = struct.unpack(order + "HH", data[entry:entry + 4])
        if tag in (256, 257):  # ImageWidth, ImageLength: SHORT (3) or LONG (4)
            size[tag] = struct.unpack(order + ("H" if kind == 3 else "I"), data[entry + 8:entry + (10 if kind == 3 else 12)])[0]
    return size[256], size[257]


def _webp_size(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    if chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    raise ValueError("unknown WebP chunk")
