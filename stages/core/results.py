"""What a run writes, in one place for the single configuration and the grid's cells alike: its
metrics (figures the same params reproduce bitwise), its curves, its per-image predictions, and
evaluate's log (the model it tested), and where each run's timings go; the train log is
``run.Run.log``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from stages.core.models import NUM_CLASSES
from stages.core.training import EpochResult, Evaluation, FitResult

CURVE_COLUMNS = ("epoch", "train_loss", "valid_loss", "valid_accuracy")
PREDICTION_COLUMNS = ("actual", "predicted")


def train_metrics(result: FitResult, num_params: int) -> dict[str, float | int]:
    """The last epoch's figures, the best validation accuracy, and which epoch the model holds."""
    last, best = result.history[-1], result.best
    figures = {key: getattr(last, key) for key in CURVE_COLUMNS[1:]}
    kept = {"best_valid_accuracy": best.valid_accuracy, "best_epoch": best.epoch, "kept_epoch": result.kept_epoch}
    return {**figures, **kept, "epochs": last.epoch, "num_params": num_params}


def curve_rows(history: list[EpochResult]) -> Iterator[list[float | int]]:
    return ([getattr(result, column) for column in CURVE_COLUMNS] for result in history)


def test_metrics(result: Evaluation, labels: torch.Tensor) -> dict[str, Any]:
    counts = confusion_matrix(labels, result.predictions)
    return {
        "test_accuracy": result.accuracy,  # first: the column `dvc exp show` keeps in a narrow terminal
        "test_loss": result.loss,
        "per_class_accuracy": per_class_accuracy(counts),
    }


def prediction_rows(labels: torch.Tensor, result: Evaluation) -> Iterator[tuple[int, int]]:
    """One ``actual,predicted`` row per test image, in the test set's order: for DVC's confusion
    template, and for paired tests between runs on the same images."""
    return zip(labels.tolist(), result.predictions.tolist(), strict=True)


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor) -> torch.Tensor:
    """Counts ``[actual, predicted]``."""
    pairs = labels.long().cpu() * NUM_CLASSES + predictions.long().cpu()
    return torch.bincount(pairs, minlength=NUM_CLASSES * NUM_CLASSES).reshape(NUM_CLASSES, NUM_CLASSES)


def per_class_accuracy(counts: torch.Tensor) -> dict[str, float]:
    """The confusion matrix's diagonal over its rows (actual digits). Keys are the digits as
    strings, so JSON and ``dvc metrics diff`` show one row per digit."""
    return {
        str(digit): counts[digit, digit].item() / max(counts[digit].sum().item(), 1) for digit in range(NUM_CLASSES)
    }


def evaluate_log(params_digest: str, model_sha256: str, environment: Mapping[str, Any]) -> dict[str, Any]:
    return {"params_digest": params_digest, "model_sha256": model_sha256, **environment}


def timings_path(log: Path) -> Path:
    """Where a run's timings go, beside its log: ``logs/train.json`` -> ``logs/train.timings.json``.
    Ignored by git and DVC (``.gitignore``, ``.dvcignore``), so a rerun that gives the same bits
    leaves dvc.lock and ``git status`` as they were."""
    return log.with_name(f"{log.stem}.timings.json")
