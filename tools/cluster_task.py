"""One grid cell, as a cluster worker runs it (``tools/cluster.py`` sends it).

In a fresh clone of the commit, ``dvc repro --pull --single-item`` of the cell (its data from the
DVC remote); what comes back is the cell's files and the lock entry DVC wrote for them, as the
task's result, through the engine. Nothing is written anywhere else and the clone is removed, so
a task that dies half-way leaves nothing behind. (DVC's run cache would be the other way back,
but DVC 3.67 saves no run of a stage whose outputs are ``cache: false``, as the cells' are.)
Standard library only: the engines ship this function to the workers by value, so a worker needs
the project's Python environment, git and the DVC remote, not this checkout.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

LOG_CHARS = 4000  # of a failed cell's log, the end: where the error is
# What a Dask nanny sets for its worker (distributed.nanny.pre-spawn-environ), none of it the cell's:
# glibc told a trim threshold maps and unmaps every large tensor, which makes the convolutional
# cells' epochs far slower (docs/performance.md); the stages set their threads from params.
NANNY_ENVIRON = ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def run_cell(git_url: str, commit: str, dvc_remote: str, cell: str) -> dict:
    """Runs grid/dvc.yaml's stage ``cell`` (``cell@<recipe>``) at ``commit``; returns its outcome:
    ``ok``, ``host``, ``seconds``, and either the ``log`` or the numerics ``fingerprint`` of its
    runs, its ``files`` (path under its runs folder: bytes) and the ``lock`` file DVC wrote."""
    started = time.monotonic()
    env = cell_environment(os.environ)
    outcome = {"cell": cell, "host": socket.gethostname()}
    log: list[str] = []
    with tempfile.TemporaryDirectory(prefix="mnist-cell-") as folder:
        repo = Path(folder, "repo")
        steps = [
            ("git", "clone", "-q", "--no-checkout", git_url, str(repo)),
            ("git", "checkout", "-q", "--detach", commit),
            ("dvc", "remote", "add", "--local", "--default", "cluster", dvc_remote),
            ("dvc", "repro", "--pull", "--single-item", f"grid/dvc.yaml:{cell}"),
        ]
        for step in steps:
            done = subprocess.run(step, cwd=repo if repo.exists() else folder, env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
            log.append(f"$ {' '.join(step)}\n{done.stdout}")
            if done.returncode != 0:
                return {**outcome, "ok": False, "seconds": time.monotonic() - started, "log": "".join(log)[-LOG_CHARS:]}
        runs = repo / "grid/runs" / cell.split("@", 1)[1]
        files = {path.relative_to(runs).as_posix(): path.read_bytes() for path in runs.rglob("*") if path.is_file()}
        logs = [json.loads(text) for name, text in files.items() if name.endswith("/log.json")]
        fingerprints = sorted({log.get("fingerprint") or "unknown" for log in logs})
        lock = (repo / "grid/dvc.lock").read_text()
    return {**outcome, "ok": True, "seconds": time.monotonic() - started, "fingerprint": ",".join(fingerprints),
            "files": files, "lock": lock}  # fmt: skip


def cell_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The worker's environment as a cell runs in it: as under ``dvc repro`` on one machine."""
    tools = os.path.dirname(sys.executable)  # this environment's dvc, and its python for the stage's command
    kept = {key: value for key, value in environ.items() if key not in NANNY_ENVIRON}
    return {**kept, "PATH": tools + os.pathsep + environ.get("PATH", ""), "DVC_NO_ANALYTICS": "1"}
