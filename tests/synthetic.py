"""Small, learnable MNIST-format data, so tests never need the real files or a network."""

from __future__ import annotations

import gzip
from pathlib import Path

import torch

from stages.core.idx import encode_idx
from stages.core.mirrors import sha256


def synthetic_digits(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each class is a bright 7x7 square at its own place on a 4x3 grid, over faint noise:
    easy to learn in a few epochs, and still 28x28 uint8 like MNIST."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % 10
    labels = labels[torch.randperm(count, generator=generator)]
    images = torch.randint(0, 60, (count, 28, 28), generator=generator, dtype=torch.uint8)
    for index, label in enumerate(labels.tolist()):
        row, col = divmod(label, 4)
        images[index, 1 + 9 * row : 8 + 9 * row, 1 + 7 * col : 7 * col + 7] = 255
    return images, labels.to(torch.uint8)


def write_mirror(folder: Path, train_count: int = 1000, test_count: int = 200) -> dict[str, str]:
    """Writes the four ``.gz`` files into ``folder``; returns the SHA-256 of each decompressed file,
    keyed by file name."""
    folder.mkdir(parents=True, exist_ok=True)
    train_images, train_labels = synthetic_digits(train_count, seed=1)
    test_images, test_labels = synthetic_digits(test_count, seed=2)
    contents = {
        "train-images-idx3-ubyte": encode_idx(train_images),
        "train-labels-idx1-ubyte": encode_idx(train_labels),
        "t10k-images-idx3-ubyte": encode_idx(test_images),
        "t10k-labels-idx1-ubyte": encode_idx(test_labels),
    }
    for name, content in contents.items():
        (folder / f"{name}.gz").write_bytes(gzip.compress(content, mtime=0))
    return {name: sha256(content) for name, content in contents.items()}
