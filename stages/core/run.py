"""One training run as the train stage and the grid's cells make it: the split from disk, a checkpoint
after every epoch, the timings, and the log of where it came from."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stages.core import data, runtime
from stages.core.checkpoint import FileCheckpoints, checkpoint_key
from stages.core.models import model_bytes, sha256
from stages.core.params import Recipe
from stages.core.training import FitResult, train_recipe


@dataclass(frozen=True)
class Run:
    recipe: Recipe
    model: nn.Sequential
    result: FitResult
    environment: dict[str, Any]
    seconds: float
    checkpoints: FileCheckpoints

    @cached_property
    def model_bytes(self) -> bytes:
        """The model file: weights, architecture and the run's params (``models.model_bytes``)."""
        return model_bytes(self.model, self.recipe.architecture, self.recipe.as_dict(), self.recipe.digest)

    def log(self) -> dict[str, Any]:
        """Where the run came from (params digest, the model's SHA-256, the numerics fingerprint and
        what it sums up, the resolved params): the same bits give the same log, on any machine."""
        return {
            "params_digest": self.recipe.digest,
            "model_sha256": sha256(self.model_bytes),
            **runtime.split_environment(self.environment)[0],
            "recipe": self.recipe.as_dict(),
            "cuda_graph": self.result.cuda_graph,
        }

    def timings(self) -> dict[str, Any]:
        """How long it took, the epoch it resumed after and the machine: they vary from run to run, so
        they go to a file neither git nor DVC tracks (``results.timings_path``), never into the log."""
        epochs_trained = len(self.result.history) - self.checkpoints.resumed_after
        return {
            **runtime.split_environment(self.environment)[1],
            "train_seconds": self.seconds,
            "seconds_per_epoch": self.seconds / max(epochs_trained, 1),
            "resumed_after_epoch": self.checkpoints.resumed_after,
        }


def train_run(
    recipe: Recipe,
    split: Path,
    checkpoint: Path,
    device: torch.device,
    environment: dict[str, Any],
    say: Callable[[str], None] = print,
) -> Run:
    """``recipe`` trained on ``split``, resumed from ``checkpoint`` if it holds this very run (remove it once
    the outputs are written); ``say`` gets the tutorial's line every epoch."""
    split_files = [split / f"{name}.pt" for name in ("train", "valid")]
    train_set, valid_set = map(data.load_subset, split_files)
    key = checkpoint_key(recipe.digest, environment["fingerprint"], split_files)
    checkpoints = FileCheckpoints(checkpoint, key, say)
    started = time.perf_counter()
    model, result = train_recipe(
        recipe, train_set, valid_set, device, checkpoints, on_epoch=lambda epoch: say(epoch.line(recipe.train.epochs))
    )
    return Run(recipe, model, result, environment, time.perf_counter() - started, checkpoints)
