"""The grid's recipes and what each seed's run left in ``grid/runs/<recipe>/seed-<n>/``.

The recipes and seeds come from catalog.yaml (``grid.recipes``, ``grid_seeds``), as grid/dvc.yaml's
``foreach`` expands them, so nothing lists the grid twice. A recipe with a missing seed folder or
file is failed (DVC deletes a stage's outputs before running it, so a failed run has none); a
run made with other params than the params files', or with other numerics than the others, is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.core import results
from stages.core.params import Params
from tools import consistency
from tools.report import parse_curves

RUN_FILES = ("train.json", "evaluate.json", "loss.csv", "predictions.csv", "log.json")
REQUIRED = {
    "train.json": ("best_valid_accuracy", "kept_epoch", "num_params"),
    "evaluate.json": ("test_accuracy", "test_loss"),
    "loss.csv": ("epoch", "valid_accuracy"),
}


@dataclass(frozen=True)
class SeedRun:
    seed: int
    folder: str
    train: dict[str, Any]
    evaluate: dict[str, Any]
    curves: dict[str, list[float]]
    log: dict[str, Any]
    timings: dict[str, Any]
    """This workspace's timings of the run (``log.timings.json``, untracked); empty where there are none."""

    @property
    def kept_valid_accuracy(self) -> float:
        """The validation accuracy of the epoch whose weights were kept (and tested)."""
        epochs = [int(epoch) for epoch in self.curves["epoch"]]
        return self.curves["valid_accuracy"][epochs.index(self.train["kept_epoch"])]


@dataclass(frozen=True)
class RecipeRuns:
    """A recipe's runs, one per grid seed, or why there are none (``error``): a recipe with a
    failed seed is failed as a whole, never shown with the figures of the seeds that did run."""

    name: str
    arch: str
    optimizer: str
    schedule: str
    runs: tuple[SeedRun, ...]
    error: str | None = None


def read_grid(params: Params, runs: Path) -> list[RecipeRuns]:
    """Every recipe in catalog.yaml's order. Raises ``PipelineError`` for a stale run, or runs of
    different numerics fingerprints; a missing one makes its recipe failed."""
    recipes = [read_recipe(params, runs, name) for name in params.grid.recipes]
    consistency.check_fingerprints(
        {run.folder: run.log.get("fingerprint") for recipe in recipes for run in recipe.runs}
    )
    return recipes


def read_recipe(params: Params, runs: Path, name: str) -> RecipeRuns:
    chosen = params.grid.recipes[name]
    done, error = [], None
    for seed in params.grid_seeds:
        folder = runs / name / f"seed-{seed}"
        try:
            log = _read(folder, "log.json")
            # Stale beats failed: a refusal, whatever else is missing.
            consistency.check_grid_run(log, params.recipe(name, seed).digest, folder.as_posix(), name)
            files = {file: _read(folder, file) for file in ("train.json", "evaluate.json", "loss.csv")}
            if not (folder / "predictions.csv").is_file():
                raise _Missing(f"{(folder / 'predictions.csv').as_posix()} not found")
            if files["train.json"]["kept_epoch"] not in [int(epoch) for epoch in files["loss.csv"]["epoch"]]:
                raise _Missing(f"{folder.as_posix()}/loss.csv has no row for the kept epoch of train.json")
        except _Missing as missing:
            error = error or str(missing)
            continue
        timings = _timings(results.timings_path(folder / "log.json"))
        done.append(SeedRun(seed, folder.as_posix(), *(files[name] for name in REQUIRED), log, timings))
    if error is not None:
        return RecipeRuns(name, chosen.arch, chosen.optimizer, chosen.schedule, (), error)
    return RecipeRuns(name, chosen.arch, chosen.optimizer, chosen.schedule, tuple(done))


def _timings(path: Path) -> dict[str, Any]:
    try:
        timings = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # a fresh clone: the timings stayed where the run was
    return timings if isinstance(timings, dict) else {}


class _Missing(Exception):
    """A run file that is not there or not readable: the recipe failed."""


def _read(folder: Path, name: str) -> Any:
    path = folder / name
    where = path.as_posix()
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise _Missing(f"{where} not found") from None
    except OSError as error:
        raise _Missing(f"{where} unreadable: {error.strerror}") from None
    try:
        data = parse_curves(text) if name.endswith(".csv") else json.loads(text)
    except (KeyError, ValueError) as error:
        raise _Missing(f"{where} is not a valid {name}: {error}") from None
    if not isinstance(data, dict):
        raise _Missing(f"{where} is not a valid {name}")
    absent = [key for key in REQUIRED.get(name, ()) if key not in data]
    if absent:
        raise _Missing(f"{where} has no {', '.join(absent)}")
    return data
