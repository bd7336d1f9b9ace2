"""``python -m stages <command> [arguments]``: how every stage and command starts. It reads the
numerics mode from params.yaml (or ``--params``; a benchmark's ``--numerics`` first) without torch,
sets portable's variables while torch is not yet loaded (they are read when it loads), then runs
``stages.<command>``: one torch start, one process (docs/reproducibility.md).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from stages.core import numerics
from stages.core.errors import PipelineError, run_stage
from stages.core.schema import read_yaml

COMMANDS = ("download", "split", "recipe", "train", "evaluate", "cell", "predict", "draw")


def run(package: str, commands: tuple[str, ...]) -> None:
    """``python -m <package> <command> [arguments]``, for ``stages`` and ``benchmarks``."""
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        given = f"{sys.argv[1]!r} is no command" if len(sys.argv) > 1 else "no command given"
        raise PipelineError(
            f"{given}; usage: python -m {package} <command> [arguments]; commands: {', '.join(commands)}"
        )
    command = sys.argv.pop(1)
    sys.argv[0] = f"python -m {package} {command}"  # argparse's usage lines
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--params", type=Path, default=Path("params.yaml"))
    options.add_argument("--numerics")
    known = options.parse_known_args()[0]
    raw = {} if known.numerics or command == "download" else read_yaml(known.params)
    numerics.pin(known.numerics or (raw.get("numerics") if isinstance(raw, dict) else None))  # else the stage's line
    importlib.import_module(f"{package}.{command}").main()


if __name__ == "__main__":
    run_stage(lambda: run("stages", COMMANDS))
