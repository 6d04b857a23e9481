"""Uploaded bytes to a model-ready tensor: format check, safe decoding, orientation, mode, size.

Only JPEG, PNG, WebP, BMP and GIF are decoded, chosen by the file's magic bytes (the declared content type is
only used to tell an unsupported type, 415, from a broken file, 400). Animated GIF and WebP give their first
frame; the EXIF orientation is applied; transparent pixels are composited on white; 16-bit greyscale is
scaled to 8 bits; palette, CMYK, bilevel and greyscale images are converted to the model's mode (RGB for 3
channels, L for 1). The aspect ratio is kept: the image is scaled so that it covers the model's input and the
centre is cropped (torchvision's resize-then-centre-crop), with bilinear, antialiased resampling.

Decoding stays within a budget: ``open_image`` reads only the header, refuses images over the pixel limits
(formats that must be decoded at full size, all but JPEG, have a lower one) and lets libjpeg decode at a
reduced scale; ``decode_pixels`` then box-reduces the image before any full-size copy is made and frees the
full-size pixels as soon as it is done; ``release_memory`` hands freed memory back to the operating system.
"""

from __future__ import annotations

import ctypes
import io
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import InvalidImage, PayloadTooLarge, ServiceError, UnsupportedMediaType

MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
)
MEDIA_TYPES = ("image/jpeg", "image/png", "image/webp", "image/bmp", "image/x-ms-bmp", "image/gif")
UNTYPED = ("", "application/octet-stream")
SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")
REDUCIBLE_MODES = ("L", "LA", "La", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "I", "F")
REDUCED_ON_LOAD = ("JPEG",)  # libjpeg decodes at 1/2, 1/4 or 1/8 scale; every other format in full
REDUCING_GAP = 3.0  # box-reduce to at least this many times the input side, then resample (Pillow's idea)
LARGE_PIXELS = 1_000_000  # a decode over this waits for a large-decode slot; memory is returned after
# libjpeg's progressive mode writes 10 scans, optimising encoders a few more; each costs a pass over the image
MAX_JPEG_SCANS = 100
FULL_PIXELS = "tsc_full_pixels"  # info key: the pixels a progressive JPEG decodes, whatever scale it draws

# The pixel limits are checked in open_image; Pillow's own error at twice its default stays.
warnings.simplefilter("ignore", Image.DecompressionBombWarning)


