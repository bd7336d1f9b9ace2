"""The grid's leaderboard: one row per recipe, each figure a mean over the grid's seeds.

Ranked by mean best validation accuracy, with test accuracy shown beside it: choosing on the test
set is the mistake the validation split is there to prevent. A recipe whose difference from the best
is within the seeds' noise is marked tied, one beyond it worse, by the rule of ``tools/stats.py``
(stated under the table). Writes the rows as JSON (only figures that reproduce bitwise, one mean
and one standard deviation each, so ``dvc metrics diff --targets metrics/leaderboard.json`` stays
short; not a declared DVC metric, which would put it in every row of ``dvc exp show``),
the table as markdown, and each recipe's validation accuracy per epoch, mean over seeds, in one
figure: all three the same bytes whenever the runs are, so a rerun leaves grid/dvc.lock as it was.
The table printed adds seconds per epoch, from this workspace's timings (untracked). Results that
do not belong to catalog.yaml's grid are refused; a recipe without results is listed as failed,
never with numbers, and makes the command fail.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from stages.core import atomic, figures
from stages.core.errors import PipelineError, run_stage
from stages.core.params import check_unchanged, load_params
from tools.grid import RecipeRuns, read_grid
from tools.report import curves_figure, markdown_table
from tools.stats import SeedComparison, SeedSummary, compare_seeds, seed_verdict, summarise_seeds

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Standing:
    """A recipe's place on the board; for a failed recipe only ``recipe`` (and its error)."""

    recipe: RecipeRuns
    rank: int | None = None
    best_valid_accuracy: SeedSummary | None = None
    kept_valid_accuracy: SeedSummary | None = None
    """Only where the kept epoch's validation accuracy is not the best one, for some seed."""
    test_accuracy: SeedSummary | None = None
    test_loss: SeedSummary | None = None
    num_params: int | None = None
    versus_best: SeedComparison | None = None
    """Against the best recipe, seed by seed; None for the best itself."""
    seconds_per_epoch: float | None = None
    """Mean over seeds; a timing, so only in the table printed, never in a file."""

    @property
    def verdict(self) -> str:
        if self.rank is None:
            return "failed"
        if self.versus_best is None:
            return "best"
        return seed_verdict(self.versus_best)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument(
        "--runs", type=Path, default=Path("grid/runs"), help="one folder per recipe, one per seed in it"
    )
    parser.add_argument("--json", type=Path, default=Path("metrics/leaderboard.json"))
    parser.add_argument("--markdown", type=Path, default=Path("metrics/leaderboard.md"))
    parser.add_argument("--figure", type=Path, default=Path("plots/grid_valid_accuracy.png"))
    args = parser.parse_args(argv)

    params = load_params(args.params)
    board = standings(read_grid(params, args.runs))
    with atomic.Outputs() as outputs:  # the three together, or none
        outputs.json(args.json, leaderboard_json(board, list(params.grid.recipes)))
        outputs.text(args.markdown, leaderboard_markdown(board, params.grid_seeds))
        outputs.bytes(args.figure, figures.png_bytes(leaderboard_figure(board, params.grid_seeds)))
        check_unchanged(params)
    print(leaderboard_markdown(board, params.grid_seeds, timings=True), end="")
    failed = [standing.recipe for standing in board if standing.rank is None]
    if failed:
        names = "; ".join(f"{recipe.name} ({recipe.error})" for recipe in failed)
        raise PipelineError(f"{len(failed)} of {len(board)} recipes failed: {names}; see `dvc repro grid/dvc.yaml`")


def standings(recipes: Sequence[RecipeRuns]) -> list[Standing]:
    """Recipes with results by mean best validation accuracy (catalog.yaml's order on equal means),
    each compared with the first; failed recipes last, in catalog.yaml's order."""
    done = [_summarise(recipe) for recipe in recipes if recipe.error is None]
    done.sort(key=lambda standing: -standing.best_valid_accuracy.mean)
    if not done:
        return [Standing(recipe) for recipe in recipes]
    best = _per_seed(done[0].recipe)
    ranked = [
        replace(
            standing,
            rank=rank,
            versus_best=None if rank == 1 else compare_seeds(best, _per_seed(standing.recipe), CONFIDENCE),
        )
        for rank, standing in enumerate(done, start=1)
    ]
    return ranked + [Standing(recipe) for recipe in recipes if recipe.error is not None]


