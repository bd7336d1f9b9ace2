"""One error type for problems a user can fix, the wrapper that turns it into one line, and a
stage's hold on DVC's repository lock while DVC runs it."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

LOCK_ENV = "MNIST_DVC_LOCK"  # set by the stage that holds the lock: processes it starts are inside its run


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
    # The repository the stage runs in, found as DVC finds it: DVC_ROOT names the workspace even in
    # a queued run, whose copy under .dvc/tmp/exps has a lock of its own.
    cwd = os.getcwd()
    root = next((folder for folder in (cwd, *Path(cwd).parents) if os.path.isdir(os.path.join(folder, ".dvc"))), cwd)
    path = os.path.join(root, ".dvc", "tmp", "lock")
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


def _flock(fd: int) -> bool:
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
