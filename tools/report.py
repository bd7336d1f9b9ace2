"""Shared output formats: markdown tables and overlaid training-curve figures with stable bytes."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure

from stages.core import figures

Curves = Mapping[str, Sequence[float]]
"""One column of ``loss.csv`` (epoch, train_loss, valid_loss, valid_accuracy) per key."""

HEADLINE_METRICS = ("test_accuracy", "test_loss", "best_valid_accuracy", "best_epoch", "num_params")
"""From metrics/evaluate.json and metrics/train.json: the columns every comparison shows."""

CURVE_LABELS = {
    "train_loss": "training loss",
    "valid_loss": "validation loss",
    "valid_accuracy": "validation accuracy",
}


def parse_curves(text: str) -> dict[str, list[float]]:
    """``loss.csv`` as columns; the header names them, so a column added later is kept."""
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        raise ValueError("no epochs")
    return {column: [float(row[column]) for row in rows] for column in rows[0]}


def cell(value: Any) -> str:
    """Accuracies and losses to 4 decimals, counts with thousands separators, absent as a dash."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value).replace("|", "\\|")
    return f"{value:,}" if isinstance(value, int) else f"{value:.4f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = [header, ["---"] * len(header), *([cell(value) for value in row] for row in rows)]
    return "".join(f"| {' | '.join(map(str, line))} |\n" for line in lines)


def run_label(name: str, params: Mapping[str, Any]) -> str:
    """A run's name and the entries it chose, e.g. ``main (mlp_128_64_relu, sgd)``; a schedule only if any."""
    chosen = [params.get("arch"), params.get("optimizer"), params.get("schedule")]
    return f"{name} ({', '.join(str(value) for value in chosen if value not in (None, 'none'))})"


def plot_curves(path: str | os.PathLike, curves: Mapping[str, Curves], columns: Sequence[str], title: str) -> None:
    """``curves_figure`` as bytes the way the stages make theirs (``figures.png_bytes``), so the same
    curves give the same bytes."""
    figures.write_png(path, curves_figure(curves, columns, title))


def curves_figure(curves: Mapping[str, Curves], columns: Sequence[str], title: str) -> Figure:
    """One panel per column, one line per run, x = epoch."""
    figure = Figure(figsize=(6 * len(columns), 4.5), layout="constrained")
    axes = figure.subplots(1, len(columns), squeeze=False)[0]
    for axis, column in zip(axes, columns, strict=True):
        label = CURVE_LABELS.get(column, column)
        for name, run in curves.items():
            axis.plot(run["epoch"], run[column], marker=".", label=name)
        axis.set(xlabel="epoch", ylabel=label, title=label if len(columns) > 1 else "")
        axis.grid(alpha=0.3)
    if curves:
        axes[-1].legend(fontsize="small", loc="best")
    figure.suptitle(title)
    return figure
