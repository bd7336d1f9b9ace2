"""Bringing an image of any size and polarity to MNIST's form: 20x20 box, centred by mass, white ink."""

from __future__ import annotations

import io
import os
import random
import stat
import struct
import threading
import zlib

import numpy as np
import pytest
from PIL import EpsImagePlugin, Image

from stages.core.errors import PipelineError
from stages.core.preprocess import FORMATS, centre_of_mass, grayscale, load_digit, to_mnist
from testing.synthetic import draw_digit


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


def two_page_tiff(warned: bool = False) -> bytes:
    """132 bytes: a 2x2 gray TIFF, then a second page without dimensions (Pillow raises TypeError);
    ``warned``: with a tag whose data lies past the end of the file (Pillow warns, then goes on)."""

    def page(entries: list[tuple[int, int, int]], next_page: int) -> bytes:
        fields = b"".join(struct.pack("<HHII", tag, 4, count, value) for tag, count, value in entries)  # LONGs
        return struct.pack("<H", len(entries)) + fields + struct.pack("<I", next_page)

    first = [(256, 2), (257, 2), (258, 8), (259, 1), (262, 1), (273, 0), (278, 2), (279, 4)]  # width ... strips
    first = [(tag, 1, value) for tag, value in first] + [(270, 1000, 10**6)] * warned  # a description, elsewhere
    second = 8 + 2 + 12 * len(first) + 4
    first[5] = (273, 1, second + 2 + 12 + 4)  # the pixels, after the second page
    return b"II*\0" + struct.pack("<I", 8) + page(first, second) + page([(259, 1, 1)], 0) + bytes([0, 255, 255, 0])


def nan_tiff() -> bytes:
    """A float scan of a digit with one pixel that is not a number."""
    values = PHOTO.astype(np.float32)
    values[0, 0] = np.nan
    return encoded(Image.fromarray(values), "TIFF")


def test_a_damaged_two_page_tiff_and_a_nan_pixel_are_refused_naming_the_problem():
    with pytest.raises(PipelineError, match="^scan.tif is not an image that can be read"):
        load_digit(two_page_tiff(), name="scan.tif")
    with pytest.raises(PipelineError, match=r"^scan.tif has pixels that are not numbers \(NaN or infinite\)"):
        load_digit(nan_tiff(), name="scan.tif")


@pytest.mark.parametrize(
    ("mode", "format"),
    [("1", "PNG"), ("L", "PNG"), ("P", "GIF"), ("RGBA", "PNG"), ("I;16", "PNG"), ("RGB", "JPEG")],
)
def test_a_large_image_is_reduced_first_and_still_reads_like_its_small_copy(mode, format):
    """2,100 x 2,520 pixels: decoded at half scale (JPEG), or reduced by blocks, before anything else."""
    ink = np.where(PHOTO > 127, 255, 0).astype(np.uint8)  # two shades, so that every mode holds it
    large = Image.fromarray(ink).resize((2100, 2520), Image.Resampling.NEAREST)
    large = large.convert(mode) if mode != "I;16" else Image.fromarray(ink.astype(np.uint16) * 257).resize(large.size)
    digit = load_digit(encoded(large, format)).numpy()
    assert np.abs(digit.astype(int) - to_mnist(ink)).mean() < 4


