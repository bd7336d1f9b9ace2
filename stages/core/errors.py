"""One error type for problems a user can fix, and the wrapper that turns it into one line."""

from __future__ import annotations

import sys
from collections.abc import Callable


class PipelineError(Exception):
    """A problem with the user's input or environment, reported as one line, never a traceback."""


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's ``main`` so that a ``PipelineError`` ends it with one line and exit code 2, and
    Ctrl-C with one line and 130 (the shell's code for it)."""
    try:
        main()
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("error: interrupted (Ctrl-C); the outputs are all this run's or all the last run's", file=sys.stderr)
        raise SystemExit(130) from None
