"""Small, learnable MNIST-format data, so tests never need the real files or a network."""

from __future__ import annotations

import gzip
import os
import sys
from pathlib import Path

import torch

from stages.core.idx import encode_idx
from stages.core.mirrors import MNIST_FILES, sha256
from stages.core.schema import write_yaml

# Bright rectangles (top, bottom, left, right; inclusive) in the 20x20 box where MNIST puts its
# digits, each also drawn mirrored through the box's centre. So every class has its own shape,
# each shape spans the box's full height or width and has its centre of mass at the centre:
# a synthetic digit is already in the form that MNIST's (and stages.core.preprocess's)
# centring gives, and survives being photographed, rescaled and preprocessed.
PATTERNS = {
    0: [(0, 19, 0, 2), (0, 2, 0, 19)],  # frame
    1: [(0, 19, 8, 11)],  # vertical bar
    2: [(8, 11, 0, 19)],  # horizontal bar
    3: [(0, 19, 8, 11), (8, 11, 0, 19)],  # cross
    4: [(0, 9, 0, 9)],  # top-left and bottom-right blocks
    5: [(0, 9, 10, 19)],  # top-right and bottom-left blocks
    6: [(0, 3, 0, 19), (8, 11, 0, 19)],  # three horizontal bars
    7: [(0, 19, 0, 3), (0, 19, 8, 11)],  # three vertical bars
    8: [(0, 5, 0, 5), (0, 5, 14, 19), (7, 12, 7, 12)],  # four corners and the centre
    9: [(0, 19, 0, 3), (8, 11, 0, 19)],  # H
}
BOX = 4  # the 20x20 box's offset in the 28x28 field


def draw_digit(label: int) -> torch.Tensor:
    """The noiseless uint8 ``[28, 28]`` shape of class ``label``."""
    image = torch.zeros(28, 28, dtype=torch.uint8)
    for top, bottom, left, right in PATTERNS[label]:
        image[BOX + top : BOX + bottom + 1, BOX + left : BOX + right + 1] = 255
        image[BOX + 19 - bottom : BOX + 20 - top, BOX + 19 - right : BOX + 20 - left] = 255
    return image


def synthetic_digits(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each class's shape over faint noise: easy to learn in a few epochs, 28x28 uint8 like MNIST."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % 10
    labels = labels[torch.randperm(count, generator=generator)]
    images = torch.randint(0, 60, (count, 28, 28), generator=generator, dtype=torch.uint8)
    shapes = torch.stack([draw_digit(label) for label in range(10)])
    images = torch.maximum(images, shapes[labels])
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


def write_source(repo: Path, checksums: dict[str, str]) -> None:
    """``repo``'s data/mnist.yaml for a mirror that ``write_mirror`` made: its checksums, and no
    public mirror to fall back on (``MNIST_MIRRORS`` names the mirror itself)."""
    source = {"sha256": {key: checksums[name] for key, name in MNIST_FILES.items()}, "mirrors": []}
    write_yaml(repo / "data/mnist.yaml", source)


def shell_env(mirror_folder: Path) -> dict[str, str]:
    """The environment a user's shell would have to run the project against a synthetic mirror:
    this venv's python first on PATH, no analytics, a git identity (queued experiments commit)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["DVC_NO_ANALYTICS"] = "1"
    env["MNIST_MIRRORS"] = mirror_folder.as_uri()
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "test"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "test@example.com"
    env.pop("PYTHONPATH", None)
    return env
