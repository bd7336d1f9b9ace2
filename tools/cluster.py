"""The grid on a cluster: every out-of-date cell of grid/dvc.yaml sent to Dask or Slurm, then gathered.

    python -m tools.cluster run --engine dask --scheduler tcp://HOST:8786
    python -m tools.cluster run --engine dask --workers 2        # a Dask cluster on this machine
    python -m tools.cluster run --engine slurm --slurm-partition cpu
    python -m tools.cluster run --engine slurm --slurm-local    # the jobs as processes on this machine

One task per cell (a recipe with all its seeds): a worker clones the commit from the Git remote,
runs the cell with ``dvc repro`` (its data from the DVC remote) and sends back the cell's files and
DVC's lock entry for them (tools/cluster_task.py). Here, each cell's files are written, ``dvc
commit`` writes its lock entry, which must equal the worker's, and ``dvc repro grid/dvc.yaml``
runs the leaderboard: the workspace is what ``dvc repro grid/dvc.yaml`` on one machine leaves.
A cell that failed is shown with its log and the others are gathered; a cell whose numerics
fingerprint differs from the others' is refused. Run again to send only the rest.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import yaml

from stages.core.errors import PipelineError, run_stage
from tools import cluster_task, vcs

if TYPE_CHECKING:  # imported only to use an engine
    import distributed
    import submitit

GRID = "grid/dvc.yaml"
# What the grid writes: changed in the workspace by a run, never sent to workers.
OUTPUTS = ("grid/runs/", "grid/dvc.lock", "metrics/leaderboard.", "plots/grid_valid_accuracy.png")
ENGINES = ("dask", "slurm")
POLL_SECONDS = 1.0
CONNECT_SECONDS = 30
SLURM_COMMANDS = ("sbatch", "squeue")  # submitit submits with the one, this command follows the jobs with the other
BAR = 30


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("run",))
    parser.add_argument("--engine", default="dask", help=f"one of {', '.join(ENGINES)}")
    parser.add_argument("--scheduler", help="dask: the scheduler's address, tcp://HOST:PORT (default: a local cluster)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="dask, local cluster: its workers")
    parser.add_argument("--slurm-partition", help="slurm: the partition (default: the site's)")
    parser.add_argument("--slurm-minutes", type=int, default=60, help="slurm: each cell's time limit")
    parser.add_argument("--slurm-local", action="store_true", help="slurm: the jobs as processes here, no Slurm")
    parser.add_argument("--git-remote", default="origin", help="a remote's name or URL the workers clone from")
    parser.add_argument("--dvc-remote", help="the DVC remote's URL the workers push to (default: the default remote)")
    args = checked(parser.parse_args(argv))

    commit = vcs.output("git", "rev-parse", "HEAD").strip()
    changed = [line[3:] for line in vcs.output("git", "status", "--porcelain", "--untracked-files=no").splitlines()]
    changed = [path for path in changed if not path.startswith(OUTPUTS)]
    if changed:
        raise PipelineError(
            f"{', '.join(changed)} changed since {commit[:7]}, which the workers run: commit and push first"
        )
    git_url = git_remote_url(args.git_remote)
    dvc_url = args.dvc_remote or dvc_remote_url()
    cells = pending_cells()
    print(f"{len(cells)} cells of {GRID} to run at {commit[:7]}: {', '.join(cells) or 'none'}", flush=True)
    outcomes = []
    if cells:
        engine = dask_engine(args) if args.engine == "dask" else slurm_engine(args)
        outcomes = engine([(git_url, commit, dvc_url, cell) for cell in cells])
    gather(outcomes)


def checked(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` if every one is valid, checked before anything is contacted; else one line naming the bad one."""
    if args.engine not in ENGINES:
        raise PipelineError(f"--engine {args.engine!r} is not an engine: choose one of {', '.join(ENGINES)}")
    if args.workers < 1:
        raise PipelineError(f"--workers {args.workers} is not a number of workers: give 1 or more")
    if args.scheduler is not None and not is_scheduler_address(args.scheduler):
        raise PipelineError(
            f"--scheduler {args.scheduler!r} is not a Dask scheduler's address: give tcp://HOST:PORT, as "
            "`dask scheduler` prints it, or leave it out for a cluster on this machine"
        )
    if args.slurm_minutes < 1:
        raise PipelineError(f"--slurm-minutes {args.slurm_minutes} is not a time limit: give 1 or more minutes")
    missing = [] if args.engine != "slurm" or args.slurm_local else [c for c in SLURM_COMMANDS if not shutil.which(c)]
    if missing:
        raise PipelineError(
            f"--engine slurm needs Slurm, and no {' or '.join(missing)} is on PATH: run it on a Slurm login node, "
            "or add --slurm-local to run the cells as processes on this machine"
        )
    return args


def is_scheduler_address(address: str) -> bool:
    """Whether ``address`` is ``tcp://HOST:PORT`` (an IPv6 host in brackets)."""
    try:
        parts = urlsplit(address)
        return parts.scheme == "tcp" and bool(parts.hostname) and bool(parts.port) and parts[2:] == ("", "", "")
    except ValueError:  # a port out of range, an unclosed bracket
        return False


