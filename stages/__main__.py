"""``python -m stages <command> [arguments]``: how every stage and command starts. It reads the
numerics mode from params.yaml (or ``--params``) without torch, sets portable's variables while
torch is not yet loaded (they are read when it loads), then runs ``stages.<command>``: one torch
start, one process (docs/reproducibility.md).
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


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        given = f"{sys.argv[1]!r} is no command" if len(sys.argv) > 1 else "no command given"
        raise PipelineError(f"{given}; usage: python -m stages <command> [arguments]; commands: {', '.join(COMMANDS)}")
    command = sys.argv.pop(1)
    sys.argv[0] = f"python -m stages {command}"  # argparse's usage lines
    params = argparse.ArgumentParser(add_help=False)
    params.add_argument("--params", default="params.yaml")
    raw = read_yaml(Path(params.parse_known_args()[0].params)) if command != "download" else {}
    numerics.pin(raw.get("numerics") if isinstance(raw, dict) else None)  # a bad value: the stage's own line
    importlib.import_module(f"stages.{command}").main()


if __name__ == "__main__":
    run_stage(main)
