"""The Slurm path checked against a real Slurm: ``python -m tools.cluster run --engine slurm`` on
the test suite's project (two cells of a synthetic grid, tests/test_cluster.py), its gathered runs,
lock entries and leaderboard compared with a serial ``dvc repro grid/dvc.yaml`` of the same cells,
and ``dvc status grid/dvc.yaml`` clean; one cell's job is cancelled on the first run, to be
reported and sent again by the second. Needs a running Slurm whose nodes see this machine's
temporary folder and Python (one node: docs/many-hosts.md#tests-and-the-real-slurm-check);
without one it says so and exits 0. Not collected by pytest; .ci/run runs it as its own step.

    python -m tests.slurm_check
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from testing.synthetic import write_mirror
from tests.conftest import new_project, reproduce
from tests.test_cluster import grid_results, ready_to_send, workers_env


def idle_partition() -> str | None:
    """A partition with an idle node, or None where there is no Slurm or no idle node."""
    if shutil.which("sinfo") is None:
        return None
    found = subprocess.run(["sinfo", "-h", "-t", "idle", "-o", "%P"], capture_output=True, text=True)
    names = found.stdout.split() if found.returncode == 0 else []
    return names[0].rstrip("*") if names else None


def main() -> None:
    partition = idle_partition()
    if partition is None:
        print("slurm check skipped: no Slurm here (`sinfo` absent, or no node idle)")
        return
    work = Path(tempfile.mkdtemp(prefix="slurm-check-"))
    project = new_project(work / "repo", work / "mirror", write_mirror(work / "mirror"))
    reproduce(project)
    one_machine = ready_to_send(project, work)
    project.env = workers_env(project)  # the jobs inherit it: their data can only come from the DVC remote
    started = time.monotonic()
    command = [sys.executable, "-m", "tools.cluster", "run", "--engine", "slurm", "--slurm-partition", partition]
    first = subprocess.Popen(command, cwd=project.root, env=project.env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    lines = [first.stdout.readline(), first.stdout.readline()]  # the cells, then "job array N: ..."
    array = lines[1].split()[2].rstrip(":") if lines[1].startswith("job array ") else "?"
    subprocess.run(["scancel", f"{array}_1"], check=True)  # the second cell's job, killed before its result
    out, err = first.communicate()
    print("".join(lines) + out + err, end="")
    second = project.tool("cluster", "run", *command[4:], check=False)
    print(second.stdout + second.stderr, end="")
    status = project.run("dvc", "status", "grid/dvc.yaml").stdout.strip()
    gathered = grid_results(project.root)
    differing = sorted(name for name in one_machine | gathered if one_machine.get(name) != gathered.get(name))
    expected = [first.returncode == 2, f"Slurm job {array}_1 ended without a result" in err,
                second.returncode == 0, second.stdout.startswith("1 cells"), not differing,
                status == "Data and pipelines are up to date."]  # fmt: skip
    if not all(expected):
        sys.exit(f"error: slurm check failed: exits {first.returncode} (2 expected) and {second.returncode}, "
                 f"differing {differing or 'none'}, dvc status {status!r} (kept in {work})")  # fmt: skip
    print(f"slurm check passed in {time.monotonic() - started:.0f} s on partition {partition}: the cancelled job "
          "reported, the other kept, the rerun sent only it; the runs, lock entries and leaderboard the serial "
          "run's bits, timings aside; `dvc status grid/dvc.yaml` clean")  # fmt: skip
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
