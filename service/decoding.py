"""Request bodies -> uint8 frames at model resolution. Every way a body can be wrong is a 4xx."""

from __future__ import annotations

import io
import re

import cv2
import numpy as np

from model.frames import to_model_frame, to_uint8
from service.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
Body = bytes | bytearray  # a request body is read into one bytearray when its length is declared
Image = bytes | bytearray | memoryview  # one encoded frame: a view into the body for multipart
_PARAM = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')  # ; key=value or ; key="quoted"


def _params(value: str) -> dict[str, str]:
    """``; key=value`` parameters of a header value (keys lower-cased, quotes removed)."""
    out = {}
    for key, val in _PARAM.findall(";" + value.split(";", 1)[1] if ";" in value else ""):
        val = val.strip()
        if len(val) >= 2 and val[0] == val[-1] == '"':
            val = re.sub(r"\\(.)", r"\1", val[1:-1])
        out[key.lower()] = val
    return out


def multipart_files(body: Body, content_type: str, field: str, max_files: int, max_parts: int) -> list[Image]:
    """The files of ``field`` in a ``multipart/form-data`` body, in order, as views into the body (no
    copies: the body is held once).

    Other fields are skipped. A part of ``field`` without a filename is a 400 (text, not a file), more
    than ``max_files`` files or ``max_parts`` parts a 413, and any malformed body a 400. This replaces
    Starlette's streaming parser (callbacks per chunk, a spooled file per part), which cost about a
    tenth of the server's Python time a frame (RESULTS.md, "Service end to end"); the body is already
    in memory, within the request's byte limit, when it runs."""
    boundary = _params(content_type).get("boundary", "")
    if not boundary or len(boundary) > 200:
        raise BadRequest("malformed multipart body: the Content-Type names no boundary")
    delimiter = b"--" + boundary.encode("latin-1", "replace")
    start = body.find(delimiter)
    if start < 0 or (start > 0 and body[start - 2 : start] != b"\r\n"):
        raise BadRequest("malformed multipart body: the boundary never opens a part")
    separator = b"\r\n" + delimiter
    files: list[Image] = []
    view = memoryview(body)
    pos, parts = start + len(delimiter), 0
    while not body.startswith(b"--", pos):  # "--" after a delimiter closes the body
        line_end = body.find(b"\r\n", pos)
        if line_end < 0 or body[pos:line_end].strip(b" \t"):
            raise BadRequest("malformed multipart body: a boundary line is not followed by CRLF")
        headers_end = body.find(b"\r\n\r\n", line_end)
        next_part = body.find(separator, headers_end + 4) if headers_end >= 0 else -1
        if next_part < 0:
            raise BadRequest("malformed multipart body: a part is not closed by the boundary (truncated?)")
        parts += 1
        if parts > max_parts:
            raise PayloadTooLarge(f"more than {max_parts} parts in one multipart body")
        disposition: dict[str, str] = {}
        for line in body[line_end + 2 : headers_end].decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-disposition":
                disposition = _params(value)
        if disposition.get("name") == field:
            if "filename" not in disposition and "filename*" not in disposition:
                raise BadRequest(f"field '{field}' must hold image files, not text")
            files.append(view[headers_end + 4 : next_part])
            if len(files) > max_files:
                raise PayloadTooLarge(f"more than {max_files} frames in one request")
        pos = next_part + len(separator)
    return files


