"""The training loop and evaluation, over data held as whole tensors on the device.

The training split stays as stored, one uint8 row per image; each epoch draws a seeded
permutation, copies the rows in that order, and takes batches as slices of the copy, each scaled to
floats as torchvision's ``ToTensor`` scales, into one buffer that every step reuses. Batch for
batch this is the tutorial's ``DataLoader(shuffle=True)`` loop without the per-image conversion,
and with its gradients taken by hand (``backprop``) instead of by autograd; it gives bitwise the
same weights for the same order (tests/test_equivalence.py; benchmarks/bench_training.py times both).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import nn
from torch.nn import functional as F

from stages.core import data
from stages.core.backprop import cross_entropy_gradients

EVAL_BATCH_SIZE = 10_000


@dataclass(frozen=True)
class Evaluation:
    loss: float
    accuracy: float
    logits: torch.Tensor
    """Every image's logits, in input order: what the views below are derived from, only when a
    caller asks, so validation after each epoch pays for none of them."""

    @cached_property
    def predictions(self) -> torch.Tensor:
        """The predicted class of every image (on the CPU)."""
        return self.logits.argmax(dim=1).cpu()

    @cached_property
    def confidences(self) -> torch.Tensor:
        """The softmax probability of each predicted class (on the CPU)."""
        return self.logits.softmax(dim=1).amax(dim=1).cpu()


@dataclass(frozen=True)
class EpochResult:
    epoch: int
    train_loss: float
    valid_loss: float
    valid_accuracy: float

    def line(self, epochs: int) -> str:
        """The tutorial's progress line."""
        return (
            f"Epoch : {self.epoch}/{epochs}..... Train Loss : {self.train_loss:.3f} "
            f"Valid Loss : {self.valid_loss:.3f} Valid Accuracy : {self.valid_accuracy:.3f}"
        )


def train_epoch(
    model: nn.Sequential,
    optimizer: torch.optim.Optimizer,
    rows: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    order: torch.Tensor,
    out: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> float:
    """One pass over ``rows`` (``data.as_rows``) in ``order``; returns the mean loss over images.

    One gather per epoch into ``out`` (buffers like ``rows`` and ``labels``) replaces one per step;
    pass the same buffers every epoch, as ``fit`` does, since the CPU caches no allocations and
    faulting in a fresh copy would cost more than the gathers it saves. Gathering bytes rather than
    floats moves a quarter of the data: on one thread a ``mlp_20_sigmoid`` epoch takes 7-10% less
    (``benchmarks/bench_training.py`` times both)."""
    order = order.to(rows.device)
    rows_out, labels_out = out or (None, None)
    rows = torch.index_select(rows, 0, order, out=rows_out)
    labels = torch.index_select(labels, 0, order, out=labels_out)
    return train_steps(model, optimizer, scaled_batches(rows, labels, batch_size))


def scaled_batches(
    rows: torch.Tensor, labels: torch.Tensor, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive batches, each scaled into the same float buffer: it stays in cache for the
    step's matrix products, and a step is done with it before the next batch overwrites it."""
    features = torch.empty(batch_size, rows.shape[1], device=rows.device)
    for start in range(0, len(labels), batch_size):
        batch = rows[start : start + batch_size]
        yield data.scale(batch, out=features[: len(batch)]), labels[start : start + batch_size]


def train_steps(
    model: nn.Sequential, optimizer: torch.optim.Optimizer, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
) -> float:
    """A step on each (features, labels) batch; returns the mean loss over images. The batch
    losses stay on the device until the end, so a step never waits for the GPU."""
    model.train()
    losses, sizes = [], []
    for features, labels in batches:
        losses.append(cross_entropy_gradients(model, features, labels))
        optimizer.step()
        sizes.append(len(labels))
    weights = torch.tensor(sizes, device=losses[0].device)
    return ((torch.stack(losses) * weights).sum() / sum(sizes)).item()


@torch.inference_mode()
def evaluate(
    model: nn.Module, features: torch.Tensor, labels: torch.Tensor, batch_size: int = EVAL_BATCH_SIZE
) -> Evaluation:
    """Mean cross-entropy and accuracy over all images, in large batches."""
    model.eval()
    loss_sum = torch.zeros((), device=features.device)
    batches = []
    for start in range(0, len(labels), batch_size):
        batches.append(model(features[start : start + batch_size]))
        loss_sum += F.cross_entropy(batches[-1], labels[start : start + batch_size], reduction="sum")
    logits = torch.cat(batches)
    correct = (logits.argmax(dim=1) == labels).sum().item()
    return Evaluation((loss_sum / len(labels)).item(), correct / len(labels), logits)


def fit(
    model: nn.Sequential,
    optimizer: torch.optim.Optimizer,
    train: tuple[torch.Tensor, torch.Tensor],
    valid: tuple[torch.Tensor, torch.Tensor],
    epochs: int,
    batch_size: int,
    seed: int,
    on_epoch: Callable[[EpochResult], None] = lambda result: None,
) -> list[EpochResult]:
    """Train for ``epochs``, validating after each. ``train`` holds rows as stored (``data.as_rows``),
    shuffled and scaled batch by batch; ``valid`` holds features (``data.as_features``), read whole
    after every epoch. The shuffle has its own generator, so the order of the images depends on the
    seed alone, not on how the model was initialised."""
    shuffle = torch.Generator().manual_seed(seed)
    shuffled = (torch.empty_like(train[0]), torch.empty_like(train[1]))
    history = []
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(train[1]), generator=shuffle)
        train_loss = train_epoch(model, optimizer, *train, batch_size, order, out=shuffled)
        validation = evaluate(model, *valid)
        result = EpochResult(epoch, train_loss, validation.loss, validation.accuracy)
        on_epoch(result)
        history.append(result)
    return history


@torch.inference_mode()
def probabilities(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """Each input's softmax over the classes (on the CPU): what a user of the model wants to see."""
    model.eval()
    return model(features).softmax(dim=1).cpu()