def sniff_format(data: bytes) -> str | None:
    """The Pillow format name of a supported image, from its first bytes; None for anything else."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in MAGIC if data.startswith(magic)), None)


def decode_image(
    data: bytes,
    content_type: str | None,
    channels: int,
    height: int,
    width: int,
    max_pixels: int,
    max_full_pixels: int | None = None,
) -> torch.Tensor:
    """Decode an upload into a float tensor [channels, height, width] in [0, 1], or raise a ServiceError."""
    image = open_image(data, content_type, max(height, width), max_pixels, max_full_pixels)
    return decode_pixels(image, channels, height, width)


def open_image(
    data: bytes, content_type: str | None, side: int, max_pixels: int, max_full_pixels: int | None = None
) -> Image.Image:
    """The upload's header, checked against the pixel limits, JPEG set to decode at the scale ``side`` needs.

    ``max_full_pixels`` (default ``max_pixels``) bounds the formats without reduce-on-load, which are decoded
    at full size whatever the model needs. No pixel is decoded yet: ``decode_pixels`` does that.
    """
    if not data:
        raise InvalidImage("the file is empty")
    fmt = sniff_format(data)
    if fmt is None:
        declared = (content_type or "").split(";")[0].strip().lower()
        if declared not in MEDIA_TYPES + UNTYPED:
            raise UnsupportedMediaType(f"{declared} is not supported; send JPEG, PNG, WebP, BMP or GIF")
        raise InvalidImage("the file is not a JPEG, PNG, WebP, BMP or GIF image")
    with _decoding(fmt):
        image = Image.open(io.BytesIO(data), formats=[fmt])
        pixels = image.width * image.height
        if pixels > max_pixels:
            raise PayloadTooLarge(
                f"the image is {image.width}x{image.height} pixels, "
                f"more than the limit of {max_pixels} pixels"
            )
        full = max_pixels if max_full_pixels is None else max_full_pixels
        if fmt not in REDUCED_ON_LOAD and pixels > full:
            raise PayloadTooLarge(
                f"the {fmt} image is {image.width}x{image.height} pixels; {fmt} is decoded at full size, so "
                f"at most {full} pixels are accepted for this model (JPEG is reduced while it decodes): "
                "send a smaller image or a JPEG"
            )
        if fmt == "JPEG":
            _check_scans(data, image)
            image.draft(None, (side, side))  # libjpeg decodes at the smallest scale that covers the input
    return image


def _check_scans(data: bytes, image: Image.Image) -> None:
    """Refuse a JPEG with more scans than any encoder writes (each one costs a pass over every pixel).

    Start-of-scan markers cannot occur inside entropy-coded data (an 0xFF byte there is followed by 0x00
    or a restart marker), so counting them counts the scans (an EXIF thumbnail's may add a few). A
    progressive JPEG is decoded in full before it is scaled: its cost is its full size.
    """
    scans = data.count(b"\xff\xda")
    if scans > MAX_JPEG_SCANS:
        raise PayloadTooLarge(
            f"the JPEG has {scans} scans, more than the {MAX_JPEG_SCANS} any encoder writes; re-encode it"
        )
    if image.info.get("progressive") or image.info.get("progression"):
        image.info[FULL_PIXELS] = image.width * image.height


def is_large(image: Image.Image) -> bool:
    """Whether decoding ``image`` is large: over LARGE_PIXELS as opened (after any reduce-on-load), or, for
    a progressive JPEG, at its full size."""
    return image.info.get(FULL_PIXELS, image.width * image.height) > LARGE_PIXELS


def decode_pixels(image: Image.Image, channels: int, height: int, width: int) -> torch.Tensor:
    """Decode an image from ``open_image`` for a model's input (reduce, orient, convert, fit); close it."""
    try:
        with _decoding(image.format or "image"):
            image.load()
            reduced = _reduce(image, width, height)
            ImageOps.exif_transpose(reduced, in_place=True)
            fitted = _fit(_to_mode(reduced, channels), width, height)
            del reduced
    finally:
        image.close()  # frees the full-size pixels now, not whenever the last reference goes
    pixels = torch.from_numpy(np.array(fitted, dtype=np.uint8))
    pixels = pixels.unsqueeze(0) if pixels.ndim == 2 else pixels.permute(2, 0, 1)
    return pixels.float().div_(255.0)


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``; None where the C library has none (musl, macOS)."""
    return getattr(ctypes.CDLL(None), "malloc_trim", None)


MALLOC_TRIM = _malloc_trim()


def release_memory() -> None:
    """Return the heap's free memory to the operating system (freed pages otherwise stay in the process)."""
    if MALLOC_TRIM is not None:
        MALLOC_TRIM(0)


@contextmanager
def _decoding(fmt: str) -> Iterator[None]:
    """Turn whatever Pillow raises on a hostile ``fmt`` file into the service's 400 or 413."""
    try:
        yield
    except Image.DecompressionBombError as exc:
        raise PayloadTooLarge(f"the image is too large to decode: {exc}") from exc
    except ServiceError:
        raise
    except UnidentifiedImageError as exc:
        raise InvalidImage(f"the {fmt} header is corrupt") from exc
    except Exception as exc:  # Pillow raises many types on hostile input; all mean "cannot decode"
        raise InvalidImage(f"cannot decode the {fmt} image: {exc}") from exc


def _reduce(image: Image.Image, width: int, height: int) -> Image.Image:
    """Box-average by the largest whole factor that leaves REDUCING_GAP times the input, before any copy."""
    factor = int(min(image.size) / max(width, height) / REDUCING_GAP)
    if factor < 2 or image.mode not in REDUCIBLE_MODES:
        return image
    return image.reduce(factor)


def _to_mode(image: Image.Image, channels: int) -> Image.Image:
    if image.mode in SIXTEEN_BIT_MODES:
        levels = np.asarray(image, dtype=np.float32) * (255.0 / 65535.0)
        image = Image.fromarray(np.clip(levels + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return image.convert("RGB" if channels == 3 else "L")


def crop_box(size: tuple[int, int], width: int, height: int) -> tuple[float, float, float, float]:
    """The centred box of ``width:height`` aspect that fills an image of ``size``, always inside it.

    ``width / scale`` can round a hair past the image's side, and Pillow refuses a box with a negative
    offset or beyond the image: every edge is clamped to the image.
    """
    image_w, image_h = size
    scale = max(width / image_w, height / image_h)
    crop_w, crop_h = min(image_w, width / scale), min(image_h, height / scale)
    left, top = max(0.0, (image_w - crop_w) / 2), max(0.0, (image_h - crop_h) / 2)
    return left, top, min(float(image_w), left + crop_w), min(float(image_h), top + crop_h)


def _fit(image: Image.Image, width: int, height: int) -> Image.Image:
    box = crop_box(image.size, width, height)
    return image.resize((width, height), Image.Resampling.BILINEAR, box=box, reducing_gap=REDUCING_GAP)
