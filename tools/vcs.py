"""The git and DVC commands the tools read from, each failing with one line instead of a traceback.

A revision is anything ``git rev-parse`` takes (``HEAD``, ``HEAD~1``, a branch, a short hash, an
experiment's commit); ``WORKSPACE`` reads the files on disk instead.
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
from pathlib import Path
from typing import Any

from stages.core.errors import PipelineError
from stages.core.params import CATALOG
from stages.core.schema import parse_yaml
from tools.report import parse_curves

WORKSPACE = "workspace"
CURVES = "plots/loss.csv"
METRICS = ("metrics/train.json", "metrics/evaluate.json")
PREDICTIONS = "plots/confusion.csv"
PARAMS = "params.yaml"
HASH = re.compile(r"[0-9a-f]{7,40}")


def output(*command: str, cwd: str | Path | None = None) -> str:
    """stdout of ``command``; a non-zero exit becomes a ``PipelineError`` quoting its last line."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, cwd=cwd)
    except FileNotFoundError:
        raise PipelineError(f"{command[0]} not found on PATH; install it or activate the project's venv") from None
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines() or ["no output"]
        raise PipelineError(f"`{' '.join(command)}` exited {result.returncode}: {lines[-1]}")
    return result.stdout


def resolve(rev: str) -> str:
    """The full commit hash of ``rev``; an unknown revision is one line naming it."""
    try:
        return output("git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").strip()
    except PipelineError:
        raise PipelineError(f"no git revision {rev!r}: name a branch, a tag, a commit or HEAD~N") from None


def label(rev: str, commit: str) -> str:
    """How a report names a revision: as the user wrote it (a branch, ``HEAD~1``), but a hash as a
    short hash, never 40 hex digits."""
    return commit[:7] if HASH.fullmatch(rev) else rev


def branch() -> str | None:
    """The checked-out branch, one without commits yet too; None on a detached HEAD (as in CI's
    pull-request checkout)."""
    found = subprocess.run(["git", "symbolic-ref", "--quiet", "--short", "HEAD"], capture_output=True, text=True)
    return found.stdout.strip() or None


def read_at(rev: str, path: str, name: str | None = None) -> str:
    """A file's text as committed at ``rev``, or on disk for ``WORKSPACE``; a missing file is one
    line naming it and where (``name``, by default the revision)."""
    if rev == WORKSPACE:
        try:
            return Path(path).read_text()
        except FileNotFoundError:
            raise PipelineError(f"{path} not found in the workspace: run `dvc repro`") from None
    result = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True)
    if result.returncode != 0:
        raise PipelineError(
            f"{path} not found at {name or label(rev, rev)}: run `dvc repro` there and commit its results"
        )
    return result.stdout


def params_at(rev: str, name: str | None = None) -> dict[str, Any]:
    """params.yaml and catalog.yaml at ``rev`` as one mapping (``params.merge``); before catalog.yaml
    existed, params.yaml held every key."""
    raw: dict[str, Any] = {}
    for path in (PARAMS, CATALOG):
        if path == CATALOG and rev != WORKSPACE and output("git", "ls-tree", "--name-only", rev, CATALOG) == "":
            continue
        raw.update(parse_yaml(read_at(rev, path, name), f"{path} at {name or label(rev, rev)}"))
    return raw


def changed_since(rev: str, *paths: str) -> bool:
    """Whether the workspace's ``paths`` differ from ``rev``'s (committed or not)."""
    result = subprocess.run(["git", "diff", "--quiet", rev, "--", *paths], capture_output=True)
    return result.returncode != 0


def curves_at(rev: str, path: str = CURVES) -> dict[str, list[float]]:
    """The per-epoch curves as committed at ``rev`` (an experiment is a commit), or on disk for
    the workspace."""
    text = read_at(rev, path)
    try:
        return parse_curves(text)
    except (KeyError, ValueError) as error:
        raise PipelineError(f"{path} at {rev} is not a curves file: {error}") from None


def json_at(rev: str, path: str, name: str | None = None) -> Any:
    """A JSON file as ``read_at`` reads it; one that does not parse is one line naming it."""
    try:
        return json.loads(read_at(rev, path, name))
    except ValueError as error:
        raise PipelineError(f"{path} at {name or rev} is not valid JSON ({error})") from None


def metrics_at(rev: str, name: str | None = None) -> dict[str, Any]:
    """The single configuration's metrics files at ``rev``, merged (their keys are distinct)."""
    merged: dict[str, Any] = {}
    for path in METRICS:
        merged.update(json_at(rev, path, name))
    return merged


def predictions_at(rev: str, name: str | None = None) -> list[tuple[int, int]] | None:
    """``plots/confusion.csv`` as ``(actual, predicted)`` pairs; None when there is none."""
    try:
        text = read_at(rev, PREDICTIONS, name)
    except PipelineError:
        return None
    return parse_predictions(text)


def parse_predictions(text: str) -> list[tuple[int, int]]:
    return [(int(row["actual"]), int(row["predicted"])) for row in csv.DictReader(io.StringIO(text))]