def git_remote_url(remote: str) -> str:
    """A remote's URL, as workers can clone it; a URL or path is taken as it is."""
    names = vcs.output("git", "remote").split()
    if remote not in names:
        return remote
    url = vcs.output("git", "remote", "get-url", remote).strip()
    return str(Path(url).resolve()) if Path(url).exists() else url  # a relative path means nothing on a worker


def dvc_remote_url() -> str:
    from dvc.repo import Repo

    with Repo(".") as repo:
        name = repo.config["core"].get("remote")
        if not name:
            raise PipelineError("no default DVC remote: name one with --dvc-remote URL, where the workers can push")
        return repo.config["remote"][name]["url"]  # DVC resolves a relative path against .dvc/


def pending_cells() -> list[str]:
    """The cell stages ``dvc status`` finds out of date, in grid/dvc.yaml's order."""
    import json

    status = json.loads(vcs.output("dvc", "status", "--json", GRID) or "{}")
    return [name.split(":", 1)[1] for name in status if name.startswith(f"{GRID}:cell@")]


Task = tuple[str, str, str, str]
Engine = Callable[[list[Task]], list[dict]]


def dask_engine(args: argparse.Namespace) -> Engine:
    def run(tasks: list[Task]) -> list[dict]:
        from distributed import Client, LocalCluster

        if args.scheduler is not None:
            client = connect(args.scheduler)
        else:
            local = LocalCluster(n_workers=args.workers, threads_per_worker=1, dashboard_address=None)
            client = Client(local)
        with client:
            # pure=False: a new key every time, so a cell sent again runs again.
            run_cell = by_value(cluster_task.run_cell)
            futures = {task[3]: client.submit(run_cell, *task, pure=False) for task in tasks}

            def states() -> dict[str, str]:
                running = {key for keys in client.processing().values() for key in keys}
                return {
                    cell: "done" if future.done() else "running" if future.key in running else "waiting"
                    for cell, future in futures.items()
                }

            follow(states)
            return [outcome(cell, future.result) for cell, future in futures.items()]

    return run


def connect(address: str, seconds: float = CONNECT_SECONDS) -> distributed.Client:
    """A client of the Dask scheduler at ``address``; one that does not answer in time is one line naming it."""
    from distributed import Client

    try:
        return Client(address, timeout=f"{seconds}s")
    except OSError:  # refused, unreachable or silent: distributed retries them all until the timeout
        raise PipelineError(
            f"no Dask scheduler answered at {address} within {seconds:g} s: start one there "
            "(docs/many-hosts.md) or correct --scheduler"
        ) from None


def slurm_engine(args: argparse.Namespace) -> Engine:
    def run(tasks: list[Task]) -> list[dict]:
        import submitit

        executor = submitit.AutoExecutor(folder=".dvc/tmp/cluster/%j", cluster="local" if args.slurm_local else "slurm")
        executor.update_parameters(name="mnist-grid", timeout_min=args.slurm_minutes, cpus_per_task=1)
        if args.slurm_partition:
            executor.update_parameters(slurm_partition=args.slurm_partition)
        array = executor.map_array(by_value(cluster_task.run_cell), *zip(*tasks, strict=True))
        jobs = dict(zip([task[3] for task in tasks], array, strict=True))
        print(f"job array {jobs[tasks[0][3]].job_id.split('_')[0]}: logs under .dvc/tmp/cluster/", flush=True)

        lost: set[str] = set()

        def states() -> dict[str, str]:
            queue = None if args.slurm_local else slurm_queue()
            for cell, job in jobs.items():  # Slurm without accounting (sacct): submitit never sees a killed job end
                if queue is not None and job.job_id not in queue and not job.done():
                    lost.add(cell)
            return {
                cell: "done" if cell in lost or job.done()
                else "running" if (job.state if queue is None else queue.get(job.job_id)) == "RUNNING"
                else "waiting"
                for cell, job in jobs.items()
            }  # fmt: skip

        follow(states)
        return [lost_job(cell, job) if cell in lost else outcome(cell, job.result) for cell, job in jobs.items()]

    return run


def lost_job(cell: str, job: submitit.Job) -> dict:
    """The outcome of a job that left Slurm's queue without a result, with the end of its log."""
    log = (job.stderr() or "")[-cluster_task.LOG_CHARS :]
    reason = "ended without a result (cancelled, out of its time or its node lost)"
    return {"cell": cell, "ok": False, "host": "?", "log": f"Slurm job {job.job_id} {reason}; its log ends:\n{log}"}


def slurm_queue() -> dict[str, str] | None:
    """This user's jobs in Slurm's queue, each one's state by id (an array's task: ``123_4``); None
    where ``squeue`` fails."""
    found = subprocess.run(["squeue", "--me", "--noheader", "--array", "--format", "%i %T"], capture_output=True,
                           text=True)  # fmt: skip
    return dict(line.split() for line in found.stdout.splitlines()) if found.returncode == 0 else None


