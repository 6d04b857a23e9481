"""Decoding uploads: every supported format and mode, orientation, sizes, and hostile files."""

from __future__ import annotations

import random
import re
import struct
import time
import zlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from servicetools import encode, picture

from service.errors import InvalidImage, PayloadTooLarge, UnsupportedMediaType
from service.images import crop_box, decode_image, is_large, open_image, sniff_format

LIMIT = 40_000_000


def decode(
    data: bytes, content_type: str | None = "application/octet-stream", channels: int = 3
) -> torch.Tensor:
    return decode_image(data, content_type, channels, 32, 32, LIMIT)


@pytest.mark.parametrize(
    ("fmt", "mode", "params"),
    [
        ("PNG", "RGB", {}),
        ("PNG", "RGBA", {}),
        ("PNG", "LA", {}),
        ("PNG", "L", {}),
        ("PNG", "P", {}),
        ("PNG", "1", {}),
        ("JPEG", "RGB", {"quality": 90}),
        ("JPEG", "L", {}),
        ("JPEG", "CMYK", {}),
        ("WEBP", "RGB", {}),
        ("WEBP", "RGBA", {}),
        ("BMP", "RGB", {}),
        ("BMP", "P", {}),
        ("GIF", "P", {}),
    ],
)
@pytest.mark.parametrize("channels", [3, 1])
def test_every_format_and_mode_decodes_to_the_model_input(
    fmt: str, mode: str, params: dict, channels: int
) -> None:
    pixels = decode(encode(picture(mode), fmt, **params), channels=channels)
    assert pixels.shape == (channels, 32, 32)
    assert pixels.dtype == torch.float32
    assert 0.0 <= pixels.min() <= pixels.max() <= 1.0
    assert pixels.std() > 0.05  # the picture survived, not a flat field


def test_sixteen_bit_greyscale_is_scaled_not_clipped() -> None:
    ramp = Image.fromarray(
        (torch.linspace(0, 65535, 64).repeat(64, 1)).to(torch.int32).numpy().astype("uint16")
    )
    pixels = decode(encode(ramp), channels=1)
    assert pixels[0, :, 0].mean() < 0.1
    assert pixels[0, :, -1].mean() > 0.9


def test_transparent_pixels_are_composited_on_white() -> None:
    clear = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    assert torch.allclose(decode(encode(clear)), torch.ones(3, 32, 32))


def test_exif_orientation_is_applied() -> None:
    # Stored as a wide image, left half black and right half white; orientation 6 means "rotate 90° clockwise
    # to display", after which the top is black and the bottom white.
    stored = Image.new("L", (64, 32), 0)
    stored.paste(255, (32, 0, 64, 32))
    exif = Image.Exif()
    exif[0x0112] = 6
    pixels = decode(encode(stored.convert("RGB"), "JPEG", exif=exif.tobytes()), channels=1)[0]
    assert pixels[:12].mean() < 0.1
    assert pixels[-12:].mean() > 0.9


def test_animated_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (32, 32), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    red, green, blue = decode(data).mean(dim=(1, 2))
    assert red > 0.9 and green < 0.1 and blue < 0.1


def test_aspect_ratio_is_kept_by_cropping_the_centre() -> None:
    # A wide image with black side bands: cropping the centre square drops them, stretching would not.
    wide = Image.new("L", (96, 32), 0)
    wide.paste(255, (32, 0, 64, 32))
    assert decode(encode(wide), channels=1).min() > 0.9


