"""Compare experiments: what each run used, its headline metrics, whether it differs from the first
beyond noise, and the curves overlaid.

Names are experiment names, ``workspace``, or any git revision (``HEAD``, ``HEAD~1``, a branch, a
short hash); by default the baseline, each of its experiments, and the workspace. Each row shows the
architecture, optimizer and schedule it chose and only those entries' values (``optimizer.lr`` is
the lr of the row's own optimizer), plus any other param that differs between rows. Every run after
the first is tested against the first on the same test images (McNemar, from each run's
``plots/confusion.csv``): one model each, so test-set noise only; where the first run's grid holds
both configurations, a difference that seeds alone could make is called within training noise (the
words of ``tools/stats.py``). A failed experiment is listed as failed with its stage's own error
line, never with the baseline's numbers that ``dvc exp show`` prints in its place. Each run's
results must belong together (``tools/consistency.py``). Reads ``dvc exp show --json`` for the list,
and every file from git at the run's commit (or from disk for the workspace), so it works offline.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.core import atomic
from stages.core.errors import PipelineError, run_stage
from tools import consistency, vcs
from tools.report import HEADLINE_METRICS, markdown_table, plot_curves, run_label
from tools.seeded import grid_spread
from tools.stats import compare_pairs

CHOICES = (("arch", "architectures"), ("optimizer", "optimizers"), ("schedule", "schedules"))
"""A top-level choice and the section whose entry it names."""
SINGLE = ("seed", "device", "threads", "numerics", "split", "train", "evaluate")
"""The other params the single configuration uses; the grid and download sections are not its."""


@dataclass(frozen=True)
class Entry:
    """A run ``dvc exp show`` lists: the workspace, a baseline commit, or an experiment."""

    name: str
    rev: str
    state: str = "ok"
    """ok, failed, queued or running."""
    log: str | None = None
    """The queue's log file of an experiment, where DVC kept one."""


@dataclass(frozen=True)
class Run:
    """A row: a run's params (params.yaml as it was), merged metrics and per-image predictions,
    or, for a run with no results, its state and the reason."""

    name: str
    rev: str
    params: Mapping[str, Any]
    metrics: Mapping[str, Any]
    predictions: Sequence[tuple[int, int]] | None = None
    state: str = "ok"
    error: str | None = None


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="experiment names, workspace, or git revisions (default: all)")
    parser.add_argument("--markdown", type=Path, default=Path("comparison.md"))
    parser.add_argument("--figure", type=Path, default=Path("comparison.png"))
    args = parser.parse_args(argv)

    entries = parse_exp_show(json.loads(vcs.output("dvc", "exp", "show", "--json")))
    runs = [load(entry) for entry in select(entries, args.names)]
    table = comparison_markdown(runs)
    atomic.write(args.markdown, table)
    plot_curves(args.figure, curves(runs), ["train_loss", "valid_loss", "valid_accuracy"], title="Experiments")
    print(table, end="")
    print(f"\n{args.figure}: their curves overlaid, on one scale per panel")


def curves(runs: Sequence[Run]) -> dict[str, dict[str, list[float]]]:
    """Each run's curves, labelled with its name and what it chose, for the legend."""
    return {run_label(run.name, run.params): vcs.curves_at(run.rev) for run in runs if run.state == "ok"}


def parse_exp_show(records: Sequence[Mapping[str, Any]]) -> list[Entry]:
    """Each baseline commit, then its experiments, then the workspace, from ``dvc exp show --json``."""
    entries, workspace = [], []
    for record in records:
        if record["rev"] == vcs.WORKSPACE:
            workspace.append(Entry(vcs.WORKSPACE, vcs.WORKSPACE))
            continue
        entries.append(Entry(record.get("name") or record["rev"][:7], record["rev"]))
        for group in record.get("experiments") or ():
            executor = group.get("executor") or {}
            state = {"success": "ok", "failed": "failed", "queued": "queued", "running": "running"}.get(
                executor.get("state"), "ok"
            )
            log = (executor.get("local") or {}).get("log")
            for rev in group.get("revs") or ():
                failed = "failed" if rev.get("error") else state
                entries.append(Entry(rev.get("name") or group.get("name") or rev["rev"][:7], rev["rev"], failed, log))
    return entries + workspace


def select(entries: list[Entry], names: Iterable[str]) -> list[Entry]:
    """By name (an experiment, a baseline branch, ``workspace``), else as a git revision, in the
    order asked; all of them when none is asked for."""
    names = list(names)
    if not names:
        return entries
    chosen = []
    for name in names:
        match = next((entry for entry in entries if entry.name == name), None)
        if match is None:
            try:
                commit = vcs.resolve(name)
            except PipelineError:
                known = ", ".join(entry.name for entry in entries) or "none (run `dvc exp run` first)"
                raise PipelineError(f"no experiment or revision {name!r}; experiments here: {known}") from None
            known = next((entry for entry in entries if entry.rev == commit), None)
            match = Entry(name, commit, known.state if known else "ok", known.log if known else None)
        chosen.append(match)
    return chosen


