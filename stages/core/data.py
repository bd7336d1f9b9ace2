"""MNIST as tensors: decoding the raw files, the seeded train/validation split, and loading it."""

from __future__ import annotations

import functools
import io
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn import functional as F

from stages.core.errors import PipelineError
from stages.core.idx import decode_idx
from stages.core.models import IMAGE_SIZE


@dataclass(frozen=True)
class Subset:
    """Images as uint8 ``[N, 28, 28]``, labels as int64 ``[N]``, and each one's index in its source file."""

    images: torch.Tensor
    labels: torch.Tensor
    source_indices: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def select(self, indices: torch.Tensor) -> Subset:
        return Subset(self.images[indices], self.labels[indices], self.source_indices[indices])


SUBSETS = ("train", "valid", "test")
TURNED_AT_ONCE = 10_000  # images


def read_mnist(raw_dir: Path, prefix: str) -> Subset:
    """``prefix`` is ``train`` or ``t10k``, as in the MNIST file names."""
    images = decode_idx(_raw_bytes(raw_dir / f"{prefix}-images-idx3-ubyte"), f"{prefix}-images")
    labels = decode_idx(_raw_bytes(raw_dir / f"{prefix}-labels-idx1-ubyte"), f"{prefix}-labels")
    if images.dim() != 3 or labels.dim() != 1 or len(images) != len(labels):
        raise PipelineError(f"{prefix}: images {list(images.shape)} and labels {list(labels.shape)} do not match")
    return Subset(images, labels.long(), torch.arange(len(labels)))


def _raw_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise PipelineError(f"{path} not found: run the download stage first (dvc repro download)") from None


def split_train_valid(full: Subset, train_size: int, valid_size: int, seed: int) -> tuple[Subset, Subset]:
    """A seeded permutation of the official training set: the first ``valid_size`` validate, the next train."""
    if train_size + valid_size > len(full):
        raise PipelineError(
            f"split.train_size + split.valid_size = {train_size} + {valid_size} = {train_size + valid_size} "
            f"exceeds the {len(full)} training images; choose sizes that sum to at most {len(full)}"
        )
    order = torch.randperm(len(full), generator=torch.Generator().manual_seed(seed))
    valid = order[:valid_size].sort().values
    train = order[valid_size : valid_size + train_size].sort().values
    return full.select(train), full.select(valid)


def subset_bytes(subset: Subset) -> bytes:
    """The file the split stage writes: saved into memory, so the bytes do not depend on its name."""
    buffer = io.BytesIO()
    torch.save({"images": subset.images, "labels": subset.labels, "source_indices": subset.source_indices}, buffer)
    return buffer.getvalue()


def load_subset(path: Path) -> Subset:
    """A subset as ``subset_bytes`` wrote it; anything else is a ``PipelineError`` that names the file."""
    try:
        saved = torch.load(path, weights_only=True)
    except FileNotFoundError:
        raise PipelineError(f"{path} not found: run the split stage first (dvc repro split)") from None
    except Exception:  # torch.load fails on a damaged file in many ways: RuntimeError, OSError, EOFError, ...
        raise PipelineError(
            f"{path} is not a saved subset (truncated, corrupt or not a file): run dvc repro split"
        ) from None
    problem = _subset_problem(saved)
    if problem:
        raise PipelineError(f"{path}: {problem}: run dvc repro split")
    return Subset(saved["images"], saved["labels"], saved["source_indices"])


def _subset_problem(saved: object) -> str | None:
    """What makes ``saved`` no subset a model can be trained or evaluated on, if anything."""
    fields = ("images", "labels", "source_indices")
    if not isinstance(saved, dict) or not all(isinstance(saved.get(field), torch.Tensor) for field in fields):
        return f"not a saved subset (a dict of tensors {', '.join(fields)})"
    images, labels, indices = (saved[field] for field in fields)
    if images.dtype != torch.uint8 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        return f"images are {images.dtype} {list(images.shape)}, not uint8 [N, {IMAGE_SIZE}, {IMAGE_SIZE}]"
    if labels.shape != (len(images),) or indices.shape != (len(images),):
        return f"{len(images)} images, but labels {list(labels.shape)} and source indices {list(indices.shape)}"
    if labels.dtype != torch.int64:
        return f"labels are {labels.dtype}, not int64"
    outside = labels[(labels < 0) | (labels > 9)]
    if len(outside):
        return f"label {outside[0].item()} is not a digit 0-9"
    return None