def test_large_jpeg_is_decoded_at_reduced_scale() -> None:
    big = picture(size=(4000, 3000))
    assert decode(encode(big, "JPEG")).shape == (3, 32, 32)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` and holds one empty IDAT: a decompression-bomb header."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("side", [7000, 20000, 200000])
def test_absurd_dimensions_are_refused_before_decoding(side: int) -> None:
    with pytest.raises(PayloadTooLarge, match=r"pixels|too large"):
        decode(png_header_only(side, side))


def test_pixel_limit_is_configurable() -> None:
    with pytest.raises(PayloadTooLarge):
        decode_image(encode(picture(size=(100, 100))), "image/png", 3, 32, 32, max_pixels=9999)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x89PNG\r\n\x1a\n",
        b"\x89PNG\r\n\x1a\n" + b"\0" * 100,
        b"\xff\xd8\xff\xe0" + b"junk" * 10,
        b"GIF89a\x01\x00",
        b"BM" + b"\xff" * 60,
        b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\0" * 8,
        b"not an image at all",
    ],
)
def test_broken_files_are_invalid_images(data: bytes) -> None:
    with pytest.raises(InvalidImage):
        decode(data)


def test_truncated_png_is_an_invalid_image() -> None:
    data = encode(picture(size=(200, 200)))
    with pytest.raises(InvalidImage, match="PNG"):
        decode(data[: len(data) // 2])


@pytest.mark.parametrize("content_type", ["text/plain", "application/pdf", "image/tiff", "image/svg+xml"])
def test_unsupported_types_are_415(content_type: str) -> None:
    with pytest.raises(UnsupportedMediaType, match=re.escape(content_type)):
        decode(b"%PDF-1.4 or whatever else", content_type)


def test_supported_bytes_win_over_a_wrong_content_type() -> None:
    assert decode(encode(picture()), "text/plain").shape == (3, 32, 32)


def test_tiff_bytes_are_not_decoded_even_when_declared_as_png() -> None:
    with pytest.raises(InvalidImage):
        decode(encode(picture(), "TIFF"), "image/png")


@pytest.mark.parametrize(
    ("fmt", "name"), [("PNG", "PNG"), ("JPEG", "JPEG"), ("GIF", "GIF"), ("BMP", "BMP"), ("WEBP", "WEBP")]
)
def test_sniffing_names_the_format(fmt: str, name: str) -> None:
    assert sniff_format(encode(picture("RGB"), fmt)) == name


@settings(max_examples=2000, deadline=None)
@given(
    st.integers(1, 8192),
    st.integers(1, 8192),
    st.sampled_from([(32, 32), (224, 224), (32, 48), (299, 299), (1, 1), (3, 500)]),
)
def test_the_crop_box_lies_inside_every_image(image_w: int, image_h: int, model: tuple[int, int]) -> None:
    width, height = model
    left, top, right, bottom = crop_box((image_w, image_h), width, height)
    assert 0 <= left < right <= image_w and 0 <= top < bottom <= image_h
    # the box keeps the model's aspect ratio up to a pixel of rounding, and fills one side of the image
    assert right - left == pytest.approx(image_w, abs=1e-6) or bottom - top == pytest.approx(
        image_h, abs=1e-6
    )


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "GIF"])
def test_every_size_decodes(fmt: str) -> None:
    """Sizes whose crop box rounds past the image (49x49 PNG, 98x98 JPEG were refused) and random ones."""
    rng = random.Random(fmt)
    sizes = [(49, 49), (98, 98), (1, 1), (1, 4096), (4096, 1), (7000, 5714)]
    sizes += [(rng.randint(1, 2000), rng.randint(1, 2000)) for _ in range(40)]
    for w, h in sizes:
        if fmt in ("WEBP", "GIF", "BMP") and w * h > 4_000_000:  # the full-size formats: a smaller sample
            continue
        data = encode(Image.new("RGB", (w, h), (200, 100, 50)), fmt)
        pixels = decode_image(data, None, 3, 32, 32, LIMIT)
        assert pixels.shape == (3, 32, 32), (w, h)


def _progressive(size: tuple[int, int], repeat_last_scan: int = 0) -> bytes:
    """A progressive JPEG whose last scan is written ``repeat_last_scan`` more times (a scan bomb)."""
    data = encode(Image.new("RGB", size, (90, 140, 200)), "JPEG", progressive=True)
    last = data.rindex(b"\xff\xda")
    return data[:-2] + data[last:-2] * repeat_last_scan + data[-2:]


def test_a_jpeg_with_more_scans_than_any_encoder_writes_is_refused_before_decoding() -> None:
    assert decode(_progressive((640, 480))).shape == (3, 32, 32)  # an ordinary progressive JPEG
    bomb = _progressive((640, 480), repeat_last_scan=10_000)
    started = time.perf_counter()
    with pytest.raises(PayloadTooLarge, match=r"has 10\d\d\d scans, more than the 100 any encoder writes"):
        decode(bomb)
    assert time.perf_counter() - started < 1  # refused from the bytes, not after 10,000 passes


def test_a_progressive_jpeg_is_as_large_as_its_full_size() -> None:
    """libjpeg reduces a baseline JPEG while decoding; a progressive one is decoded in full first."""
    baseline = open_image(encode(Image.new("RGB", (2000, 2000)), "JPEG"), None, 32, LIMIT)
    progressive = open_image(_progressive((2000, 2000)), None, 32, LIMIT)
    assert baseline.size == progressive.size == (250, 250)  # both drawn at 1/8
    assert not is_large(baseline) and is_large(progressive)
