"""Stage ``train``: the configured architecture, optimizer and schedule on the training split.

Prints the model's summary and the tutorial's line each epoch, and writes the model (its weights,
architecture and params), its summary, the per-epoch curves (as data and as a figure), the metrics
of the run, and (apart from the metrics) where the run came from and its timings. An interrupted
run continues from its last completed epoch when started again with the same params.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stages.core import atomic, figures, results, runtime
from stages.core.errors import run_stage
from stages.core.models import build_model, count_parameters, summary_table
from stages.core.params import check_unchanged, load_params
from stages.core.run import train_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--split", type=Path, default=Path("data/split"), help="folder of the split stage")
    parser.add_argument("--model", type=Path, default=Path("models/model.pt"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/train.json"))
    parser.add_argument("--curves", type=Path, default=Path("plots/loss.csv"))
    parser.add_argument("--curves-figure", type=Path, default=Path("plots/curves.png"))
    parser.add_argument("--summary", type=Path, default=Path("models/summary.txt"), help="layers and parameters")
    parser.add_argument("--log", type=Path, default=Path("logs/train.json"), help="provenance, environment")
    parser.add_argument("--checkpoint", type=Path, default=Path("models/checkpoints/train.pt"), help="kept per epoch")
    args = parser.parse_args()

    params = load_params(args.params)
    recipe = params.recipe()
    device = runtime.configure(recipe.threads, recipe.device, recipe.numerics)
    environment = runtime.environment(device, recipe.numerics)
    summary = summary_table(build_model(recipe.architecture).to(device))  # train_run seeds its own model
    print(summary, end="")
    print(f"{recipe.arch}: optimizer {recipe.optimizer.name}, schedule {recipe.schedule.name}, "
          f"device {device}, numerics {environment['fingerprint']}", flush=True)  # fmt: skip

    run = train_run(recipe, args.split, args.checkpoint, device, environment, say=lambda line: print(line, flush=True))
    if run.result.kept_epoch != run.result.history[-1].epoch:
        print(f"kept epoch {run.result.kept_epoch}: the best validation accuracy, {run.result.best.valid_accuracy:.4f}")
    with atomic.Outputs() as outputs:
        outputs.bytes(args.model, run.model_bytes)
        outputs.text(args.summary, summary)
        outputs.csv(args.curves, results.CURVE_COLUMNS, results.curve_rows(run.result.history))
        figure = figures.curves_figure(run.result.history, run.result.kept_epoch)
        outputs.bytes(args.curves_figure, figures.png_bytes(figure))
        outputs.json(args.metrics, results.train_metrics(run.result, count_parameters(run.model)))
        outputs.json(args.log, run.log())
        outputs.json(results.timings_path(args.log), run.timings())
        check_unchanged(params)
    run.checkpoints.remove()


if __name__ == "__main__":
    run_stage(main)
