"""Uploaded bytes to a model-ready tensor: format check, safe decoding, orientation, mode, size.

Only JPEG, PNG, WebP, BMP and GIF are decoded, chosen by the file's magic bytes (the declared content type is
only used to tell an unsupported type, 415, from a broken file, 400). Animated GIF and WebP give their first
frame; the EXIF orientation is applied; transparent pixels are composited on white; 16-bit greyscale is
scaled to 8 bits; palette, CMYK, bilevel and greyscale images are converted to the model's mode (RGB for 3
channels, L for 1). The aspect ratio is kept: the image is scaled so that it covers the model's input and the
centre is cropped (torchvision's resize-then-centre-crop), with bilinear, antialiased resampling.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import InvalidImage, PayloadTooLarge, UnsupportedMediaType

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

# The pixel limit is TSC_MAX_IMAGE_PIXELS, checked in _open; Pillow's own error at twice its default stays.
warnings.simplefilter("ignore", Image.DecompressionBombWarning)


def sniff_format(data: bytes) -> str | None:
    """The Pillow format name of a supported image, from its first bytes; None for anything else."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in MAGIC if data.startswith(magic)), None)


def decode_image(
    data: bytes, content_type: str | None, channels: int, height: int, width: int, max_pixels: int
) -> torch.Tensor:
    """Decode an upload into a float tensor [channels, height, width] in [0, 1], or raise a ServiceError."""
    if not data:
        raise InvalidImage("the file is empty")
    fmt = sniff_format(data)
    if fmt is None:
        declared = (content_type or "").split(";")[0].strip().lower()
        if declared not in MEDIA_TYPES + UNTYPED:
            raise UnsupportedMediaType(f"{declared} is not supported; send JPEG, PNG, WebP, BMP or GIF")
        raise InvalidImage("the file is not a JPEG, PNG, WebP, BMP or GIF image")
    try:
        image = _open(data, fmt, max_pixels, max(height, width))
        image = _fit(_to_mode(ImageOps.exif_transpose(image), channels), width, height)
    except Image.DecompressionBombError as exc:
        raise PayloadTooLarge(f"the image is too large to decode: {exc}") from exc
    except PayloadTooLarge:
        raise
    except UnidentifiedImageError as exc:
        raise InvalidImage(f"the {fmt} header is corrupt") from exc
    except Exception as exc:  # Pillow raises many types on hostile input; all mean "cannot decode"
        raise InvalidImage(f"cannot decode the {fmt} image: {exc}") from exc
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8))
    pixels = pixels.unsqueeze(0) if pixels.ndim == 2 else pixels.permute(2, 0, 1)
    return pixels.float().div_(255.0)


def _open(data: bytes, fmt: str, max_pixels: int, side: int) -> Image.Image:
    image = Image.open(io.BytesIO(data), formats=[fmt])
    if image.width * image.height > max_pixels:
        raise PayloadTooLarge(
            f"the image is {image.width}x{image.height} pixels, more than the limit of {max_pixels} pixels"
        )
    if fmt == "JPEG":
        image.draft(
            None, (side, side)
        )  # let libjpeg decode at the smallest scale that still covers the input
    return image


def _to_mode(image: Image.Image, channels: int) -> Image.Image:
    if image.mode in SIXTEEN_BIT_MODES:
        levels = np.asarray(image, dtype=np.float32) * (255.0 / 65535.0)
        image = Image.fromarray(np.clip(levels + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return image.convert("RGB" if channels == 3 else "L")


def _fit(image: Image.Image, width: int, height: int) -> Image.Image:
    scale = max(width / image.width, height / image.height)
    crop_w, crop_h = width / scale, height / scale
    left, top = (image.width - crop_w) / 2, (image.height - crop_h) / 2
    box = (left, top, left + crop_w, top + crop_h)
    return image.resize((width, height), Image.Resampling.BILINEAR, box=box, reducing_gap=3.0)