def _summarise(recipe: RecipeRuns) -> Standing:
    runs = recipe.runs
    kept_differs = any(run.kept_valid_accuracy != run.train["best_valid_accuracy"] for run in runs)
    timings = [
        run.timings["seconds_per_epoch"]
        for run in runs
        if isinstance(run.timings.get("seconds_per_epoch"), (int, float))
    ]
    return Standing(
        recipe,
        best_valid_accuracy=summarise_seeds([run.train["best_valid_accuracy"] for run in runs]),
        kept_valid_accuracy=summarise_seeds([run.kept_valid_accuracy for run in runs]) if kept_differs else None,
        test_accuracy=summarise_seeds([run.evaluate["test_accuracy"] for run in runs]),
        test_loss=summarise_seeds([run.evaluate["test_loss"] for run in runs]),
        num_params=runs[0].train["num_params"],
        seconds_per_epoch=statistics.fmean(timings) if timings else None,
    )


def _per_seed(recipe: RecipeRuns) -> dict[int, float]:
    return {run.seed: run.train["best_valid_accuracy"] for run in recipe.runs}


def leaderboard_json(board: Sequence[Standing], order: Sequence[str] = ()) -> dict[str, Any]:
    """One entry per recipe, in ``order`` (catalog.yaml's, so a new ranking changes ``rank`` rather
    than every line): names, status, and each figure's mean and std over the seeds."""
    position = {name: index for index, name in enumerate(order)}
    entries = {}
    for standing in sorted(board, key=lambda standing: position.get(standing.recipe.name, len(position))):
        recipe = standing.recipe
        entry: dict[str, Any] = {"arch": recipe.arch, "optimizer": recipe.optimizer, "schedule": recipe.schedule}
        if standing.rank is None:
            entries[recipe.name] = {**entry, "status": "failed", "error": recipe.error}
            continue
        entry.update(status="ok", seeds=len(recipe.runs), rank=standing.rank, versus_best=standing.verdict)
        for key in ("best_valid_accuracy", "kept_valid_accuracy", "test_accuracy", "test_loss"):
            summary = getattr(standing, key)
            if summary is not None:
                entry[key] = {"mean": summary.mean, "std": summary.std}
        entries[recipe.name] = {**entry, "num_params": standing.num_params}
    return entries


def leaderboard_markdown(board: Sequence[Standing], seeds: Sequence[int], timings: bool = False) -> str:
    """Best first, failed recipes last with their reason instead of figures; the rule under it.
    ``timings``: with seconds per epoch (the terminal's table; the file's has the same bits each run)."""
    kept = any(standing.kept_valid_accuracy is not None for standing in board)
    header = [
        "rank", "recipe", "arch", "optimizer", "schedule", "best valid accuracy",
        *(["kept epoch's valid accuracy"] if kept else []),
        "test accuracy", "test loss", "params", *(["s/epoch"] if timings else []), "vs best",
    ]  # fmt: skip
    rows = []
    for standing in board:
        recipe = standing.recipe
        names = [recipe.name, recipe.arch, recipe.optimizer, recipe.schedule]
        if standing.rank is None:
            blanks = [None] * (len(header) - 7)
            rows.append(["-", *names, f"**FAILED**: {recipe.error}", *blanks, "failed"])
            continue
        figures_ = [standing.best_valid_accuracy.text()]
        if kept:
            figures_.append(standing.kept_valid_accuracy.text() if standing.kept_valid_accuracy else "= best")
        figures_ += [standing.test_accuracy.text(), standing.test_loss.text(), standing.num_params]
        seconds = [standing.seconds_per_epoch] if timings else []
        rows.append([standing.rank, *names, *figures_, *seconds, _versus(standing)])
    return markdown_table(header, rows) + "\n" + rule(board, seeds, timings) + "\n" + pairs_markdown(board)