def as_rows(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The images as stored (uint8), one 784-row each, on ``device``: a quarter of the bytes of features."""
    return images.to(device).reshape(len(images), -1)


def scale(rows: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 -> float32 in [0, 1], bitwise as ``ToTensor`` (x / 255), cast and divided in place. The divisor
    is a tensor: CUDA divides by a number as a product with its reciprocal, one bit off for 126 values."""
    features = torch.empty_like(rows, dtype=torch.float32) if out is None else out
    return features.copy_(rows).div_(_max_pixel_value(rows.device))


@functools.cache
def _max_pixel_value(device: torch.device) -> torch.Tensor:
    return torch.tensor(255.0, device=device)


def shifted(rows: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Each row's image moved by seeded whole pixels, up to ``max_shift`` each way, the border black; the
    offsets drawn on the CPU, so a seed gives the same shifts on every device."""
    images = rows.reshape(len(rows), IMAGE_SIZE, IMAGE_SIZE)
    padded = F.pad(images, (max_shift,) * 4)
    offsets = torch.randint(0, 2 * max_shift + 1, (2, len(rows)), generator=generator)
    shifted = torch.empty_like(images)
    for dy in range(2 * max_shift + 1):  # one copy per offset: no index tensor the size of the images
        for dx in range(2 * max_shift + 1):
            chosen = ((offsets[0] == dy) & (offsets[1] == dx)).nonzero().flatten().to(rows.device)
            shifted[chosen] = padded[chosen, dy : dy + IMAGE_SIZE, dx : dx + IMAGE_SIZE]
    return shifted.reshape(len(rows), -1)


def turned(rows: torch.Tensor, max_degrees: float, max_zoom: float, generator: torch.Generator) -> torch.Tensor:
    """Each row's image turned by up to ``max_degrees`` and scaled by up to ``max_zoom`` each way, seeded
    (drawn on the CPU, as shifts): handwriting varies in slant and size as much as in place."""
    turns, sizes = torch.rand(2, len(rows), generator=generator, dtype=torch.float64) * 2 - 1
    return turn(rows, (turns * max_degrees).tolist(), 1 + sizes * max_zoom)


def turn(rows: torch.Tensor, degrees: list[float], scales: torch.Tensor) -> torch.Tensor:
    """Each row's image turned anticlockwise about its centre and scaled, sampled bilinearly (black
    outside), rounded back to uint8, with elementwise ops and gathers (torch's ``grid_sample`` crashes
    under QEMU, so tests/other_cpus.py could not check it). Sines from the C library (``math``, as the
    schedules' cosines): torch's float32 ``sin`` is MKL VML's, whose code path follows the CPU."""
    radians = [math.radians(angle) for angle in degrees]
    cos, sin = (
        (torch.tensor([f(angle) for angle in radians], dtype=torch.float64) / scales).float()[:, None].to(rows.device)
        for f in (math.cos, math.sin)
    )
    out = torch.empty_like(rows)
    for start in range(0, len(rows), TURNED_AT_ONCE):  # a few float copies of a part at a time, not of all
        part = slice(start, start + TURNED_AT_ONCE)
        out[part] = _sampled(rows[part].float(), cos[part], sin[part])
    return out


def _sampled(images: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Each output pixel read where the inverse turn puts it, from the four pixels around that point.
    The images get a black border (1 pixel before, 2 after) and points are held within it, so a point
    outside reads black without a test."""
    side, centre = IMAGE_SIZE + 3, (IMAGE_SIZE - 1) / 2
    padded = F.pad(images.view(-1, IMAGE_SIZE, IMAGE_SIZE), (1, 2, 1, 2)).flatten(1)
    axis = torch.arange(float(IMAGE_SIZE), device=images.device) - centre
    v, u = (grid.flatten() for grid in torch.meshgrid(axis, axis, indexing="ij"))  # each pixel's row and column
    x = (centre + cos * u - sin * v).clamp_(-1, IMAGE_SIZE)
    y = (centre + sin * u + cos * v).clamp_(-1, IMAGE_SIZE)
    left, top = x.floor(), y.floor()
    across, down = x - left, y - top
    index = ((top + 1) * side + left + 1).long()
    upper = padded.gather(1, index) * (1 - across) + padded.gather(1, index + 1) * across
    lower = padded.gather(1, index + side) * (1 - across) + padded.gather(1, index + side + 1) * across
    return (upper * (1 - down) + lower * down).round_().clamp_(0, 255).to(torch.uint8)


def as_features(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Images as the models take them: 784 floats each, scaled as ``ToTensor`` scales."""
    return scale(as_rows(images, device))
