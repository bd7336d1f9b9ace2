"""The grid's cells and what each one left in ``grid/runs/<arch>-<optimizer>/``.

The cells come from params.yaml's ``architectures`` and ``optimizers`` sections, in that order,
exactly as the ``matrix:`` of grid/dvc.yaml expands them, so nothing lists the grid twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

from stages.core.params import Params
from tools.report import HEADLINE_METRICS, parse_curves

RUN_FILES = ("train.json", "evaluate.json", "train-log.json", "loss.csv")


@dataclass(frozen=True)
class Cell:
    arch: str
    optimizer: str

    @property
    def key(self) -> str:
        """DVC's name for a matrix entry of string values: the values joined by ``-``."""
        return f"{self.arch}-{self.optimizer}"


@dataclass(frozen=True)
class Run:
    """A cell's results, or why there are none (``error``): a failed cell is never a result."""

    cell: Cell
    metrics: dict[str, Any]
    """Figures that the same params reproduce bitwise: what ``dvc metrics diff`` may compare."""
    curves: dict[str, list[float]]
    seconds_per_epoch: float | None = None
    """From the train log: worth showing, but it changes with every run, so it is no metric."""
    error: str | None = None


def cells(params: Params) -> list[Cell]:
    return [Cell(arch, optimizer) for arch, optimizer in product(params.architectures, params.optimizers)]


def read_run(runs: Path, cell: Cell) -> Run:
    """The headline figures of one cell; a missing or unreadable file makes it a failed run (DVC
    deletes a stage's outputs before running it, so a cell that failed has none)."""
    folder = runs / cell.key
    try:
        train, evaluate, log = (json.loads((folder / name).read_text()) for name in RUN_FILES[:3])
        curves = parse_curves((folder / "loss.csv").read_text())
        figures = {**train, **evaluate}
        metrics = {name: figures[name] for name in HEADLINE_METRICS}
        seconds_per_epoch = log["seconds_per_epoch"]
    except (OSError, ValueError, KeyError) as error:
        return Run(cell, {}, {}, error=f"{type(error).__name__}: {error}")
    return Run(cell, metrics, curves, seconds_per_epoch)