def load(entry: Entry) -> Run:
    """A run's params, metrics and predictions, once its results are checked to belong together."""
    params = _params_at(entry)
    if entry.state == "failed":
        return Run(entry.name, entry.rev, params, {}, state="failed", error=failure_reason(entry))
    if entry.state != "ok":
        return Run(entry.name, entry.rev, params, {}, state=entry.state)
    consistency.check_revision(entry.rev, entry.name)
    return Run(
        entry.name, entry.rev, params, vcs.metrics_at(entry.rev, entry.name), vcs.predictions_at(entry.rev, entry.name)
    )


def _params_at(entry: Entry) -> dict[str, Any]:
    try:
        return vcs.params_at(entry.rev, entry.name)
    except PipelineError:
        return {}


def failure_reason(entry: Entry) -> str:
    """The failed stage's own words: from the queue's log of the experiment (``dvc queue logs``)."""
    text = ""
    if entry.log and Path(entry.log).is_file():
        text = Path(entry.log).read_text(errors="replace")
    else:
        try:
            text = vcs.output("dvc", "queue", "logs", entry.name)
        except PipelineError:
            pass
    return error_line(text) or "the experiment failed (see `dvc queue logs`)"


EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit|Warning)\b:?.*")


def error_line(log: str) -> str | None:
    """A stage's one ``error: ...`` line (``PipelineError``); else the last line of a traceback
    (the exception); else DVC's own last ``ERROR:`` line; None in a log with none of them."""
    lines = [line.strip() for line in log.splitlines()]
    for pattern in (re.compile(r"^error: .+"), EXCEPTION, re.compile(r"^ERROR: .+")):
        found = [line for line in lines if pattern.match(line)]
        if found:
            return found[-1]
    return None


def resolved_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """What a run used, flat: the chosen names, the chosen entries' values as ``arch.*``,
    ``optimizer.*``, ``schedule.*``, and the single configuration's other params."""
    flat: dict[str, Any] = {}
    for key, section in CHOICES:
        chosen = params.get(key)
        flat[key] = chosen
        entry = (params.get(section) or {}).get(chosen) if isinstance(chosen, str) else None
        flat.update(_flatten(entry or {}, f"{key}."))
    for key in SINGLE:
        if key in params:
            flat.update(_flatten({key: params[key]}))
    return flat


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, list) else value
    return flat


def differing_params(runs: Sequence[Run]) -> list[str]:
    """The chosen names, then every resolved param whose value is not the same in every run."""
    rows = [resolved_params(run.params) for run in runs if run.params]
    keys = sorted({key for row in rows for key in row} - {key for key, _ in CHOICES})
    names = [key for key, _ in CHOICES]
    return names + [key for key in keys if len({json.dumps(row.get(key)) for row in rows}) > 1]


def comparison_markdown(runs: Sequence[Run]) -> str:
    """One row per run; the last column tests each run against the first that has results."""
    params = differing_params(runs)
    reference = next((run for run in runs if run.state == "ok"), None)
    versus = f"vs {reference.name}" if reference else "vs first"
    rows, notes = [], []
    for run in runs:
        values = resolved_params(run.params)
        shown = [None if values.get(key) is None else str(values[key]) for key in params]  # as written
        rev = "-" if run.rev == vcs.WORKSPACE else run.rev[:7]
        if run.state != "ok":
            status = f"**FAILED**: {run.error}" if run.state == "failed" else run.state
            rows.append([run.name, rev, status, *shown, *([None] * len(HEADLINE_METRICS)), None])
            continue
        cell, note = _versus(reference, run)
        if note:
            notes.append(f"- {run.name} vs {reference.name}: {note}")
        rows.append([run.name, rev, "ok", *shown, *(run.metrics.get(key) for key in HEADLINE_METRICS), cell])
    table = markdown_table(("experiment", "rev", "status", *params, *HEADLINE_METRICS, versus), rows)
    if notes:
        table += (
            "\nTest accuracy against the first run, image by image (McNemar, exact; one model each, so training "
            "noise is not covered: `python -m tools.seeded` covers it):\n\n" + "\n".join(notes) + "\n"
        )
    return table


def _versus(reference: Run, run: Run) -> tuple[str, str | None]:
    if run is reference:
        return "reference", None
    if reference.predictions is None or run.predictions is None:
        return "no predictions", None
    result = compare_pairs(reference.predictions, run.predictions)
    if result is None:
        return "other test images", None
    spread = grid_spread(reference.params, run.params, reference.rev, reference.name)
    value = None if spread is None else spread.value
    return f"{result.delta:+.4f}, {result.p_text}: {result.verdict(value)}", result.line(spread=value)


if __name__ == "__main__":
    run_stage(main)