def magic_seeds(photo: Image.Image) -> dict[str, bytes]:
    """The formats Pillow opens and cannot write: a few lines of each one's header where that is all it
    takes, otherwise its signature alone (what the fuzzing mutates from)."""
    width, height = photo.size
    gray, pcx, ico = photo.tobytes(), encoded(photo, "PCX"), encoded(photo.convert("RGB"), "ICO", bitmap_format="bmp")
    mcidas = dict.fromkeys(range(64), 0) | {1: 4, 8: height, 9: width, 10: 1, 13: 1, 33: 256}  # words 2, 9, ... 34
    fits = b"".join(f"{card:<80}".encode() for card in (
        "SIMPLE  = T", "BITPIX  = 8", "NAXIS   = 2", f"NAXIS1  = {width}", f"NAXIS2  = {height}", "END"))  # fmt: skip
    xpm = [f'"{width} {height} 2 1",', '"  c #000000",', '". c #ffffff",']
    xpm += [f'"{"".join(" ."[int(p > 127)] for p in row)}",' for row in np.asarray(photo)]
    return {
        "CUR": b"\0\0\2\0" + ico[4:],
        "DCX": struct.pack("<III", 0x3ADE68B1, 12, 0) + pcx,
        "FITS": fits.ljust(2880) + gray,
        "GBR": struct.pack(">5I", 21, 1, width, height, 1) + b"\0" + gray,
        "IMT": f"width {width}\nheight {height}\npixel n8\n".encode() + b"\x0c" + gray,
        "PSD": b"8BPS" + struct.pack(">H6xHIIHHIIIH", 1, 1, height, width, 8, 1, 0, 0, 0, 0) + gray,
        "SUN": struct.pack(">8I", 0x59A66A95, width, height, 8, len(gray), 1, 0, 0) + gray,
        "XPM": ("/* XPM */\nstatic char *digit[] = {\n" + "\n".join(xpm) + "\n};\n").encode(),
        "XVTHUMB": f"P7 332\n#END_OF_COMMENTS\n{width} {height} 255\n".encode() + gray,
        "MCIDAS": struct.pack(">64i", *mcidas.values()) + gray,
        "PIXAR": b"\200\350\0\0".ljust(416, b"\0")
        + struct.pack("<HHxxxxHH", height, width, 14, 2).ljust(608, b"\0")
        + photo.convert("RGB").tobytes(),
        "WMF": b"\xd7\xcd\xc6\x9a\0\0" + struct.pack("<4hH6x", 0, 0, width, height, 72) + b"\1\0\t\0",
        "FLI": struct.pack("<IHHHHH", 128, 0xAF11, 1, width, height, 8).ljust(128, b"\0"),
        "FTEX": b"FTEX" + struct.pack("<IIII", 0, width, height, 1),
        "IPTC": b"\x1c\x03\x14\x00\x02" + struct.pack(">H", width),
        "MPEG": b"\0\0\1\xb3" + struct.pack(">I", (width << 20) | (height << 8)),
        "PCD": b"\0" * 2048 + b"PCD_IPI",
        "BUFR": b"BUFR" + gray,
        "GRIB": b"GRIB\0\0\0\1" + gray,
        "HDF5": b"\x89HDF\r\n\x1a\n" + gray,
    }


def fuzz_seeds() -> dict[str, bytes]:
    """A small digit in every format Pillow opens: written by Pillow where it writes the format (in the
    first mode it takes), by ``magic_seeds`` otherwise; and the odd cases of TIFF and PNG."""
    Image.init()
    photo = Image.fromarray(np.where(PHOTO[::4, ::5] > 127, 0, 255).astype(np.uint8))  # 20x30, dark on white
    seeds = magic_seeds(photo)
    for format in sorted(set(Image.OPEN) & set(Image.SAVE) - set(seeds)):
        seeds[format] = next(filter(None, (saved(photo.convert(mode), format) for mode in ("L", "RGB", "1", "P"))))
    seeds |= {"TIFF pages": two_page_tiff(), "TIFF float": nan_tiff(), "PNG 16-bit": encoded(photo.convert("I;16"))}
    seeds["GIF frames"] = encoded(photo, "GIF", save_all=True, append_images=[photo.rotate(90)])
    seeds["TIFF deflate"] = encoded(photo, "TIFF", compression="tiff_adobe_deflate")
    assert set(Image.OPEN) <= set(seeds), f"no seed for {set(Image.OPEN) - set(seeds)}: add one to magic_seeds"
    return seeds


def saved(image: Image.Image, format: str) -> bytes | None:
    try:
        return encoded(image, format)
    except (OSError, ValueError, KeyError):  # a mode this format cannot hold
        return None


