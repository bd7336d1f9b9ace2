"""The git and DVC commands the tools read from, each failing with one line instead of a traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path

from stages.core.errors import PipelineError
from tools.report import parse_curves

WORKSPACE = "workspace"
CURVES = "plots/loss.csv"


def output(*command: str) -> str:
    """stdout of ``command``; a non-zero exit becomes a ``PipelineError`` quoting its last line."""
    try:
        result = subprocess.run(command, capture_output=True, text=True)
    except FileNotFoundError:
        raise PipelineError(f"{command[0]} not found on PATH; install it or activate the project's venv") from None
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines() or ["no output"]
        raise PipelineError(f"`{' '.join(command)}` exited {result.returncode}: {lines[-1]}")
    return result.stdout


def curves_at(rev: str, path: str = CURVES) -> dict[str, list[float]]:
    """The per-epoch curves as committed at ``rev`` (an experiment is a commit), or on disk for
    the workspace."""
    text = Path(path).read_text() if rev == WORKSPACE else output("git", "show", f"{rev}:{path}")
    try:
        return parse_curves(text)
    except (KeyError, ValueError) as error:
        raise PipelineError(f"{path} at {rev} is not a curves file: {error}") from None
