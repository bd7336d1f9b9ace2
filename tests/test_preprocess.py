"""Bringing an image of any size and polarity to MNIST's form: 20x20 box, centred by mass, white ink."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from stages.core.errors import PipelineError
from stages.core.preprocess import centre_of_mass, load_digit, to_mnist
from stages.core.synthetic import draw_digit


def photograph(digit: np.ndarray, size: tuple[int, int] = (100, 120), at: tuple[int, int] = (5, 30)) -> np.ndarray:
    """``digit`` scaled 3x (bilinear) onto a black canvas of ``size`` (width, height), off centre."""
    canvas = Image.new("L", size)
    canvas.paste(Image.fromarray(digit).resize((84, 84), Image.Resampling.BILINEAR), at)
    return np.asarray(canvas)


def ink_box(image: np.ndarray) -> tuple[int, int]:
    rows, cols = np.nonzero(image > 64)
    return rows.max() - rows.min() + 1, cols.max() - cols.min() + 1


@pytest.mark.parametrize("label", range(10))
def test_a_rescaled_off_centre_digit_comes_back_to_mnist_form(label):
    digit = draw_digit(label).numpy()
    result = to_mnist(photograph(digit))
    assert result.shape == (28, 28) and result.dtype == np.uint8
    assert np.abs(result.astype(int) - digit).mean() < 20


def test_dark_ink_on_light_paper_is_inverted_to_white_on_black():
    photo = photograph(draw_digit(8).numpy())
    assert np.array_equal(to_mnist(255 - photo), to_mnist(photo))
    assert to_mnist(255 - photo)[0, 0] == 0


@pytest.mark.parametrize(("height", "width"), [(200, 30), (30, 200), (50, 50)])
def test_the_inks_bounding_box_is_fitted_into_20x20_keeping_its_aspect_ratio(height, width):
    photo = np.full((300, 300), 230, dtype=np.uint8)  # light paper
    photo[40 : 40 + height, 60 : 60 + width] = 20
    box = ink_box(to_mnist(photo))
    assert max(box) == 20
    assert box[0] / box[1] == pytest.approx(height / width, rel=0.2)


def test_the_centre_of_mass_lands_at_the_centre_of_the_field():
    photo = np.zeros((90, 140), dtype=np.uint8)
    photo[5:60, 100:130] = 255  # a block in a corner
    photo[5:15, 70:100] = 255  # and a flag, so the mass is not the box's middle
    row, col = centre_of_mass(to_mnist(photo))
    # Index coordinates: pixel i spans [i, i + 1], so the field's centre 14, 14 is index 13.5.
    assert abs(row + 0.5 - 14) <= 0.5 and abs(col + 0.5 - 14) <= 0.5


def test_an_image_without_ink_is_refused():
    with pytest.raises(ValueError, match="no digit"):
        to_mnist(np.full((50, 50), 200, dtype=np.uint8))


def encoded(image: Image.Image, format: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def blank_png(width: int, height: int) -> bytes:
    """A real 1-bit PNG of ``width`` x ``height`` white pixels: a few KB on disk for millions of
    pixels, a decompression bomb at 20000x20000."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor, row = zlib.compressobj(9), b"\0" + b"\xff" * ((width + 7) // 8)  # filter byte, then pixels
    rows = b"".join(compressor.compress(row * 100) for _ in range(height // 100))
    rows += compressor.compress(row * (height % 100)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


PHOTO = photograph(draw_digit(4).numpy())  # light ink on black


@pytest.mark.parametrize(
    ("mode", "format", "factor"),
    [("I;16", "PNG", 257), ("I;16", "PNG", 16), ("I", "TIFF", 65537)],
    ids=["16-bit", "12-bit-in-16", "32-bit"],
)
def test_a_scan_of_more_than_8_bits_reads_like_its_8_bit_copy(mode, format, factor):
    wide = Image.fromarray(PHOTO.astype(np.uint32) * factor).convert(mode)
    assert wide.mode == mode and np.asarray(wide).max() > 255  # what convert("L") clips to one shade
    assert np.array_equal(load_digit(encoded(wide, format)).numpy(), to_mnist(PHOTO))


def test_dark_ink_on_a_transparent_background_reads_as_on_white_paper():
    on_paper = to_mnist(255 - PHOTO)
    black_ink = np.zeros((*PHOTO.shape, 4), dtype=np.uint8)
    black_ink[..., 3] = PHOTO  # black everywhere; only the ink is opaque
    rgba = Image.fromarray(black_ink)
    assert np.array_equal(load_digit(encoded(rgba)).numpy(), on_paper)
    assert np.array_equal(load_digit(encoded(rgba.convert("LA"))).numpy(), on_paper)
    palette = Image.fromarray((PHOTO > 127).astype(np.uint8), "P")  # index 0 (black) transparent, 1 black ink
    palette.putpalette([0, 0, 0] * 2)
    assert np.array_equal(
        load_digit(encoded(palette, "GIF", transparency=0)).numpy(), to_mnist(np.where(PHOTO > 127, 0, 255))
    )


def test_an_animation_is_refused_naming_its_frames_rather_than_read_from_one():
    ink = np.where(PHOTO > 127, 255, 0).astype(np.uint8)
    half = ink.copy()
    half[60:] = 0
    frames = [Image.fromarray(frame) for frame in (np.zeros_like(ink), half, ink)]  # a digit being drawn
    gif = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(PipelineError, match=r"^drawing.gif has 3 frames \(an animation, or pages\)"):
        load_digit(gif, name="drawing.gif")
    load_digit(encoded(frames[1], "GIF"))  # one frame is one image


def test_an_image_over_the_pixel_limit_is_refused_naming_its_pixels_and_the_limit():
    with pytest.raises(PipelineError) as error:
        load_digit(blank_png(20_000, 20_000))
    assert str(error.value) == "the upload is 20000x20000 = 400,000,000 pixels, more than the limit of 89,478,485"
    photo = encoded(Image.fromarray(PHOTO))  # 100x120
    with pytest.raises(PipelineError, match="12,000 pixels, more than the limit of 11,999"):
        load_digit(photo, max_pixels=11_999)
    assert np.array_equal(load_digit(photo, max_pixels=12_000).numpy(), to_mnist(PHOTO))


def test_the_callers_limit_decides_even_above_pillows_own():
    # 180 million pixels, past the 178,956,970 at which Pillow refuses by itself; cut short after
    # its header, so decoding, once begun, fails at once instead of filling memory.
    cut_short = blank_png(20_000, 9_000)[:1000]
    with pytest.raises(PipelineError, match="not an image that can be read"):  # decoded, not refused for size
        load_digit(cut_short, max_pixels=200_000_000)


def test_image_bytes_read_like_the_file_and_errors_name_the_upload(tmp_path):
    path = tmp_path / "digit.png"
    Image.fromarray(255 - PHOTO).save(path)
    assert np.array_equal(load_digit(path.read_bytes()).numpy(), load_digit(path).numpy())
    with pytest.raises(PipelineError, match="^the upload is not an image that can be read"):
        load_digit(b"<html>")
    with pytest.raises(PipelineError, match="^mine.png: no digit found"):
        load_digit(encoded(Image.new("L", (50, 50), 200)), name="mine.png")
