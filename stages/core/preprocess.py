"""A photo or scan of a digit brought to MNIST's form, the way MNIST itself was made.

MNIST digits are white ink on black, the ink's bounding box fitted into 20x20 with its aspect
ratio kept (antialiased), placed in a 28x28 field with the centre of mass at the field's centre.
A model trained on MNIST only understands digits in that form.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from stages.core.errors import PipelineError
from stages.core.models import IMAGE_SIZE

FIT = 20
INK_THRESHOLD = 0.25
"""Fraction of the way from background to the darkest ink above which a pixel counts as ink for
the bounding box, so paper texture and scanner noise do not widen it."""
CENTRE = (IMAGE_SIZE - 1) / 2
"""The field's centre in pixel-index coordinates (14, 14 measured from the field's corner)."""


def load_digit(path: Path) -> torch.Tensor:
    """An image file as a uint8 ``[28, 28]`` MNIST digit; a bad file is a ``PipelineError``."""
    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("L"))
    except (FileNotFoundError, IsADirectoryError):
        raise PipelineError(f"{path} not found") from None
    except (UnidentifiedImageError, OSError):
        raise PipelineError(f"{path} is not an image that can be read (PNG or JPEG expected)") from None
    try:
        return torch.from_numpy(to_mnist(pixels))
    except ValueError as error:
        raise PipelineError(f"{path}: {error}") from None


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
