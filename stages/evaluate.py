"""Stage ``evaluate``: the trained model on the official test set, the only place it is used.

Writes test loss and accuracy (DVC's metrics), per-class accuracy (a file of its own: not a metric,
so ``dvc exp show`` stays one column per headline figure), one ``actual,predicted`` row per test
image for DVC's confusion-matrix template, figures of the confusion matrix and of the predictions, and which
model it tested. A model trained with other params than params.yaml's is refused, not tested.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from stages.core import atomic, data, figures, models, results, runtime
from stages.core.errors import run_stage
from stages.core.params import check_unchanged, load_params
from stages.core.training import evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--split", type=Path, default=Path("data/split"), help="folder of the split stage")
    parser.add_argument("--model", type=Path, default=Path("models/model.pt"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/evaluate.json"))
    parser.add_argument("--per-class", type=Path, default=Path("metrics/per_class_accuracy.json"))
    parser.add_argument("--confusion", type=Path, default=Path("plots/confusion.csv"))
    parser.add_argument("--confusion-figure", type=Path, default=Path("plots/confusion.png"))
    parser.add_argument("--predictions-figure", type=Path, default=Path("plots/predictions.png"))
    parser.add_argument("--log", type=Path, default=Path("logs/evaluate.json"), help="the model tested, environment")
    args = parser.parse_args()

    params = load_params(args.params)
    recipe = params.recipe()
    device = runtime.configure(recipe.threads, recipe.device, recipe.numerics)
    trained = models.load_for(args.model, device, recipe.architecture, recipe.digest, params.source)
    test = data.load_subset(args.split / "test.pt")

    started = time.perf_counter()
    result = evaluate(
        trained.model, data.as_features(test.images, device), test.labels.to(device), recipe.evaluate.batch_size
    )
    seconds = time.perf_counter() - started
    print(f"Test Loss : {result.loss:.4f} Test Accuracy : {result.accuracy:.4f}")

    counts = results.confusion_matrix(test.labels, result.predictions)
    predictions = figures.predictions_figure(test.images, test.labels, result.predictions, result.confidences)
    environment, machine = runtime.split_environment(runtime.environment(device, recipe.numerics))
    metrics = results.test_metrics(result, test.labels)
    per_class = metrics.pop("per_class_accuracy")  # the grid's runs keep it in evaluate.json
    with atomic.Outputs() as outputs:
        outputs.json(args.metrics, metrics)
        outputs.json(args.per_class, per_class)
        outputs.csv(args.confusion, results.PREDICTION_COLUMNS, results.prediction_rows(test.labels, result))
        outputs.bytes(args.confusion_figure, figures.png_bytes(figures.confusion_figure(counts)))
        outputs.bytes(args.predictions_figure, figures.png_bytes(predictions))
        outputs.json(args.log, results.evaluate_log(trained.params_digest, trained.sha256, environment))
        outputs.json(results.timings_path(args.log), {**machine, "evaluate_seconds": seconds})
        check_unchanged(params)


if __name__ == "__main__":
    run_stage(main)
