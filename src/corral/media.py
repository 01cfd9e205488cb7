"""Media a request carries, decoded before any model sees it: images from bytes, base64 or a
``data:`` URL, with every way an image can be bad named in the error (not an image, truncated,
more pixels than allowed: a decompression bomb is refused from its header, before its pixels are
decoded). Pillow is imported here only; no URL is ever fetched (remote media is off by default)."""

from __future__ import annotations

import base64
import binascii
import io
import re
from typing import Any

from corral.errors import CorralError

DEFAULT_MAX_PIXELS = 40_000_000  # ~ a 7700 x 5200 photo
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")  # a URL's scheme (RFC 3986)


class BadMediaError(CorralError):
    """The bytes given as an image (or other media) cannot be used."""

    http_status = 400


class MediaTooLargeError(CorralError):
    http_status = 413


def url_scheme(value: str) -> str | None:
    """The scheme of ``value`` (lowercased: ``http``, ``data``, ``file``, ...) when it is a URL, else None
    (base64 text holds no colon)."""
    found = _SCHEME.match(value)
    return found.group(1).lower() if found else None


def media_bytes(value: Any, what: str = "image") -> bytes:
    """Bytes of raw bytes, a base64 string or a ``data:...;base64,`` URL; never a fetched URL."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if not isinstance(value, str) or not value:
        raise BadMediaError(f"the {what} must be bytes, base64 text or a data: URL")
    if url_scheme(value) == "data":
        head, _, value = value.partition(",")
        if ";base64" not in head.lower():
            raise BadMediaError(f"the {what} data: URL must be base64-encoded")
    scheme = url_scheme(value)  # also inside a data: URL (a client that wrapped a link in one)
    if scheme in ("http", "https"):
        raise BadMediaError(f"the {what} is a URL; corral does not fetch remote media",
                            "send the bytes, base64-encoded, or a data: URL")
    if scheme is not None:
        raise BadMediaError(f"the {what} is a {scheme}: URL, which corral never reads",
                            "send the bytes, base64-encoded, or a data: URL")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadMediaError(f"the {what} is not valid base64") from None


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Any:
    """An RGB ``PIL.Image`` of ``data``; BadMediaError or MediaTooLargeError naming the problem."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise BadMediaError("the image is empty")
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
    except Image.DecompressionBombError:
        raise MediaTooLargeError(f"the image has more than {max_pixels} pixels") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise BadMediaError("the data is not an image corral can read (PNG, JPEG, GIF, WebP, BMP, TIFF, ...)") from None
    width, height = image.size
    if width * height > max_pixels:
        raise MediaTooLargeError(f"the image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}",
                                 "send a smaller image (the server's --max-image-pixels)")
    try:
        image.load()
    except (OSError, ValueError, SyntaxError) as exc:
        raise BadMediaError(f"the image is truncated or corrupt ({exc})") from None
    return image.convert("RGB")
