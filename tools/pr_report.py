"""The pull-request report: what a change did, answer first, against the base branch.

The same markdown locally and in CI (``.github/workflows/pr.yml`` only posts it). It opens with a
warning when the base's results were computed with other numerics than this change's (another
device, CPU class or torch: then the metrics mix hardware and change), the headline metrics base
-> this change, what the change in test accuracy is worth, what changed in params and code, and the
numerics fingerprint; then the check across seeds, only the metrics that changed, the curves, and
every metric folded away.

Two kinds of noise (``tools/stats.py``): the single configuration is one trained model per side, so
McNemar on its per-image predictions covers test-set noise only, and the report says so, with the
seed spread the grid measured for these configurations where it has one. ``--seeds N`` runs the
seeded check (``tools/seeded.py``: both configurations trained with N seeds, the grid's runs reused)
and leads with its verdict: better, worse, or tied within training noise. The base's results and this change's must
each belong together (``tools/consistency.py``), or there is no report.

``pr_markdown`` builds the text from plain data; ``main`` gathers that data from git and DVC, writes
the report and prints its opening (``terminal_summary``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.core import atomic, runtime
from stages.core.errors import run_stage
from stages.core.params import CATALOG, CATALOG_KEYS
from tools import consistency, vcs
from tools.report import markdown_table, plot_curves, run_label
from tools.seeded import SeededComparison, Spread, grid_spread, seeded_check
from tools.stats import compare_pairs

MARKER = "<!-- mnist-pr-report -->"
"""First line of the comment, so CI finds and updates its own comment instead of adding one."""
HEAD = "this change"
CODE = ("stages", "tools", "dvc.yaml", "grid/dvc.yaml", "requirements.txt")
"""What counts as code for the report's "code changed" line."""
EXTRA_METRICS = ("metrics/per_class_accuracy.json", "metrics/leaderboard.json")
"""Figures that are not DVC metrics (they would crowd every row of `dvc exp show`) but are reported."""
HEADLINE = (
    ("test accuracy", "test_accuracy"),
    ("test loss", "test_loss"),
    ("best validation accuracy", "best_valid_accuracy"),
)


@dataclass(frozen=True)
class Side:
    """One side of the comparison, as plain data: a name for columns (a branch, a short hash, or
    "this change"), its ``logs/train.json``, its metrics files merged, and its per-image
    ``(actual, predicted)`` test predictions (None where there are none)."""

    name: str
    log: Mapping[str, Any]
    metrics: Mapping[str, Any]
    predictions: Sequence[tuple[int, int]] | None = None


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="origin/main", help="branch or revision the change goes into")
    parser.add_argument("--markdown", type=Path, default=Path("pr-report.md"))
    parser.add_argument("--figure", type=Path, default=Path("pr-curves.png"))
    parser.add_argument("--figure-url", help="where readers find the figure (CI: the run's artifacts)")
    parser.add_argument("--seeds", type=int, help="also run the seeded check with this many seeds per side")
    args = parser.parse_args(argv)

    commit = vcs.resolve(args.base)
    name = vcs.label(args.base, commit)
    base_log, _ = consistency.check_revision(commit, name)
    head_log, _ = consistency.check_workspace()
    base = Side(name, base_log, vcs.metrics_at(commit, name), vcs.predictions_at(commit, name))
    head = Side(HEAD, head_log, vcs.metrics_at(vcs.WORKSPACE), vcs.predictions_at(vcs.WORKSPACE))
    base_params, head_params = vcs.params_at(commit, name), vcs.params_at(vcs.WORKSPACE, HEAD)
    plot_curves(
        args.figure,
        {run_label(f"base {name}", base_params): vcs.curves_at(commit),
         run_label(HEAD, head_params): vcs.curves_at(vcs.WORKSPACE)},
        ["train_loss", "valid_loss", "valid_accuracy"],
        title=f"Training curves: {name} vs {HEAD}",
    )  # fmt: skip
    report = pr_markdown(
        base,
        head,
        params_diff=params_diff(base_params, head_params),
        code_changes=parse_numstat(vcs.output("git", "diff", "--numstat", commit, "--", *CODE)),
        metrics_diff={
            **_json_output("dvc", "metrics", "diff", "--all", "--json", commit),
            **_json_output("dvc", "metrics", "diff", "--all", "--json", commit, "--targets", *EXTRA_METRICS),
        },
        figure=args.figure_url or str(args.figure),
        branch=vcs.branch(),
        spread=grid_spread(base_params, head_params, commit, name),
        seeded=None if args.seeds is None else seeded_check(commit, name, args.seeds),
        base_ref=args.base,
    )
    atomic.write(args.markdown, report)
    print(terminal_summary(report, args.markdown, args.figure), end="")


