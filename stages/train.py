"""Stage ``train``: the configured architecture and optimizer on the training split.

Prints the model's summary and the tutorial's line each epoch, and writes the model's state dict,
its summary, the per-epoch curves (as data and as a figure), the metrics of the run, and (apart
from the metrics) the environment and timings.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from stages.core import atomic, data, figures, runtime
from stages.core.errors import run_stage
from stages.core.models import build_model, count_parameters, summary_table
from stages.core.optimizers import build_optimizer
from stages.core.params import load_params
from stages.core.training import EpochResult, fit

CURVE_COLUMNS = ("epoch", "train_loss", "valid_loss", "valid_accuracy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--arch", help="instead of params.yaml's arch (the grid runs each entry)")
    parser.add_argument("--optimizer", help="instead of params.yaml's optimizer (the grid runs each entry)")
    parser.add_argument("--split", type=Path, default=Path("data/split"), help="folder of the split stage")
    parser.add_argument("--model", type=Path, default=Path("models/model.pt"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/train.json"))
    parser.add_argument("--curves", type=Path, default=Path("plots/loss.csv"))
    parser.add_argument("--curves-figure", type=Path, default=Path("plots/curves.png"))
    parser.add_argument("--summary", type=Path, default=Path("models/summary.txt"), help="layers and parameters")
    parser.add_argument("--log", type=Path, default=Path("logs/train.json"), help="environment and timings")
    args = parser.parse_args()

    params = load_params(args.params, arch=args.arch, optimizer=args.optimizer)
    device = runtime.configure(params.seed, params.threads, params.device)
    train, valid = (data.load_subset(args.split / f"{name}.pt") for name in ("train", "valid"))
    model = build_model(params.architecture).to(device)
    optimizer = build_optimizer(params.optimizer_spec, model.parameters())
    num_params = count_parameters(model)
    summary = summary_table(model)
    print(summary, end="")
    print(f"{params.arch}: {num_params:,} parameters; optimizer {params.optimizer}; device {device}")

    started = time.perf_counter()
    history = fit(
        model,
        optimizer,
        train=(data.as_rows(train.images, device), train.labels.to(device)),
        valid=(data.as_features(valid.images, device), valid.labels.to(device)),
        epochs=params.train.epochs,
        batch_size=params.train.batch_size,
        seed=params.seed,
        on_epoch=lambda result: print(result.line(params.train.epochs), flush=True),
    )
    seconds = time.perf_counter() - started

    atomic.save_torch(args.model, model.state_dict())
    atomic.write_text(args.summary, summary)
    atomic.write_csv(args.curves, CURVE_COLUMNS, ([getattr(r, c) for c in CURVE_COLUMNS] for r in history))
    figures.write_png(args.curves_figure, figures.curves_figure(history))
    atomic.write_json(args.metrics, train_metrics(history, num_params))
    atomic.write_json(
        args.log,
        {**runtime.describe(device), "train_seconds": seconds, "seconds_per_epoch": seconds / len(history)},
    )


def train_metrics(history: list[EpochResult], num_params: int) -> dict[str, float | int]:
    """The last epoch's figures, and the best validation accuracy (the earliest epoch on a tie)."""
    last = history[-1]
    best = max(history, key=lambda result: (result.valid_accuracy, -result.epoch))
    return {
        "train_loss": last.train_loss,
        "valid_loss": last.valid_loss,
        "valid_accuracy": last.valid_accuracy,
        "best_valid_accuracy": best.valid_accuracy,
        "best_epoch": best.epoch,
        "num_params": num_params,
    }


if __name__ == "__main__":
    run_stage(main)
