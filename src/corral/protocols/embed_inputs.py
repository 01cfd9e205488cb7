"""What every embedding door takes, checked once for all of them (OpenAI's /v1/embeddings and the
sidecar's embed, the Hugging Face feature-extraction task): a string, or a list whose items are
strings, ``{"text": "..."}`` or ``{"image": "<data URL or base64>"}`` (the item shape Jina's and
Cohere's v2 embedding APIs use for images); one such item alone, or raw image bytes (a body that is the
image), is one input. Images are decoded and checked (:mod:`corral.media`: not
an image 400, too many pixels 413) before any model is touched; an ``http(s)`` URL is fetched only
where the server allows remote media (:mod:`corral.remote_media`). Every error names the item
(``input[2].image``). A model that embeds text only refuses the images later, naming itself."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from corral.errors import UsageError
from corral.media import BadMediaError, MediaTooLargeError, decode_image
from corral.tasks import EmbedImage

if TYPE_CHECKING:
    from corral.runtime.runtime import Runtime

MAX_IMAGES = 64  # images one request may carry (each decoded in memory, up to --max-image-pixels)
ITEM_KEYS = ("text", "image")
SHAPE = 'a string, or a list of strings, {"text": ...} and {"image": "<data URL or base64>"} items'


async def embed_inputs(value: Any, runtime: Runtime, *, field: str = "input", max_inputs: int,
                       blank: bool = True) -> tuple[tuple[str | EmbedImage, ...], bool]:
    """(the inputs, in order, images decoded; whether ``value`` was one input: a string or one item
    object). ``blank``: whether a text of spaces only counts (an empty one never does)."""
    if isinstance(value, str):
        return (_text(value, field, blank),), True
    if isinstance(value, dict):
        return await _inputs([(field, value)], runtime, field, blank), True
    if isinstance(value, (bytes, bytearray)):  # a body that is the image itself (the HF door)
        return (EmbedImage(await _image(bytes(value), field, runtime)),), True
    if not isinstance(value, list) or not value:
        raise UsageError(f"{field} must be {SHAPE}")
    if len(value) > max_inputs:
        raise UsageError(f"{field} may hold at most {max_inputs} items", "split them into several requests")
    return await _inputs([(f"{field}[{i}]", item) for i, item in enumerate(value)], runtime, field, blank), False


async def _inputs(named: list[tuple[str, Any]], runtime: Runtime, field: str,
                  blank: bool) -> tuple[str | EmbedImage, ...]:
    """The items (each with its place, for the errors), texts checked and images decoded, in order."""
    items: list[str | EmbedImage | None] = []
    pending: list[tuple[int, str, str]] = []  # (position, place, the image's text) to decode
    for i, (where, item) in enumerate(named):
        if isinstance(item, str):
            items.append(_text(item, where, blank))
        elif _key(item, where) == "text":
            items.append(_text(item["text"], f"{where}.text", blank))
        else:
            items.append(None)
            pending.append((i, f"{where}.image", _image_text(item["image"], f"{where}.image")))
    if len(pending) > MAX_IMAGES:
        raise UsageError(f"{field} may hold at most {MAX_IMAGES} images; this one has {len(pending)}",
                         "split them into several requests")
    images = await asyncio.gather(*(_image(text, where, runtime) for _, where, text in pending))
    for (i, _, _), image in zip(pending, images, strict=True):
        items[i] = EmbedImage(image)
    return tuple(x for x in items if x is not None)


def _text(value: Any, where: str, blank: bool) -> str:
    if not isinstance(value, str) or not value or (not blank and not value.strip()):
        raise UsageError(f"{where} must be a non-empty string", field_shape(where))
    return value


def field_shape(where: str) -> str:
    """The hint of a malformed item: the shapes the field takes."""
    return f"{where.split('[')[0].split('.')[0]} takes {SHAPE}"


def _key(item: Any, where: str) -> str:
    """Which of ``text`` / ``image`` an item object holds (exactly one, nothing else)."""
    if not isinstance(item, dict):
        raise UsageError(f"{where} must be a string or an object with \"text\" or \"image\"", field_shape(where))
    keys = [k for k in ITEM_KEYS if k in item]
    others = sorted(str(k) for k in item if k not in ITEM_KEYS)
    if others:
        raise UsageError(f"{where} has an unknown field {others[0]!r}", 'an item holds only "text" or "image"')
    if len(keys) != 1:
        raise UsageError(f'{where} must hold exactly one of "text" and "image"', field_shape(where))
    return keys[0]


def _image_text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise UsageError(f"{where} must be a data: URL or base64 text of an image")
    return value


async def _image(value: str | bytes, where: str, runtime: Runtime) -> Any:
    """The decoded image of one item (its text, or raw bytes), or the media error with the item's place
    in front of it."""
    from corral.remote_media import load_image

    pixels = runtime.settings.runtime.max_image_pixels
    try:
        if isinstance(value, bytes):
            return await asyncio.to_thread(decode_image, value, max_pixels=pixels)
        return await load_image(value, runtime.media, pixels)
    except (BadMediaError, MediaTooLargeError) as exc:
        raise type(exc)(f"{where}: {exc.message}", exc.hint) from None