def terminal_summary(report: str, markdown: str | Path, figure: str | Path) -> str:
    """The report's opening (headline, verdict, what changed), and where the rest is: its tables of
    every metric would scroll the answer out of a terminal."""
    opening = report.split("\n### ", 1)[0].removeprefix(MARKER + "\n")
    return f"{opening.rstrip()}\n\nFull report: {markdown} (every metric, across seeds); curves: {figure}\n"


def parse_numstat(text: str) -> list[tuple[str, int | None, int | None]]:
    """``git diff --numstat``: (path, lines added, lines deleted); None for a binary file."""
    changes = []
    for line in text.splitlines():
        added, deleted, path = line.split("\t", 2)
        changes.append((path, None if added == "-" else int(added), None if deleted == "-" else int(deleted)))
    return changes


def _json_output(*command: str) -> dict[str, Any]:
    text = vcs.output(*command).strip()
    return json.loads(text) if text else {}


def pr_markdown(
    base: Side,
    head: Side,
    params_diff: Mapping[str, Mapping[str, Mapping[str, Any]]],
    code_changes: Sequence[tuple[str, int | None, int | None]],
    metrics_diff: Mapping[str, Mapping[str, Mapping[str, Any]]],
    figure: str,
    branch: str | None = None,
    spread: Spread | None = None,
    seeded: SeededComparison | None = None,
    base_ref: str = "main",
) -> str:
    """The report. ``params_diff`` is ``dvc params diff --json``'s, ``metrics_diff`` ``dvc metrics
    diff --all --json``'s (unchanged metrics included: they fill the folded table), ``code_changes``
    ``parse_numstat``'s. ``figure`` is a link: a PR comment cannot hold an image, so CI uploads it.
    ``spread`` is the grid's seed spread for the two configurations, ``seeded`` the seeded check's
    result; ``base_ref`` is the base as the command to rerun names it."""
    title = f"`{branch}` ({HEAD})" if branch else HEAD
    lines = [MARKER, f"## Pipeline report: {title} against `{base.name}`", ""]
    warning = fingerprint_difference(base, head)
    if warning:
        lines += [f"> **Warning: {warning}**", ""]
    lines += [headline_table(base, head)]
    if seeded is not None:
        lines += [f"**Across seeds:** {seeded.headline()}.  "]
    lines += [significance(base, head, spread), ""]
    params = _params_changes(params_diff)
    lines += [
        f"**Params changed:** {'; '.join(params) if params else 'none'}  ",
        f"**Code changed:** {_code_line(code_changes)}  ",
        f"**Numerics:** {numerics_line(base, head)}",
        "",
        "### Across seeds",
        "",
        seeded.markdown() if seeded is not None else _seeded_pointer(spread, base_ref),
        "### Metrics that changed",
        "",
    ]
    rows = _metric_rows(metrics_diff)
    changed = [row for row in rows if row[2] != row[3]]
    same_everything = warning is None and not params and not code_changes
    if changed:
        if same_everything:
            lines += [
                "**These metrics changed although params, code and numerics did not: a result that does not "
                "reproduce.**",
                "",
            ]
        lines.append(markdown_table(("file", "metric", base.name, head.name, "Δ"), changed))
    elif same_everything:
        lines += [f"The diff is empty: same params, code and numerics fingerprint as `{base.name}`, same metrics.", ""]
    else:
        lines += ["No metric changed.", ""]
    lines += [
        "### Curves",
        "",
        f"[Training and validation curves, base and this change overlaid]({figure})",
        "",
        f"<details><summary>All metrics ({len(rows)})</summary>",
        "",
        markdown_table(("file", "metric", base.name, head.name, "Δ"), rows) if rows else "No metrics.\n",
        "</details>",
    ]
    return "\n".join(lines) + "\n"


def headline_table(base: Side, head: Side) -> str:
    rows = []
    for label, key in HEADLINE:
        old, new = base.metrics.get(key), head.metrics.get(key)
        delta = new - old if _number(old) and _number(new) else None
        rows.append([label, old, new, _delta(delta)])
    return markdown_table(("metric", base.name, head.name, "Δ"), rows)


ONE_MODEL_EACH = (
    "**One trained model each:** this compares two trained models on the same test images, so it covers "
    "test-set noise but not training noise (what another seed would change): see *Across seeds* below."
)


