"""The grid's leaderboard: one row per architecture x optimizer, from the files each cell wrote.

Writes the rows as JSON (declared as DVC metrics, so ``dvc metrics diff`` shows every cell; only
figures that reproduce bitwise), a markdown table best first (with each cell's seconds per epoch),
and the validation accuracy of every cell per epoch in one figure.
A cell without results is listed as failed, never with numbers, and makes the command fail.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from stages.core import atomic
from stages.core.errors import PipelineError, run_stage
from stages.core.params import load_params
from tools.grid import Run, cells, read_run
from tools.report import HEADLINE_METRICS, markdown_table, plot_curves

COLUMNS = (*HEADLINE_METRICS, "seconds_per_epoch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--runs", type=Path, default=Path("grid/runs"), help="one folder per cell")
    parser.add_argument("--json", type=Path, default=Path("metrics/leaderboard.json"))
    parser.add_argument("--markdown", type=Path, default=Path("metrics/leaderboard.md"))
    parser.add_argument("--figure", type=Path, default=Path("plots/grid_valid_accuracy.png"))
    args = parser.parse_args()

    runs = [read_run(args.runs, cell) for cell in cells(load_params(args.params))]
    atomic.write_json(args.json, {run.cell.key: leaderboard_entry(run) for run in runs})
    table = leaderboard_markdown(runs)
    atomic.write_text(args.markdown, table)
    plot_curves(
        args.figure,
        {run.cell.key: run.curves for run in runs if run.error is None},
        ["valid_accuracy"],
        title="Validation accuracy per epoch, every architecture x optimizer",
    )
    print(table, end="")
    failed = [run for run in runs if run.error is not None]
    if failed:
        names = "; ".join(f"{run.cell.key} ({run.error})" for run in failed)
        raise PipelineError(f"{len(failed)} of {len(runs)} configurations failed: {names}")


def leaderboard_entry(run: Run) -> dict[str, Any]:
    base = {"arch": run.cell.arch, "optimizer": run.cell.optimizer}
    if run.error is not None:
        return {**base, "status": "failed", "error": run.error}
    return {**base, "status": "ok", **run.metrics}


def leaderboard_markdown(runs: list[Run]) -> str:
    """Best test accuracy first; failed cells last, with the reason instead of figures."""
    done = sorted((run for run in runs if run.error is None), key=lambda run: -run.metrics["test_accuracy"])
    rows = [
        [run.cell.arch, run.cell.optimizer, "ok", *(run.metrics[c] for c in HEADLINE_METRICS), run.seconds_per_epoch]
        for run in done
    ]
    rows += [
        [run.cell.arch, run.cell.optimizer, f"**FAILED**: {run.error}", *([None] * len(COLUMNS))]
        for run in runs
        if run.error is not None
    ]
    return markdown_table(("arch", "optimizer", "status", *COLUMNS), rows)


if __name__ == "__main__":
    run_stage(main)
