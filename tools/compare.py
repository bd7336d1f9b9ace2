"""Compare experiments: the params that differ, the headline metrics, and the curves overlaid.

Reads ``dvc exp show --json`` and each experiment's committed ``plots/loss.csv``, so it works
offline. Names are experiment names or revisions; by default the baseline and every experiment
of the workspace. A failed experiment is listed as failed, never with the baseline's numbers
that ``dvc exp show`` prints in its place.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.core import atomic
from stages.core.errors import PipelineError, run_stage
from tools import vcs
from tools.report import HEADLINE_METRICS, markdown_table, plot_curves


@dataclass(frozen=True)
class Experiment:
    name: str
    rev: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    error: str | None = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="experiment names or revisions (default: all)")
    parser.add_argument("--markdown", type=Path, default=Path("comparison.md"))
    parser.add_argument("--figure", type=Path, default=Path("comparison.png"))
    args = parser.parse_args()

    experiments = select(parse_exp_show(json.loads(vcs.output("dvc", "exp", "show", "--json"))), args.names)
    table = comparison_markdown(experiments)
    atomic.write_text(args.markdown, table)
    plot_curves(
        args.figure,
        {exp.name: vcs.curves_at(exp.rev) for exp in experiments if exp.error is None},
        ["train_loss", "valid_loss", "valid_accuracy"],
        title="Experiments",
    )
    print(table, end="")


def parse_exp_show(records: Sequence[Mapping[str, Any]]) -> list[Experiment]:
    """Each baseline commit, then its experiments, from ``dvc exp show --json``; the workspace
    row is skipped (it is the baseline plus uncommitted edits)."""
    experiments = []
    for record in records:
        if record["rev"] != vcs.WORKSPACE:
            experiments.append(_experiment(record, record.get("name") or record["rev"][:7]))
        for group in record.get("experiments") or ():
            failed = (group.get("executor") or {}).get("state") == "failed"
            for rev in group.get("revs") or ():
                experiments.append(_experiment(rev, rev.get("name") or group.get("name") or rev["rev"][:7], failed))
    return experiments


def _experiment(record: Mapping[str, Any], name: str, failed: bool = False) -> Experiment:
    error = record.get("error")
    if error or failed:
        message = (error or {}).get("msg") or "the experiment failed (see `dvc queue logs`)"
        return Experiment(name, record["rev"], {}, {}, error=message)
    data = record.get("data") or {}
    return Experiment(
        name,
        record["rev"],
        params=_flatten(_file_data(data.get("params"))),
        metrics=_flatten(_file_data(data.get("metrics"))),
    )


def _file_data(files: Mapping[str, Any] | None) -> dict[str, Any]:
    """Merges the ``data`` of every file: metric and param names are unique across files here."""
    merged: dict[str, Any] = {}
    for result in (files or {}).values():
        merged.update(result.get("data") or {})
    return merged


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def select(experiments: list[Experiment], names: Iterable[str]) -> list[Experiment]:
    """By name or revision prefix, in the order asked; all of them when none is asked for."""
    names = list(names)
    if not names:
        return experiments
    chosen = []
    for name in names:
        matches = [exp for exp in experiments if name == exp.name or (len(name) >= 4 and exp.rev.startswith(name))]
        if not matches:
            valid = ", ".join(exp.name for exp in experiments) or "none (run `dvc exp run` first)"
            raise PipelineError(f"no experiment or revision {name!r}; experiments here: {valid}")
        chosen.append(matches[0])
    return chosen


def differing_params(experiments: Sequence[Experiment]) -> list[str]:
    """Params whose value is not the same in every experiment that has params."""
    rows = [exp.params for exp in experiments if exp.error is None]
    keys = sorted({key for row in rows for key in row})
    return [key for key in keys if len({json.dumps(row.get(key)) for row in rows}) > 1]


def comparison_markdown(experiments: Sequence[Experiment]) -> str:
    params = differing_params(experiments)
    blank = [None] * (len(params) + len(HEADLINE_METRICS))
    rows = [
        [exp.name, exp.rev[:7], "ok", *(exp.params.get(key) for key in params), *map(exp.metrics.get, HEADLINE_METRICS)]
        if exp.error is None
        else [exp.name, exp.rev[:7], f"**FAILED**: {exp.error}", *blank]
        for exp in experiments
    ]
    return markdown_table(("experiment", "rev", "status", *params, *HEADLINE_METRICS), rows)


if __name__ == "__main__":
    run_stage(main)
