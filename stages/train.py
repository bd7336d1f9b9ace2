"""Stage ``train``: the configured architecture, optimizer and schedule on the training split.

Prints the model's summary and the tutorial's line each epoch, and writes the model (its weights,
architecture and params), its summary, the per-epoch curves (as data and as a figure), the metrics
of the run, and (apart from the metrics) where the run came from and its timings. An interrupted
run continues from its last completed epoch when started again with the same params.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from stages.core import atomic, data, figures, results, runtime
from stages.core.checkpoint import FileCheckpoints, checkpoint_key
from stages.core.errors import run_stage
from stages.core.models import build_model, count_parameters, model_bytes, sha256, summary_table
from stages.core.params import load_params
from stages.core.training import train_recipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--split", type=Path, default=Path("data/split"), help="folder of the split stage")
    parser.add_argument("--model", type=Path, default=Path("models/model.pt"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/train.json"))
    parser.add_argument("--curves", type=Path, default=Path("plots/loss.csv"))
    parser.add_argument("--curves-figure", type=Path, default=Path("plots/curves.png"))
    parser.add_argument("--summary", type=Path, default=Path("models/summary.txt"), help="layers and parameters")
    parser.add_argument("--log", type=Path, default=Path("logs/train.json"), help="provenance, environment, timings")
    parser.add_argument("--checkpoint", type=Path, default=Path("models/checkpoints/train.pt"), help="kept per epoch")
    args = parser.parse_args()

    recipe = load_params(args.params).recipe()
    device = runtime.configure(recipe.threads, recipe.device, recipe.numerics)
    environment = runtime.environment(device, recipe.numerics)
    split_files = [args.split / f"{name}.pt" for name in ("train", "valid")]
    train_set, valid_set = map(data.load_subset, split_files)
    key = checkpoint_key(recipe.digest, environment["fingerprint"], split_files)
    checkpoints = FileCheckpoints(args.checkpoint, key, device)

    summary = summary_table(build_model(recipe.architecture).to(device))  # train_recipe seeds its own model
    print(summary, end="")
    print(f"{recipe.arch}: optimizer {recipe.optimizer.name}, schedule {recipe.schedule.name}, "
          f"device {device}, numerics {environment['fingerprint']}", flush=True)  # fmt: skip

    started = time.perf_counter()
    model, result = train_recipe(
        recipe,
        train_set,
        valid_set,
        device,
        checkpoints,
        on_epoch=lambda r: print(r.line(recipe.train.epochs), flush=True),
    )
    seconds = time.perf_counter() - started
    if result.kept_epoch != result.history[-1].epoch:
        print(f"kept epoch {result.kept_epoch}: the best validation accuracy, {result.best.valid_accuracy:.4f}")

    model_file = model_bytes(model, recipe.architecture, recipe.as_dict(), recipe.digest)
    epochs_trained = len(result.history) - checkpoints.resumed_after
    with atomic.Outputs() as outputs:
        outputs.bytes(args.model, model_file)
        outputs.text(args.summary, summary)
        outputs.csv(args.curves, results.CURVE_COLUMNS, results.curve_rows(result.history))
        outputs.bytes(args.curves_figure, figures.png_bytes(figures.curves_figure(result.history, result.kept_epoch)))
        outputs.json(args.metrics, results.train_metrics(result, count_parameters(model)))
        outputs.json(
            args.log,
            results.train_log(
                recipe.as_dict(),
                recipe.digest,
                sha256(model_file),
                environment,
                seconds,
                epochs_trained,
                checkpoints.resumed_after,
            ),  # fmt: skip
        )
    checkpoints.remove()


if __name__ == "__main__":
    run_stage(main)
