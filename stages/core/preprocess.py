"""A photo or scan of a digit brought to MNIST's form, the way MNIST itself was made (docs/predict.md):
a model trained on MNIST only understands digits in that form.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image

from stages.core.errors import PipelineError
from stages.core.models import IMAGE_SIZE

FIT = 20
INK_THRESHOLD = 0.25  # of the way from background to darkest ink: paper texture and noise do not widen the box
CENTRE = (IMAGE_SIZE - 1) / 2  # the field's centre in pixel-index coordinates
MAX_PIXELS = 89_478_485  # Pillow's own default: a small compressed file can decode into gigabytes
WIDE_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}  # grayscale of more than 8 bits a pixel
WORKING_SIDE = 1024  # a larger image is reduced to this first: the digit ends up 20 pixels tall anyway
MIN_SIDE = 3  # pixels a reduction leaves a side: a stroke between two pixels of paper, where the border is read
# Modes that Pillow cannot reduce (or would average palette indices of), and the mode to reduce instead.
REDUCIBLE = {"1": "L", "P": "RGBA", "PA": "RGBA", "I;16": "I", "I;16B": "I", "I;16L": "I", "I;16N": "I"}
# Raster formats Pillow decodes itself (a JPEG's MPO variant included); never EPS, which it hands to Ghostscript.
FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")
ACCEPTED = "PNG, JPEG, GIF, WebP, BMP or TIFF"
SPECIAL_FILES = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
                 stat.S_IFSOCK: "a socket"}  # fmt: skip

Image.MAX_IMAGE_PIXELS = None  # a global that refuses only at twice its value: load_digit checks its caller's limit
# Pillow warns of damage it reads past: the image is then read or refused in one line, which a warning would break.
warnings.filterwarnings("ignore", module=r"PIL\.")


class UnreadableImage(PipelineError):
    """No image at all: a missing file, or bytes no decoder reads."""


class ImageTooLarge(PipelineError):
    """More pixels than the caller allows."""


def load_digit(source: Path | bytes, max_pixels: int = MAX_PIXELS, name: str | None = None) -> torch.Tensor:
    """An image file, or its uploaded bytes, as a uint8 ``[28, 28]`` MNIST digit; a bad image is a
    ``PipelineError`` starting with ``name`` (by default the path, or "the upload")."""
    name = name or ("the upload" if isinstance(source, bytes) else str(source))
    try:
        with opened(source, name) as file, Image.open(file, formats=FORMATS) as image:
            decoded, pixel = reduced(checked(image, name, max_pixels))
            pixels = grayscale(decoded, name)
    except (PipelineError, MemoryError):
        raise
    except Exception:  # a damaged file fails Pillow's decoders in many ways (TypeError, ...): fuzzed in tests
        raise UnreadableImage(f"{name} is not an image that can be read ({ACCEPTED})") from None
    try:
        return torch.from_numpy(to_mnist(pixels, pixel))
    except ValueError as error:
        raise PipelineError(f"{name}: {error}") from None


def opened(source: Path | bytes, name: str) -> BinaryIO:
    """``source`` to read: bytes, or a regular file (reading a FIFO, terminal or device may wait forever)."""
    if isinstance(source, bytes):
        return io.BytesIO(source)
    try:
        kind = stat.S_IFMT(os.stat(source).st_mode)
        if kind == stat.S_IFREG:
            return open(source, "rb")  # the caller's `with` closes it
    except (FileNotFoundError, NotADirectoryError):
        raise UnreadableImage(f"{name} not found") from None
    except OSError as error:
        raise UnreadableImage(f"{name} cannot be read: {error.strerror}") from None
    if kind == stat.S_IFDIR:
        raise UnreadableImage(f"{name} is a directory: give image files")
    raise UnreadableImage(
        f"{name} is not a regular file but {SPECIAL_FILES.get(kind, 'a special file')}: give image files"
    )


def checked(image: Image.Image, name: str, max_pixels: int) -> Image.Image:
    """``image``, still undecoded, if it is one picture of at most ``max_pixels`` pixels."""
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"{name} is {width}x{height} = {width * height:,} pixels, more than the limit of {max_pixels:,}"
        )
    # Frames or pages are different pictures (an animated drawing's first is half a digit); an MPO's are previews.
    frames = getattr(image, "n_frames", 1)
    if frames > 1 and image.format != "MPO":
        raise PipelineError(
            f"{name} has {frames} frames (an animation, or pages): save the one meant as an image of its own"
        )
    return image


def reduced(image: Image.Image) -> tuple[Image.Image, tuple[int, int]]:
    """``image`` decoded, at most ``WORKING_SIDE`` pixels a side (a thin side keeps ``MIN_SIDE``), and
    the height and width that one of its pixels stands for."""
    image.draft(None, (WORKING_SIDE, WORKING_SIDE))  # a JPEG decodes at 1/2, 1/4 or 1/8 scale (others: no-op)
    factor = -(-max(image.size) // WORKING_SIDE)
    # The largest factor at most ``factor`` that leaves ceil(side / factor) >= MIN_SIDE pixels.
    across, down = (min(factor, max(1, (side - 1) // (MIN_SIDE - 1))) for side in image.size)
    if across == down == 1:
        return image, (1, 1)
    pixel = (1, 1) if across == down else (down, across)
    return (image.convert(REDUCIBLE[image.mode]) if image.mode in REDUCIBLE else image).reduce((across, down)), pixel


def grayscale(image: Image.Image, name: str) -> np.ndarray:
    """``image`` as uint8 gray ``[H, W]``, transparency on white paper; more than 8 bits a pixel stretched
    over the image's range (``convert("L")`` would clip a 16-bit scan into one shade)."""
    if image.mode in WIDE_MODES:
        values = np.asarray(image, dtype=np.float64)
        if not np.isfinite(values).all():  # a float scan's NaN would make every pixel NaN, then one shade
            raise UnreadableImage(f"{name} has pixels that are not numbers (NaN or infinite): no shade to give them")
        low, high = values.min(), values.max()
        return np.round((values - low) * (255 / ((high - low) or 1))).astype(np.uint8)
    if image.mode == "LAB":  # Pillow converts LAB to nothing else; its lightness is a shade of gray
        image = image.getchannel("L")
    if image.mode == "La":  # premultiplied alpha, which Pillow composites only once divided out
        image = image.convert("LA")
    if image.has_transparency_data:
        image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA"))
    return np.asarray(image.convert("L"))


