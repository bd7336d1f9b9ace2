"""One error type for problems a user can fix, the wrapper that turns it into one line (and, under
DVC, one more on how to get back to the committed params), and a stage's hold on DVC's repository
lock while DVC runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

LOCK_ENV = "MNIST_DVC_LOCK"  # set by the stage that holds the lock: processes it starts are inside its run
PARAMS_FILES = ("params.yaml", "catalog.yaml")
DERIVED_FILES = ("recipe.yaml", "dvc.lock")  # what a stage that succeeded before the failure rewrote


class PipelineError(Exception):
    """A problem with the user's input or environment, reported as one line, never a traceback."""


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's ``main`` so that a ``PipelineError`` ends it with one line and exit code 2, and
    Ctrl-C with one line and 130 (the shell's code for it); under DVC, a last line says how to get
    back to the committed params where the run's differ (``restore_hint``)."""
    try:
        main()
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("error: interrupted (Ctrl-C); the outputs are all this run's or all the last run's", file=sys.stderr)
        code = 130
    else:
        return
    if hint := restore_hint():
        print(hint, file=sys.stderr)
    raise SystemExit(code)


def restore_hint() -> str | None:
    """Under ``dvc repro`` or ``dvc exp run`` in the workspace, where params.yaml or catalog.yaml
    differ from the last commit: they keep the failed run's values (``dvc exp run -S`` wrote them
    there), so the next command reads them too; the line says so and how to restore them. None
    elsewhere: a queued or ``--temp`` run changed only its own copy, apart from ``DVC_ROOT``."""
    root = os.environ.get("DVC_ROOT")
    if root is None or os.path.realpath(root) != os.path.realpath(_repository()):
        return None
    try:
        diff = subprocess.run(
            ["git", "diff", "--name-only", "--relative", "HEAD", "--", *PARAMS_FILES, *DERIVED_FILES],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    changed = diff.stdout.split() if diff.returncode == 0 else []
    params = [name for name in PARAMS_FILES if name in changed]
    if not params:
        return None
    return (
        f"{' and '.join(params)} keep{'s' * (len(params) == 1)} this run's values (`dvc exp run -S` writes them "
        f"there); to get back to the last commit's: git checkout -- {' '.join(changed)}"
    )


def hold_dvc_lock() -> None:
    """Under DVC (``DVC_ROOT`` set), take the lock of the DVC repository the stage runs in as DVC
    does (zc.lockfile: ``flock`` on ``.dvc/tmp/lock``, the holder's pid inside), for the rest of this
    process. DVC 3.67 releases it while a stage's command runs, so without this a second ``dvc exp
    run`` or ``dvc repro`` in the workspace would rewrite params.yaml under the stage; with it, that
    one fails at once with DVC's own lock error. The file must still name the DVC process that
    started this stage, an ancestor: any other took the lock since, and may have changed params.yaml,
    so the stage refuses with one line (exit 2) and takes nothing."""
    if "DVC_ROOT" not in os.environ or os.environ.get(LOCK_ENV):
        return
    path = os.path.join(_repository(), ".dvc", "tmp", "lock")
    try:
        # Never closed: the kernel releases the lock once the process is gone; a Python file object
        # would be closed during interpreter teardown, a second or more before DVC sees the exit.
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return  # DVC locks with flufl.lock here (core.hardlink_lock), which removes the file on unlock
    import psutil

    def holder() -> str:
        return os.pread(fd, 100, 0).decode(errors="replace").strip()  # the pid written by the last to take it

    if holder() not in {str(process.pid) for process in psutil.Process().parents()} or not _flock(fd):
        print(
            f"error: another DVC process (pid {holder()}) took this workspace's lock after DVC started this stage, "
            "and may have changed params.yaml: nothing done; run again once it ends, or queue runs (dvc exp run "
            "--queue)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f" {os.getpid()}\n".encode(), 0)
    os.set_inheritable(fd, True)  # kept across exec: a process re-executes itself to pin its numerics
    os.environ[LOCK_ENV] = path


def _repository() -> str:
    """The DVC repository the stage runs in, found as DVC finds it: DVC_ROOT names the workspace even
    in a queued run, whose copy under .dvc/tmp/exps has a lock of its own."""
    cwd = os.getcwd()
    return next((str(folder) for folder in (cwd, *Path(cwd).parents) if (Path(folder) / ".dvc").is_dir()), cwd)


def _flock(fd: int) -> bool:
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