def mutated(data: bytes, rng: random.Random) -> bytes:
    """``data`` with one to six random edits: a byte changed to a random or a boundary value, a slice
    cut off, random bytes inserted, a slice repeated."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        at, kind = rng.randrange(len(data) + 1), rng.randrange(5)
        if kind < 2 and at < len(data):
            data[at] = rng.randrange(256) if kind == 0 else rng.choice((0, 1, 0x7F, 0x80, 0xFF))
        elif kind == 2:
            del data[at + rng.randrange(64) :]
        elif kind == 3:
            data[at:at] = rng.randbytes(rng.randint(1, 8))
        else:
            data[at:at] = data[at : at + rng.randint(1, 32)]
    return bytes(data)


FUZZ_SEED, FUZZ_COUNT = 23, 100
"""Mutations of each seed; the same ones in every run."""


@pytest.mark.filterwarnings("ignore")  # Pillow warns about most damaged files: hundreds of lines
def test_every_damaged_image_of_every_format_is_a_digit_or_one_clear_error():
    """What an upload server relies on: whatever the bytes, ``load_digit`` answers a digit or a
    ``PipelineError``, never another exception (a traceback, a dropped connection)."""
    rng, seeds = random.Random(FUZZ_SEED), fuzz_seeds()
    for format in set(Image.SAVE) & set(Image.OPEN):
        if format in FORMATS:
            assert load_digit(seeds[format]).shape == (28, 28), format
        else:  # an image, but in none of the formats read
            with pytest.raises(PipelineError, match=r"^the upload is not an image that can be read \(PNG, JPEG"):
                load_digit(seeds[format])
    escaped = {}
    for format, seed in seeds.items():
        for _ in range(FUZZ_COUNT):
            data = mutated(seed, rng)
            try:
                load_digit(data, max_pixels=1_000_000)  # a mutated header may declare millions of pixels
            except PipelineError:
                pass
            except Exception as error:
                escaped.setdefault(format, f"{type(error).__name__}: {error} on {data[:64]!r}")
    assert escaped == {}


def test_only_the_documented_raster_formats_are_opened_and_ghostscript_never_runs(tmp_path, monkeypatch):
    """An EPS file, whatever its name or Content-Type, is PostScript: Pillow would have Ghostscript run it."""
    ran = tmp_path / "gs-ran"
    fake = tmp_path / "bin" / "gs"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$@" >> {ran}\nexit 1\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None)  # Pillow looks for gs once per process
    eps = encoded(Image.fromarray(255 - PHOTO), "EPS")
    (tmp_path / "digit.png").write_bytes(eps)
    for source, name in [(eps, "the upload"), (tmp_path / "digit.png", str(tmp_path / "digit.png"))]:
        with pytest.raises(PipelineError) as error:
            load_digit(source)
        assert str(error.value) == f"{name} is not an image that can be read (PNG, JPEG, GIF, WebP, BMP or TIFF)"
    assert not ran.exists(), ran.read_text()


def test_a_fifo_a_device_or_a_directory_is_refused_before_it_is_opened(tmp_path):
    """Reading a FIFO, a terminal or /dev/stdin waits for a writer that may never come."""
    fifo = tmp_path / "digit.png"
    os.mkfifo(fifo)
    # A writer after 10 s, so that a load_digit waiting on the FIFO ends (and fails the test) instead of hanging.
    writer = threading.Timer(10, lambda: os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)))
    writer.start()
    try:
        with pytest.raises(PipelineError) as error:
            load_digit(fifo)
    finally:
        writer.cancel()
    assert str(error.value) == f"{fifo} is not a regular file but a FIFO: give image files"
    device = next(path for path in ("/dev/tty", "/dev/null") if stat.S_ISCHR(os.stat(path).st_mode))
    with pytest.raises(PipelineError, match=f"^{device} is not a regular file but a character device: give image"):
        load_digit(device)
    with pytest.raises(PipelineError, match=f"^{tmp_path} is a directory: give image files$"):
        load_digit(tmp_path)


def two_shades(mode: str) -> Image.Image:
    """``PHOTO``'s digit in two shades, black ink on white, in ``mode`` (premultiplied: by way of alpha)."""
    gray = Image.fromarray(np.where(PHOTO > 127, 0, 255).astype(np.uint8))
    return gray.convert({"La": "LA", "RGBa": "RGBA"}.get(mode, mode)).convert(mode)


@pytest.mark.parametrize("mode", Image.MODES)
def test_a_digit_in_every_mode_pillow_decodes_reads_like_its_gray_copy(mode):
    """LAB by its lightness, transparency laid on white, more than 8 bits stretched: in a TIFF where
    Pillow writes the mode as one, else as the decoder hands it over."""
    expected, image = to_mnist(np.where(PHOTO > 127, 0, 255).astype(np.uint8)), two_shades(mode)
    tiff = saved(image, "TIFF")
    digit = load_digit(tiff).numpy() if tiff is not None else to_mnist(grayscale(image, mode))
    assert np.array_equal(digit, expected)


@pytest.mark.parametrize(("width", "height"), [(3, 5000), (5000, 3), (2, 3000)])
def test_a_thin_stroke_keeps_its_ink_when_its_image_is_reduced(width, height):
    """A reduction by a factor above the thin side would leave it a pixel or two across, every one of
    them border: the stroke would be read as the background, and the image as a single shade."""
    sheet = np.full((height, width), 255, dtype=np.uint8)
    if width < height:
        sheet[:, width // 2] = 0  # a 1
    else:
        sheet[height // 2] = 0  # a dash
    digit = load_digit(encoded(Image.fromarray(sheet))).numpy()
    assert np.array_equal(digit, to_mnist(sheet))  # as the image unreduced gives it: a 20-pixel line
    assert (digit == 255).sum() == 20