def header_dimensions(data: Image) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header without decoding, or None if not found."""
    head = bytes(data[:24])
    if head.startswith(PNG_MAGIC) and len(head) >= 24:
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    i = 2
    while i + 9 < len(data) and data[i] == 0xFF:
        marker, length = data[i + 1], int.from_bytes(data[i + 2 : i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
            return int.from_bytes(data[i + 7 : i + 9], "big"), int.from_bytes(data[i + 5 : i + 7], "big")
        i += 2 + length
    return None


def decode_image(data: Image, index: int, max_pixels: int) -> np.ndarray:
    """One JPEG or PNG -> BGR (or gray) image as OpenCV decodes it. The size is checked from the
    header before decoding, so a small file that decodes to a huge image is refused cheaply."""
    if not data:
        raise BadRequest(f"frame {index} is empty")
    magic = bytes(data[:8])
    if not (magic.startswith(JPEG_MAGIC) or magic.startswith(PNG_MAGIC)):
        raise UnsupportedMediaType(f"frame {index}: only JPEG and PNG images are accepted")
    dims = header_dimensions(data)
    if dims is not None and dims[0] * dims[1] > max_pixels:
        raise PayloadTooLarge(f"frame {index}: {dims[0]}x{dims[1]} is larger than {max_pixels} pixels")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise BadRequest(f"frame {index}: corrupt or truncated image")
    if image.shape[0] * image.shape[1] > max_pixels:
        raise PayloadTooLarge(f"frame {index}: {image.shape[1]}x{image.shape[0]} is larger than {max_pixels} pixels")
    return to_uint8(image)  # a PNG decodes to 8 or 16 bits; both convert


def images_to_frames(images: list[Image], size: tuple[int, int], channels: int, max_pixels: int) -> np.ndarray:
    """Encoded images of one camera, in order -> (N, H, W, C) uint8 at model size. One image is decoded
    at a time and shrunk at once: decoding them all first held every full-size picture together (256
    small PNGs of 4096x4096 within the byte limit: 13 GB)."""
    h, w = size
    frames = np.empty((len(images), h, w, channels), np.uint8)
    first: tuple[int, ...] | None = None
    for i, data in enumerate(images):
        image = decode_image(data, i, max_pixels)
        first = first or image.shape[:2]
        if image.shape[:2] != first:
            raise BadRequest(f"frames of one request must share one size: frame 0 is {first[1]}x{first[0]}, "
                             f"frame {i} is {image.shape[1]}x{image.shape[0]}")
        frames[i] = to_model_frame(image, size, channels)
    return frames


def npy_array(body: Body) -> np.ndarray:
    """The array of a ``.npy`` body as a view of the body (np.load would copy it; read-only for a
    ``bytes`` body, writable for the ``bytearray`` the server reads into). Only plain numeric arrays:
    no pickled objects."""
    try:
        head = io.BytesIO(body[: 1 << 17])  # magic and header (the header is a short dict)
        version = np.lib.format.read_magic(head)
        if version not in ((1, 0), (2, 0), (3, 0)):
            raise ValueError(f"unknown .npy format version {version}")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(head)  # versions 2 and 3 share the header layout
    except (ValueError, OSError, EOFError) as e:
        raise BadRequest(f"body is not a valid .npy array ({e})") from None
    if dtype.hasobject:
        raise BadRequest("body is not a valid .npy array (object arrays are not accepted)")
    count = int(np.prod(shape, dtype=np.int64))
    if len(body) - head.tell() != count * dtype.itemsize:
        raise BadRequest(f"body is not a valid .npy array ({len(body) - head.tell()} bytes of data for "
                         f"shape {shape} of {dtype}: truncated or padded)")
    flat = np.frombuffer(body, dtype, count=count, offset=head.tell())
    return flat.reshape(shape, order="F" if fortran else "C")


def npy_frames(body: Body, max_frames: int, max_pixels: int) -> np.ndarray:
    """An ``application/x-npy`` body's uint8 (N, H, W, 3) RGB array, checked (a view: no decoding); at
    most ``max_frames`` frames (413), as :func:`multipart_files` allows files."""
    array = npy_array(body)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[3] != 3:
        raise BadRequest(f"expected a uint8 array of shape (N, H, W, 3), got {array.dtype} {array.shape}")
    if array.shape[0] == 0:
        raise BadRequest("no frames in the request")
    if array.shape[0] > max_frames:
        raise PayloadTooLarge(f"{array.shape[0]} frames: more than {max_frames} in one request")
    if array.shape[1] * array.shape[2] > max_pixels or array.shape[1] == 0 or array.shape[2] == 0:
        raise PayloadTooLarge(f"frames of {array.shape[2]}x{array.shape[1]} are outside 1..{max_pixels} pixels")
    return array


def rgb_to_frames(array: np.ndarray, size: tuple[int, int], channels: int) -> np.ndarray:
    """:func:`npy_frames`' (N, H, W, 3) RGB -> (N, H, W, C) at model size."""
    return np.stack([to_model_frame(np.ascontiguousarray(f[..., ::-1]), size, channels) for f in array])


def heatmap_png(heatmap: np.ndarray, scale: float) -> bytes:
    """A (h, w) heatmap as an 8-bit grayscale PNG at token resolution: 255 = ``scale`` or more."""
    values = np.clip(np.asarray(heatmap, np.float32) / max(scale, 1e-12), 0, 1)
    ok, png = cv2.imencode(".png", (values * 255).round().astype(np.uint8))
    assert ok
    return png.tobytes()
