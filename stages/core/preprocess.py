"""A photo or scan of a digit brought to MNIST's form, the way MNIST itself was made.

MNIST digits are white ink on black, the ink's bounding box fitted into 20x20 with its aspect
ratio kept (antialiased), placed in a 28x28 field with the centre of mass at the field's centre.
A model trained on MNIST only understands digits in that form.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from stages.core.errors import PipelineError
from stages.core.models import IMAGE_SIZE

FIT = 20
INK_THRESHOLD = 0.25
"""Fraction of the way from background to the darkest ink above which a pixel counts as ink for
the bounding box, so paper texture and scanner noise do not widen it."""
CENTRE = (IMAGE_SIZE - 1) / 2
"""The field's centre in pixel-index coordinates (14, 14 measured from the field's corner)."""
MAX_PIXELS = 89_478_485
"""The most pixels an image may have unless the caller says otherwise: Pillow's own default (a
quarter GiB as RGB), since a small compressed file can decode into gigabytes."""
WIDE_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
"""Pillow's grayscale modes of more than 8 bits a pixel (16-bit scans among them)."""
WORKING_SIDE = 1024
"""A larger image is reduced to this side before anything else (by its JPEG decoder, or by averaging
blocks of pixels): the digit ends up 20 pixels tall, so one a twentieth of the side still keeps 50,
and what follows the decoding takes megabytes, not several times the decoded image."""
REDUCIBLE = {"1": "L", "P": "RGBA", "PA": "RGBA", "I;16": "I", "I;16B": "I", "I;16L": "I", "I;16N": "I"}
"""Modes that Pillow cannot reduce (or would average palette indices of), and the mode to reduce instead."""

# Pillow's own limit is one global that refuses only at twice its value; load_digit checks each
# image against the limit its caller passes instead, above Pillow's or below.
Image.MAX_IMAGE_PIXELS = None
# Pillow warns of damage it reads past (a corrupt EXIF, a skipped tag): the image is then either read
# or refused in one line, which a warning printed before it would no longer be.
warnings.filterwarnings("ignore", module=r"PIL\.")


class UnreadableImage(PipelineError):
    """No image at all: a missing file, or bytes no decoder reads."""


class ImageTooLarge(PipelineError):
    """More pixels than the caller allows."""


def load_digit(source: Path | bytes, max_pixels: int = MAX_PIXELS, name: str | None = None) -> torch.Tensor:
    """An image file, or its bytes as a web form uploads them, as a uint8 ``[28, 28]`` MNIST digit.
    A bad image is a ``PipelineError`` that starts with ``name`` (by default the path, or "the upload")."""
    if name is None:
        name = "the upload" if isinstance(source, bytes) else str(source)
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            pixels = grayscale(reduced(checked(image, name, max_pixels)), name)
    except (PipelineError, MemoryError):
        raise
    except (FileNotFoundError, IsADirectoryError):
        raise UnreadableImage(f"{name} not found") from None
    except Exception:  # a damaged file fails Pillow's decoders in many ways (TypeError, ...): fuzzed in tests
        raise UnreadableImage(f"{name} is not an image that can be read (PNG, JPEG, GIF, WebP ...)") from None
    try:
        return torch.from_numpy(to_mnist(pixels))
    except ValueError as error:
        raise PipelineError(f"{name}: {error}") from None


def checked(image: Image.Image, name: str, max_pixels: int) -> Image.Image:
    """``image``, still undecoded, if it is one picture of at most ``max_pixels`` pixels."""
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"{name} is {width}x{height} = {width * height:,} pixels, more than the limit of {max_pixels:,}"
        )
    # Frames of an animation or pages of a scan are different pictures (the first frame of a drawing
    # being animated is half a digit), so none is picked silently; an MPO's later frames are previews.
    frames = getattr(image, "n_frames", 1)
    if frames > 1 and image.format != "MPO":
        raise PipelineError(
            f"{name} has {frames} frames (an animation, or pages): save the one meant as an image of its own"
        )
    return image


def reduced(image: Image.Image) -> Image.Image:
    """``image`` decoded, at most ``WORKING_SIDE`` pixels on its longer side."""
    image.draft(None, (WORKING_SIDE, WORKING_SIDE))  # a JPEG decodes at 1/2, 1/4 or 1/8 scale (others: no-op)
    factor = -(-max(image.size) // WORKING_SIDE)
    if factor == 1:
        return image
    return (image.convert(REDUCIBLE[image.mode]) if image.mode in REDUCIBLE else image).reduce(factor)


def grayscale(image: Image.Image, name: str) -> np.ndarray:
    """``image`` as uint8 gray ``[H, W]``. Transparency is laid on white paper, as drawing apps show
    it. More than 8 bits a pixel are stretched over the image's own range: ``convert("L")`` would
    clip them at 255, turning a 16-bit scan into a single shade."""
    if image.mode in WIDE_MODES:
        values = np.asarray(image, dtype=np.float64)
        if not np.isfinite(values).all():  # a float scan's NaN would make every pixel NaN, then one shade
            raise UnreadableImage(f"{name} has pixels that are not numbers (NaN or infinite): no shade to give them")
        low, high = values.min(), values.max()
        return np.round((values - low) * (255 / ((high - low) or 1))).astype(np.uint8)
    if image.has_transparency_data:
        image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA"))
    return np.asarray(image.convert("L"))


def to_mnist(pixels: np.ndarray) -> np.ndarray:
    """Grayscale ``[H, W]`` uint8 of any size, dark ink on light paper or light on dark, to MNIST's
    uint8 ``[28, 28]``. Raises ``ValueError`` when there is no ink at all."""
    ink = ink_intensity(pixels)
    rows, cols = np.nonzero(ink > INK_THRESHOLD)
    if len(rows) == 0:
        raise ValueError("no digit found: the image is a single shade")
    box = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    scale = FIT / max(box.shape)
    size = (max(1, round(box.shape[1] * scale)), max(1, round(box.shape[0] * scale)))
    digit = Image.fromarray(np.round(box * 255).astype(np.uint8)).resize(size, Image.Resampling.LANCZOS)
    return place_by_centre_of_mass(np.asarray(digit))


def ink_intensity(pixels: np.ndarray) -> np.ndarray:
    """Ink as floats in [0, 1] over a background of 0. The background is the border's median, and
    paper is light when that median is: then the image is inverted, as MNIST's ink is white."""
    values = pixels.astype(np.float32)
    if np.median(_border(values)) > 127.5:
        values = 255 - values
    ink = values - np.median(_border(values))
    peak = ink.max()
    return np.clip(ink / peak, 0, 1) if peak > 0 else np.zeros_like(ink)


def place_by_centre_of_mass(digit: np.ndarray) -> np.ndarray:
    """``digit`` (at most 28x28) pasted into a black 28x28 field at the whole-pixel offset that
    brings its centre of mass nearest the field's centre, kept wholly inside the field."""
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
