"""The tutorial's loop, kept as the reference that the project's fast path must match bitwise.

torchvision's ``datasets.MNIST`` hands out one PIL image at a time, ``ToTensor`` converts it, and a
``DataLoader`` of batch 100 stacks them. Here the dataset serves the split's own uint8 images the
same way, and a sampler fixes the order, so the benchmark and the tests compare like with like.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import transforms

from stages.core.models import INPUT_FEATURES


class PerImageDataset(Dataset):
    """What ``datasets.MNIST(transform=ToTensor())`` returns: a ``[1, 28, 28]`` float image and an
    int label, converted from a PIL image on every access."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels
        self.to_tensor = transforms.ToTensor()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = Image.fromarray(self.images[index].numpy())  # mode L, as uint8 [28, 28]
        return self.to_tensor(image), int(self.labels[index])


class FixedOrder(Sampler[int]):
    """Yields ``order``, so the reference sees the images in the same order as the fast path."""

    def __init__(self, order: torch.Tensor):
        self.order = order

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order.tolist())


def loader(dataset: PerImageDataset, batch_size: int, order: torch.Tensor | None = None) -> DataLoader:
    """The tutorial's ``DataLoader``; ``order`` stands in for ``shuffle=True``, None keeps the input order.
    Its own generator takes the seed draw every ``DataLoader`` makes per epoch, which would otherwise
    shift the global generator that dropout draws its masks from."""
    sampler = None if order is None else FixedOrder(order)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, generator=torch.Generator())


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
) -> float:
    """The tutorial's training loop, step for step, over its ``DataLoader`` or any (images, labels)
    batches; returns the mean loss over images."""
    criterion = nn.CrossEntropyLoss()
    model.train()
    running_loss, count = 0.0, 0
    for images, labels in batches:
        images, labels = images.to(device), labels.to(device)
        images.resize_(images.size(0), INPUT_FEATURES)
        optimizer.zero_grad()
        loss = criterion(model(images), labels)
        loss.backward()
        optimizer.step()
        running_loss += loss.item() * images.size(0)
        count += images.size(0)
    return running_loss / count


def evaluate(model: nn.Module, batches: DataLoader, device: torch.device) -> tuple[float, float]:
    """The tutorial's validation loop: mean loss and accuracy, batch by batch under ``no_grad``."""
    criterion = nn.CrossEntropyLoss()
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for images, labels in batches:
            images, labels = images.to(device), labels.to(device)
            images.resize_(images.size(0), INPUT_FEATURES)
            logits = model(images)
            loss_sum += criterion(logits, labels).item() * images.size(0)
            correct += (logits.argmax(dim=1) == labels).sum().item()
            count += images.size(0)
    return loss_sum / count, correct / count
