"""Stage ``evaluate``: the trained model on the official test set, the only place it is used.

Writes test loss, accuracy and per-class accuracy, one ``actual,predicted`` row per test image for
DVC's confusion-matrix template, and figures of the confusion matrix and of the predictions.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from stages.core import atomic, data, figures, runtime
from stages.core.errors import run_stage
from stages.core.models import NUM_CLASSES, load_model
from stages.core.params import load_params
from stages.core.training import evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--arch", help="instead of params.yaml's arch (the grid runs each entry)")
    parser.add_argument("--split", type=Path, default=Path("data/split"), help="folder of the split stage")
    parser.add_argument("--model", type=Path, default=Path("models/model.pt"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/evaluate.json"))
    parser.add_argument("--confusion", type=Path, default=Path("plots/confusion.csv"))
    parser.add_argument("--confusion-figure", type=Path, default=Path("plots/confusion.png"))
    parser.add_argument("--predictions-figure", type=Path, default=Path("plots/predictions.png"))
    parser.add_argument("--log", type=Path, default=Path("logs/evaluate.json"), help="environment and timings")
    args = parser.parse_args()

    params = load_params(args.params, arch=args.arch)
    device = runtime.configure(params.seed, params.threads, params.device)
    model = load_model(args.model, params.architecture, device)
    test = data.load_subset(args.split / "test.pt")

    started = time.perf_counter()
    result = evaluate(
        model, data.as_features(test.images, device), test.labels.to(device), params.evaluate.batch_size
    )
    seconds = time.perf_counter() - started
    print(f"Test Loss : {result.loss:.4f} Test Accuracy : {result.accuracy:.4f}")

    counts = figures.confusion_matrix(test.labels, result.predictions)
    atomic.write_json(
        args.metrics,
        {"test_loss": result.loss, "test_accuracy": result.accuracy, "per_class_accuracy": per_class_accuracy(counts)},
    )
    atomic.write_csv(args.confusion, ("actual", "predicted"), zip(test.labels.tolist(), result.predictions.tolist()))
    figures.write_png(args.confusion_figure, figures.confusion_figure(counts))
    figures.write_png(
        args.predictions_figure,
        figures.predictions_figure(test.images, test.labels, result.predictions, result.confidences),
    )
    atomic.write_json(args.log, {**runtime.describe(device), "evaluate_seconds": seconds})


def per_class_accuracy(counts: torch.Tensor) -> dict[str, float]:
    """The confusion matrix's diagonal over its rows (actual digits). Keys are the digits as
    strings, so JSON and ``dvc metrics diff`` show one row per digit."""
    return {str(digit): counts[digit, digit].item() / max(counts[digit].sum().item(), 1) for digit in range(NUM_CLASSES)}


if __name__ == "__main__":
    run_stage(main)