def by_value(function: Callable) -> Callable:
    """A copy of ``function`` that pickles as its code, never as a name to import (a copy is not the
    module's attribute, so neither pickle nor Dask's cloudpickle can name it): a scheduler and its
    workers need the project's Python environment, not this checkout on their path."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[function.__module__])
    return cloudpickle.loads(cloudpickle.dumps(function))


def outcome(cell: str, result: Callable[[], dict]) -> dict:
    """A task's outcome, or the engine's reason it has none (a worker lost too often, a job killed)."""
    try:
        return result()
    except Exception as error:  # the engine's: the task itself returns its failures
        return {"cell": cell, "ok": False, "host": "?", "log": f"{type(error).__name__}: {error}"}


def follow(states: Callable[[], dict[str, str]]) -> None:
    """A progress bar until every task is done: on a terminal one line redrawn, otherwise a line per change."""
    shown, tty = None, sys.stderr.isatty()
    while True:
        counts = Counter(states().values())
        total = sum(counts.values())
        filled = BAR * counts["done"] // max(total, 1)
        line = (f"[{'#' * filled}{'.' * (BAR - filled)}] {counts['done']}/{total} cells done, "
                f"{counts['running']} running, {counts['waiting']} waiting")  # fmt: skip
        if line != shown:
            print(f"\r{line}" if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)
            shown = line
        if counts["done"] == total:
            print(file=sys.stderr) if tty else None
            return
        time.sleep(POLL_SECONDS)


def gather(outcomes: list[dict]) -> None:
    """The finished cells' runs into the workspace with their lock entries, then the leaderboard
    once no cell is missing. Raises for failed or refused cells, after gathering the others."""
    failed = {item["cell"]: "failed" for item in outcomes if not item["ok"]}
    for item in outcomes:
        if not item["ok"]:
            print(f"--- {item['cell']} failed on {item['host']}; its log:\n{item['log'].rstrip()}", file=sys.stderr)
    done = {item["cell"]: item for item in outcomes if item["ok"]}
    refused = odd_fingerprints({cell: item["fingerprint"] for cell, item in done.items()})
    kept = {cell: item for cell, item in done.items() if cell not in refused}
    for cell, item in kept.items():
        replace_folder(Path("grid/runs") / cell.split("@", 1)[1], item["files"])
    if kept:
        vcs.output("dvc", "commit", "-f", "-q", *(f"{GRID}:{cell}" for cell in kept))
        lock = yaml.safe_load(Path("grid/dvc.lock").read_text())["stages"]
        for cell, item in kept.items():  # DVC hashed here what the worker's DVC hashed there
            if lock[cell] != yaml.safe_load(item["lock"])["stages"][cell]:
                shutil.rmtree(Path("grid/runs") / cell.split("@", 1)[1])  # so `dvc status` shows it again
                refused[cell] = (
                    f"{GRID}:{cell}'s lock entry from {item['host']} differs from this clone's: the worker ran "
                    "other code, params or data than this commit's; its runs are removed"
                )
    for line in refused.values():
        print(f"error: {line}", file=sys.stderr)
    gathered = [
        f"{cell} from {item['host']} ({item['seconds']:.0f} s)" for cell, item in kept.items() if cell not in refused
    ]
    print(f"{len(gathered)} cells gathered: {', '.join(gathered) or 'none'}", flush=True)
    bad = [*failed, *refused]
    if bad:
        raise PipelineError(
            f"{len(bad)} of {len(outcomes)} cells not gathered: {', '.join(bad)}; the {len(outcomes) - len(bad)} "
            "others are; run the same command again to send only those"
        )
    out = vcs.output("dvc", "repro", GRID)
    print(out, end="")
    here = [line for line in out.splitlines() if line.startswith(f"Running stage '{GRID}:cell@")]
    if here:  # a cell out of date that no task ran: changed since this command listed them
        print(f"warning: run here, not on the cluster: {'; '.join(here)}", file=sys.stderr)


def replace_folder(folder: Path, files: dict[str, bytes]) -> None:
    """``folder`` holding exactly ``files``: written beside it, then renamed over it."""
    new, old = folder.with_name(f".{folder.name}.new"), folder.with_name(f".{folder.name}.old")
    shutil.rmtree(new, ignore_errors=True)
    for name, content in files.items():
        (new / name).parent.mkdir(parents=True, exist_ok=True)
        (new / name).write_bytes(content)
    if folder.exists():
        folder.rename(old)
    new.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def odd_fingerprints(fingerprints: dict[str, str]) -> dict[str, str]:
    """The cells whose fingerprint is not the most common one, each with the line that refuses it."""
    if not fingerprints:
        return {}
    common = Counter(fingerprints.values()).most_common(1)[0][0]
    return {
        cell: f"{GRID}:{cell} was computed as {fingerprint} but the other cells as {common}, so their figures do "
        "not compare bit for bit: run it on a worker like the others (docs/many-hosts.md)"
        for cell, fingerprint in fingerprints.items()
        if fingerprint != common
    }


if __name__ == "__main__":
    run_stage(main)
