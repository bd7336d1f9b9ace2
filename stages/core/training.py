"""The training loop and evaluation, over data held as whole tensors on the device.

The step is the tutorial's (``zero_grad``, forward, cross-entropy, ``backward``, ``step``). The training
split stays on the device as stored, one uint8 row per image; each epoch copies the rows once in a
seeded order and scales batches, sliced from the copy, into one reused float buffer: batch for batch
the tutorial's ``DataLoader(shuffle=True)`` loop without its per-image conversion, bitwise the same
weights (tests/test_equivalence.py; benchmarks/bench_training.py times both).
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Protocol

import torch
from torch import nn
from torch.nn import functional as F
from torch.optim import Optimizer

from stages.core import data, graphs
from stages.core.errors import PipelineError
from stages.core.models import build_model
from stages.core.optimizers import build_optimizer
from stages.core.params import CATALOG, Recipe, TrainParams
from stages.core.schedules import Scheduler, build_scheduler

Pair = tuple[torch.Tensor, torch.Tensor]  # features or rows, and labels
Parts = tuple[nn.Module, Optimizer, Scheduler | None, torch.Generator]  # what a checkpoint holds besides history


@dataclass(frozen=True)
class Evaluation:
    loss: float
    accuracy: float
    logits: torch.Tensor  # every image's, in input order: the views below cost only a caller who asks

    @cached_property
    def predictions(self) -> torch.Tensor:
        return self.logits.argmax(dim=1).cpu()

    @cached_property
    def confidences(self) -> torch.Tensor:
        """The softmax probability of each predicted class."""
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


@dataclass(frozen=True)
class FitResult:
    history: list[EpochResult]
    kept_epoch: int  # whose weights the model holds: the last, or the best (``keep: best``)
    cuda_graph: bool = False  # whether full batches replayed their step as a CUDA graph

    @property
    def best(self) -> EpochResult:
        """The best validation accuracy, the earliest epoch on a tie."""
        return max(self.history, key=lambda result: (result.valid_accuracy, -result.epoch))


class Checkpoints(Protocol):
    """Where ``fit`` keeps its state after every epoch: ``checkpoint.FileCheckpoints``, which imports this module."""

    path: Path

    def load(self) -> dict | None: ...

    def save(self, state: dict) -> None: ...


class Diverged(PipelineError):
    """A loss that is not a finite number: the weights are lost, nothing is written."""


def epoch_rows(train: Pair, order: torch.Tensor, shuffled: Pair | None = None) -> Pair:
    """The rows and labels in ``order``, gathered into ``shuffled`` if given (the CPU caches no
    allocations: a fresh copy every epoch would cost more than the gathers save)."""
    order = order.to(train[0].device)
    rows_out, labels_out = shuffled or (None, None)
    return torch.index_select(train[0], 0, order, out=rows_out), torch.index_select(train[1], 0, order, out=labels_out)


def scaled_batches(rows: torch.Tensor, labels: torch.Tensor, batch_size: int) -> Iterator[Pair]:
    """Consecutive batches, each scaled into the same float buffer, which stays in cache for the step."""
    features = torch.empty(min(batch_size, len(rows)), rows.shape[1], device=rows.device)
    for start in range(0, len(labels), batch_size):
        batch = rows[start : start + batch_size]
        yield data.scale(batch, out=features[: len(batch)]), labels[start : start + batch_size]


def step(
    model: nn.Module, optimizer: Optimizer, features: torch.Tensor, labels: torch.Tensor, smoothing: float = 0.0
) -> torch.Tensor:
    """The tutorial's training step; returns the batch's loss (against labels smoothed by ``smoothing``)."""
    optimizer.zero_grad()
    loss = F.cross_entropy(model(features), labels, label_smoothing=smoothing)
    loss.backward()
    optimizer.step()
    return loss


def train_epoch(
    model: nn.Module,
    optimizer: Optimizer,
    batches: Iterable[Pair],
    scheduler: Scheduler | None = None,
    graphed: graphs.GraphedStep | None = None,
    take_step: graphs.Step = step,
) -> float:
    """One pass of ``take_step`` over ``batches``; the mean loss over images. A per-batch schedule steps
    after every step. Losses stay on the device until the end, so a step never waits for a GPU."""
    model.train()
    losses, sizes = [], []
    for features, labels in batches:
        if graphed is not None and len(labels) == graphed.batch_size:
            loss = graphed.replay(features, labels)  # the same step, captured once
        else:
            loss = take_step(model, optimizer, features, labels)
        if scheduler is not None:
            scheduler.step()
        losses.append(loss.detach())
        sizes.append(len(labels))
    weights = torch.tensor(sizes, device=losses[0].device)
    return ((torch.stack(losses) * weights).sum() / sum(sizes)).item()


@torch.inference_mode()
def evaluate(model: nn.Module, features: torch.Tensor, labels: torch.Tensor, batch_size: int) -> Evaluation:
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
    model: nn.Module,
    optimizer: Optimizer,
    scheduler: Scheduler | None,
    train: Pair,
    valid: Pair,
    settings: TrainParams,
    seed: int,
    eval_batch_size: int,
    checkpoints: Checkpoints | None = None,
    on_epoch: Callable[[EpochResult], None] = lambda result: None,
) -> FitResult:
    """Train for ``settings.epochs`` (fewer with ``patience``), validating after each. ``train`` holds
    rows as stored (``data.as_rows``), ``valid`` features (``data.as_features``). Order, shifts and turns have
    their own generator: they depend on the seed alone, not on how the model was initialised. After
    every epoch the whole state goes to ``checkpoints``; a run resumed from it ends with bitwise the
    weights and history of one never interrupted."""
    generator = torch.Generator().manual_seed(seed)
    shuffled = (torch.empty_like(train[0]), torch.empty_like(train[1]))
    state = TrainingState()
    parts = (model, optimizer, scheduler, generator)
    if checkpoints and (saved := checkpoints.load()):
        try:
            state = TrainingState.restore(saved, parts)
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as error:  # its tensors, not its key
            raise PipelineError(
                f"{checkpoints.path} does not fit this run ({str(error).splitlines()[0]}): delete it to train from "
                "the first epoch"
            ) from None
    smoothed = functools.partial(step, smoothing=settings.label_smoothing)
    graphed = None  # captured after a restore: the graph holds the very tensors it steps
    if graphs.replayable(train[0].device, optimizer, scheduler is None) and len(train[1]) >= settings.batch_size:
        graphed = graphs.GraphedStep(model, optimizer, smoothed, settings.batch_size, train[0].shape[1])
    while state.epoch < settings.epochs and not state.patience_spent(settings.patience):
        rows, labels = epoch_rows(train, torch.randperm(len(train[1]), generator=generator), shuffled)
        if settings.shift:
            rows = data.shifted(rows, settings.shift, generator)
        if settings.rotate or settings.zoom:
            rows = data.turned(rows, settings.rotate, settings.zoom, generator)
        per_batch = scheduler if scheduler is not None and scheduler.per_batch else None
        batches = scaled_batches(rows, labels, settings.batch_size)
        train_loss = train_epoch(model, optimizer, batches, per_batch, graphed, smoothed)
        if scheduler is not None and not scheduler.per_batch:
            scheduler.step()
        validation = evaluate(model, *valid, eval_batch_size)
        result = EpochResult(state.epoch + 1, train_loss, validation.loss, validation.accuracy)
        for name, value in (("train loss", result.train_loss), ("validation loss", result.valid_loss)):
            if not math.isfinite(value):
                raise Diverged(f"training diverged at epoch {result.epoch}: its {name} is {value}")
        state.add(result, model, keep_best=settings.keep == "best")
        if checkpoints:
            checkpoints.save(state.snapshot(parts))
        on_epoch(result)  # after the save: an epoch that was reported is never trained again
    if settings.keep == "best":
        model.load_state_dict(state.best_state)
    return FitResult(state.history, state.best_epoch if settings.keep == "best" else state.epoch, graphed is not None)


@dataclass
class TrainingState:
    """What ``fit`` knows between epochs besides the weights: the history, and the best epoch."""

    history: list[EpochResult] = field(default_factory=list)
    best_epoch: int = 0
    best_accuracy: float = -1.0
    best_state: dict[str, torch.Tensor] | None = None

    @property
    def epoch(self) -> int:
        return len(self.history)

    def patience_spent(self, patience: int) -> bool:
        return bool(patience) and self.epoch - self.best_epoch >= patience

    def add(self, result: EpochResult, model: nn.Module, keep_best: bool) -> None:
        self.history.append(result)
        if result.valid_accuracy > self.best_accuracy:  # strictly better: the earliest epoch wins a tie
            self.best_epoch, self.best_accuracy = result.epoch, result.valid_accuracy
            self.best_state = copy.deepcopy(model.state_dict()) if keep_best else None

    def snapshot(self, parts: Parts) -> dict:
        """Plain data and tensors, so a checkpoint loads with ``weights_only=True``."""
        model, optimizer, scheduler, generator = parts
        return {
            "history": [asdict(result) for result in self.history],
            "best": {"epoch": self.best_epoch, "accuracy": self.best_accuracy, "state": self.best_state},
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": None if scheduler is None else scheduler.scheduler.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "data": generator.get_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            },
        }

    @classmethod
    def restore(cls, saved: dict, parts: Parts) -> TrainingState:
        model, optimizer, scheduler, generator = parts
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None:
            scheduler.scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["rng"]["torch"])
        generator.set_state(saved["rng"]["data"])
        if saved["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
        best = saved["best"]
        return cls([EpochResult(**row) for row in saved["history"]], best["epoch"], best["accuracy"], best["state"])


def train_recipe(
    recipe: Recipe,
    train_set: data.Subset,
    valid_set: data.Subset,
    device: torch.device,
    checkpoints: Checkpoints | None = None,
    on_epoch: Callable[[EpochResult], None] = lambda result: None,
) -> tuple[nn.Sequential, FitResult]:
    """The model ``recipe`` describes, trained as it says. The seed is set here, right before the
    weights are drawn, so a recipe gives the same run whatever ran before it in the process."""
    torch.manual_seed(recipe.seed)
    model = build_model(recipe.architecture).to(device)
    batches = math.ceil(len(train_set) / recipe.train.batch_size)
    optimizer, scheduler = optimizer_and_scheduler(recipe, model, device, batches)
    train = (data.as_rows(train_set.images, device), train_set.labels.to(device))
    valid = (data.as_features(valid_set.images, device), valid_set.labels.to(device))
    try:
        result = fit(model, optimizer, scheduler, train, valid, recipe.train, recipe.seed, recipe.evaluate.batch_size,
                     checkpoints, on_epoch)  # fmt: skip
    except Diverged as error:
        one_cycle = recipe.schedule.type == "onecycle"  # then its peak is the rate that diverged
        spec, key = (recipe.schedule, "max_lr") if one_cycle else (recipe.optimizer, "lr")
        where = f"{'schedules' if one_cycle else 'optimizers'}.{spec.name}.{key} = {spec.hyperparameters[key]}"
        raise Diverged(f"{error}; try a smaller learning rate than {where}") from None
    return model, result


def optimizer_and_scheduler(
    recipe: Recipe, model: nn.Module, device: torch.device, batches_per_epoch: int
) -> tuple[Optimizer, Scheduler | None]:
    """The recipe's optimizer and schedule for ``model``; what only torch checks (a one-cycle schedule
    needs an optimizer with momentum or betas, Nesterov a momentum) is one line, before a run writes."""
    try:
        spec = graphs.optimizer_spec(recipe.optimizer, device, recipe.schedule.type == "none")
        optimizer = build_optimizer(spec, model.parameters())
        return optimizer, build_scheduler(recipe.schedule, optimizer, recipe.train.epochs, batches_per_epoch)
    except (TypeError, ValueError, RuntimeError, ZeroDivisionError) as error:
        raise PipelineError(
            f"{CATALOG}: schedule {recipe.schedule.name!r} with optimizer {recipe.optimizer.name!r}: "
            + " ".join(str(error).split())
        ) from None


@torch.inference_mode()
def probabilities(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """Each input's softmax over the classes (on the CPU): what a user of the model wants to see."""
    model.eval()
    return model(features).softmax(dim=1).cpu()