def significance(base: Side, head: Side, spread: Spread | None = None) -> str:
    """McNemar on each test image's correctness, base against this change, with its interval, under
    the sentence that says what it does not cover; with the grid's ``spread``, whether the difference
    is within training noise."""
    if base.predictions is None or head.predictions is None:
        missing = base.name if base.predictions is None else head.name
        return f"**Significance:** unknown: no per-image predictions ({vcs.PREDICTIONS}) at {missing}"
    comparison = compare_pairs(base.predictions, head.predictions)
    if comparison is None:
        return f"**Significance:** not comparable: {base.name} and {head.name} were tested on different images"
    return f"{ONE_MODEL_EACH}  \n{comparison.line(spread=None if spread is None else spread.value)}"


def _seeded_pointer(spread: Spread | None, base_ref: str) -> str:
    measured = f"{spread.sentence()} " if spread else "The grid has no runs of these configurations. "
    return (
        f"{measured}Not run: `python -m tools.pr_report --base {base_ref} --seeds 3` (in CI, the label `seeded`) "
        "trains both configurations with the grid's seeds, reusing the grid's runs, and says better, worse or "
        "tied within training noise.\n"
    )


def fingerprint_difference(base: Side, head: Side) -> str | None:
    """One line when the two sides' numerics fingerprints differ, naming the fields that differ
    (device, numerics, torch, ...), else None."""
    old, new = base.log.get("fingerprint"), head.log.get("fingerprint")
    if old == new:
        return None
    before, after = _class_fields(base.log), _class_fields(head.log)
    fields = [f"{key} {before[key]} vs {after[key]}" for key in before if key in after and before[key] != after[key]]
    what = "device" if before.get("device") != after.get("device") else "numerics"
    detail = f": {', '.join(fields)}" if fields else ""
    return (
        f"{what} fingerprint differs: {old} ({base.name}) vs {new} ({head.name}){detail}; "
        "metrics below mix hardware and change"
    )


def numerics_line(base: Side, head: Side) -> str:
    old, new = base.log.get("fingerprint"), head.log.get("fingerprint")
    if old != new:
        return f"{old} ({base.name}), {new} ({head.name})"
    log, threads = head.log, head.log.get("threads")
    return f"{new} on both (torch {log.get('torch')}, {log.get('device')}, {threads} thread{'s' * (threads != 1)})"


def _class_fields(log: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return runtime.class_fields(dict(log))
    except (KeyError, AttributeError):
        return {key: log.get(key) for key in ("device", "numerics", "torch", "threads")}


def params_diff(base: Mapping[str, Any], head: Mapping[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """Every key that differs between two revisions' params.yaml and catalog.yaml, shaped as ``dvc
    params diff --json`` is; not DVC's own, which compares the keys the stages track, so choosing
    another optimizer would list the old entry's keys as removed and the new one's as added."""
    flat = [dict(_flatten(raw)) for raw in (base, head)]
    diff: dict[str, dict[str, dict[str, Any]]] = {}
    for key in dict.fromkeys([*flat[0], *flat[1]]):  # in the files' order
        old, new = flat[0].get(key), flat[1].get(key)
        if old != new:
            path = CATALOG if key.split(".", 1)[0] in CATALOG_KEYS else "params.yaml"
            diff.setdefault(path, {})[key] = {"old": old, "new": new}
    return diff


def _flatten(raw: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in raw.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _params_changes(params_diff: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[str]:
    changes = []
    for path, params in params_diff.items():
        prefix = "" if path == "params.yaml" else f"{path}:"
        for key, change in params.items():
            old, new = change.get("old"), change.get("new")
            if old != new:
                changes.append(f"`{prefix}{key}` {_value(old)} → {_value(new)}")
    return changes


def _value(value: Any) -> str:
    return "(none)" if value is None else json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _code_line(changes: Sequence[tuple[str, int | None, int | None]]) -> str:
    if not changes:
        return "none"
    parts = [
        f"`{path}` " + ("(binary)" if added is None else f"(+{added} −{deleted})") for path, added, deleted in changes
    ]
    return f"{len(changes)} file{'s' if len(changes) != 1 else ''}: " + ", ".join(parts)


def _metric_rows(metrics_diff: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[list[Any]]:
    rows = []
    for path in sorted(metrics_diff):
        for metric in sorted(metrics_diff[path]):
            change = metrics_diff[path][metric]
            old, new = change.get("old"), change.get("new")
            delta = change.get("diff")
            if delta is None and _number(old) and _number(new):
                delta = new - old
            rows.append(
                [path, metric, old, new, _delta(delta) if _number(delta) else ("-" if old == new else "changed")]
            )
    return rows


def _delta(delta: float | int | None) -> str | None:
    """Signed; a change too small for 4 decimals in scientific notation, never shown as 0."""
    if delta is None:
        return None
    if isinstance(delta, int):
        return f"{delta:+,}"
    return f"{delta:+.4f}" if delta == 0 or abs(delta) >= 5e-5 else f"{delta:+.2e}"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


if __name__ == "__main__":
    run_stage(main)