def pairs_markdown(board: Sequence[Standing]) -> str:
    """Every two recipes of one architecture, by the rule the table uses against the best: the pairs
    whose difference lies beyond the seeds' noise, then how many others are tied."""
    lines = []
    for arch in dict.fromkeys(standing.recipe.arch for standing in board if standing.rank is not None):
        ranked = [standing.recipe for standing in board if standing.rank is not None and standing.recipe.arch == arch]
        optimizers = [recipe.optimizer for recipe in ranked]
        named = optimizers if len(set(optimizers)) == len(ranked) else [recipe.name for recipe in ranked]
        beyond, tied = [], 0
        for (ahead, ahead_name), (behind, behind_name) in itertools.combinations(zip(ranked, named, strict=True), 2):
            comparison = compare_seeds(_per_seed(ahead), _per_seed(behind), CONFIDENCE)
            if comparison.tied is False:
                beyond.append(f"{ahead_name} over {behind_name} by {-comparison.difference:.4f}")
            tied += comparison.tied is True
        if tied:
            beyond.append(
                f"{tied} other pair{'s' * (tied != 1)} tied" if beyond else "tied" if tied == 1 else "all tied"
            )
        if len(ranked) > 1:
            lines.append(f"- `{arch}`: {'; '.join(beyond) or 'no verdict (1 seed)'}.")
    heading = "Pairs within an architecture, by the same rule on best validation accuracy, paired by seed:"
    return "\n".join([heading, "", *lines]) + "\n" if lines else ""


def rule(board: Sequence[Standing], seeds: Sequence[int], timings: bool = False) -> str:
    """What the table's figures are and how ties are called, in words, under the table."""
    fingerprints = sorted({run.log.get("fingerprint") or "unknown" for st in board for run in st.recipe.runs})
    seed_list = ", ".join(map(str, seeds))
    lines = [
        f"Each figure is the mean ± sample standard deviation over seeds {seed_list} (params.yaml: seed; "
        "catalog.yaml: grid.seeds).",
        "Ranked by mean best validation accuracy; test accuracy is shown, never used to choose.",
        f"vs best: a recipe is **tied** with the best when the two-sided {CONFIDENCE:.0%} Student t interval of its "
        "per-seed difference in best validation accuracy (paired by seed) contains 0 (tied within training noise), "
        "and **worse** when the interval lies below 0; one seed gives no verdict (tools/stats.py, `compare_seeds`).",
    ]
    if timings:
        lines.append(
            "s/epoch: training seconds per epoch, mean over seeds, from this workspace's runs "
            "(grid/runs/*/seed-*/log.timings.json); timings vary run to run, so they are in no file DVC or git tracks."
        )
    if fingerprints:
        lines.append(f"Numerics: {', '.join(fingerprints)}.")
    return "\n".join(lines) + "\n"


def _versus(standing: Standing) -> str:
    comparison = standing.versus_best
    if comparison is None:
        return "best"
    verdict = "no verdict (1 seed)" if comparison.interval is None else standing.verdict
    return f"{verdict}: {comparison.text()}"


def leaderboard_figure(board: Sequence[Standing], seeds: Sequence[int]) -> Figure:
    """Validation accuracy per epoch, one line per recipe with results: the mean, at each epoch,
    over the seeds that trained it (early stopping can end some seeds sooner)."""
    curves = {}
    for standing in board:
        runs = standing.recipe.runs
        by_epoch: dict[int, list[float]] = {}
        for run in runs:
            for epoch, accuracy in zip(run.curves["epoch"], run.curves["valid_accuracy"], strict=True):
                by_epoch.setdefault(int(epoch), []).append(accuracy)
        if by_epoch:
            epochs = sorted(by_epoch)
            curves[standing.recipe.name] = {
                "epoch": epochs,
                "valid_accuracy": [statistics.fmean(by_epoch[epoch]) for epoch in epochs],
            }
    span = f"seeds {seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else f"seed {seeds[0]}"
    return curves_figure(curves, ["valid_accuracy"], f"Validation accuracy per epoch, every recipe (mean over {span})")


if __name__ == "__main__":
    run_stage(main)