def to_mnist(pixels: np.ndarray, pixel: tuple[int, int] = (1, 1)) -> np.ndarray:
    """Grayscale uint8 ``[H, W]``, either ink on either paper, to MNIST's uint8 ``[28, 28]``; ``pixel``:
    ``reduced``'s. A ``ValueError`` when there is no ink at all."""
    ink = ink_intensity(pixels)
    rows, cols = np.nonzero(ink > INK_THRESHOLD)
    if len(rows) == 0:
        raise ValueError("no digit found: the image is a single shade")
    box = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    height, width = box.shape[0] * pixel[0], box.shape[1] * pixel[1]
    scale = FIT / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    digit = Image.fromarray(np.round(box * 255).astype(np.uint8)).resize(size, Image.Resampling.LANCZOS)
    return place_by_centre_of_mass(np.asarray(digit))


def ink_intensity(pixels: np.ndarray) -> np.ndarray:
    """Ink as floats in [0, 1] over a background of 0 (the border's median), inverted on light paper."""
    values = pixels.astype(np.float32)
    if np.median(_border(values)) > 127.5:
        values = 255 - values
    ink = values - np.median(_border(values))
    peak = ink.max()
    return np.clip(ink / peak, 0, 1) if peak > 0 else np.zeros_like(ink)


def place_by_centre_of_mass(digit: np.ndarray) -> np.ndarray:
    """``digit`` pasted into a black 28x28 field, its centre of mass nearest the centre, wholly inside."""
    field = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    height, width = digit.shape
    row, col = centre_of_mass(digit)
    top = int(np.clip(round(CENTRE - row), 0, IMAGE_SIZE - height))
    left = int(np.clip(round(CENTRE - col), 0, IMAGE_SIZE - width))
    field[top : top + height, left : left + width] = digit
    return field


def centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    """(row, column) in pixel-index coordinates, weighted by brightness; the middle of a blank image."""
    weights = image.astype(np.float64)
    total = weights.sum()
    if total == 0:
        return (image.shape[0] - 1) / 2, (image.shape[1] - 1) / 2
    rows, cols = np.indices(image.shape)
    return float((rows * weights).sum() / total), float((cols * weights).sum() / total)


def _border(values: np.ndarray) -> np.ndarray:
    return np.concatenate([values[0], values[-1], values[:, 0], values[:, -1]])
