"""Stage ``cell`` (grid/dvc.yaml): one recipe of the grid, trained and tested with each grid seed.

Writes ``<out>/seed-<n>/``: ``train.json`` and ``evaluate.json`` (the metrics the single
configuration writes), ``loss.csv`` (its curves), ``predictions.csv`` (``actual,predicted`` per
test image, for paired tests between runs), ``log.json`` (provenance, environment) and
``log.timings.json`` (timings; git and DVC ignore it). No model is kept: the grid is there to
compare runs, and each one reproduces bit for bit. The seeds' files replace the last run's
together, once every seed is done. Seeds run side by side, one process each (``--jobs``, else
``MNIST_GRID_JOBS``, else as many as the cores hold at params' ``threads`` each), since each has
its own threads and the thread count is part of the result; how many run at once changes no
result, only the time.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from stages.core import atomic, data, results, runtime
from stages.core.errors import run_stage
from stages.core.models import count_parameters
from stages.core.params import check_unchanged, load_params
from stages.core.run import train_run
from stages.core.training import evaluate

JOBS_ENV = "MNIST_GRID_JOBS"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--recipe", required=True, help="a name under grid.recipes in catalog.yaml")
    parser.add_argument("--split", type=Path, default=Path("data/split"), help="folder of the split stage")
    parser.add_argument("--out", type=Path, required=True, help="folder for the recipe's runs, one per seed")
    parser.add_argument("--checkpoints", type=Path, default=Path("models/checkpoints"), help="kept per epoch")
    parser.add_argument("--jobs", type=int, help=f"seeds trained at once (default: ${JOBS_ENV}, else the cores "
                        "over params' threads)")  # fmt: skip
    args = parser.parse_args()

    params = load_params(args.params)
    params.recipe(args.recipe)  # an unknown recipe is one line here, not one per worker
    runs = [(args.params, args.recipe, seed, args.split, args.out, args.checkpoints) for seed in params.grid_seeds]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    jobs = min(len(runs), args.jobs or int(os.environ.get(JOBS_ENV, 0)) or max(1, cores // params.threads))
    with atomic.Outputs() as outputs:  # a seed's error ends the stage with that error, and nothing replaced
        if jobs == 1:
            for run in runs:
                outputs.staged += train_and_test(*run)
        else:
            with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
                for future in [pool.submit(train_and_test, *run) for run in runs]:
                    outputs.staged += future.result()
        check_unchanged(params)
    for seed in params.grid_seeds:  # kept until now: a seed that failed reruns only itself
        checkpoint_path(args.checkpoints, args.recipe, seed).unlink(missing_ok=True)
    for stale in set(args.out.glob("seed-*")) - {args.out / f"seed-{seed}" for seed in params.grid_seeds}:
        shutil.rmtree(stale)  # a seed of a run with more seeds: DVC no longer empties the folder (persist)


def train_and_test(
    params_path: str, name: str, seed: int, split: Path, out: Path, checkpoints: Path
) -> list[tuple[Path, Path]]:
    """Trains and tests one seed; returns its files, written beside their targets, for ``main`` to
    rename together with the other seeds'."""
    recipe = load_params(params_path).recipe(name, seed)
    device = runtime.configure(recipe.threads, recipe.device, recipe.numerics)
    tag = f"[{name} seed {seed}]"
    run = train_run(
        recipe, split, checkpoint_path(checkpoints, name, seed), device, runtime.environment(device, recipe.numerics),
        say=lambda line: print(tag, line, flush=True),
    )  # fmt: skip
    test_set = data.load_subset(split / "test.pt")
    test = evaluate(run.model, data.as_features(test_set.images, device), test_set.labels.to(device),
                    recipe.evaluate.batch_size)  # fmt: skip
    print(f"{tag} Test Loss : {test.loss:.4f} Test Accuracy : {test.accuracy:.4f}", flush=True)
    folder = out / f"seed-{seed}"
    with atomic.Outputs() as outputs:
        outputs.json(folder / "train.json", results.train_metrics(run.result, count_parameters(run.model)))
        outputs.json(folder / "evaluate.json", results.test_metrics(test, test_set.labels))
        outputs.csv(folder / "loss.csv", results.CURVE_COLUMNS, results.curve_rows(run.result.history))
        outputs.csv(
            folder / "predictions.csv", results.PREDICTION_COLUMNS, results.prediction_rows(test_set.labels, test)
        )
        outputs.json(folder / "log.json", run.log())
        outputs.json(results.timings_path(folder / "log.json"), run.timings())
        staged, outputs.staged = outputs.staged, []  # renamed by main, with the other seeds'
    return staged


def checkpoint_path(checkpoints: Path, name: str, seed: int) -> Path:
    return checkpoints / f"grid-{name}-seed{seed}.pt"


if __name__ == "__main__":
    run_stage(main)
