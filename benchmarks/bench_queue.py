"""The full grid (2 architectures x 5 optimizers) through the DVC queue, with 1 worker and with 2.

Each worker count gets its own fresh clone of this repository's HEAD, with the data already
downloaded and split, so neither the download nor DVC's run cache flatters the second figure.
Only ``dvc exp run --run-all -j N`` is timed. Use it on a quiet machine: the grid is 10 runs of
17 epochs by default.

    python -m benchmarks bench_queue --data real --mirror /path/to/mnist-gz --workers 1,2
    python -m benchmarks bench_queue --data synthetic --epochs 1 --train-size 800 --valid-size 200
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from stages.core.params import load_raw, write_raw
from testing.synthetic import shell_env, write_mirror, write_source

ROOT = Path(__file__).resolve().parent.parent
GRID = ("arch=mlp_20_sigmoid,mlp_128_64_relu", "optimizer=sgd,momentum,adagrad,rmsprop,adam")
GRID_SIZE = 10
CELERY_FOLDER = Path(".dvc/tmp/exps/celery")  # DVC's queue workers keep their logs and pids here
POLL_SECONDS = 0.5
GRACE_SECONDS = 60
STOP_SECONDS = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=("synthetic", "real"), default="real")
    parser.add_argument("--mirror", type=Path, help="folder of the four MNIST .gz files (for --data real)")
    parser.add_argument("--epochs", type=int, default=17)
    parser.add_argument("--train-size", type=int, default=50_000)
    parser.add_argument("--valid-size", type=int, default=10_000)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts, one timed grid each")
    args = parser.parse_args()
    if args.data == "real" and args.mirror is None:
        parser.error("--data real needs --mirror")
    seconds = {}
    for workers in (int(count) for count in args.workers.split(",")):
        with tempfile.TemporaryDirectory() as folder:
            repo, env = prepared_clone(Path(folder), args)
            seconds[workers] = grid_seconds(repo, env, workers)
        print(
            f"{GRID_SIZE} experiments x {args.epochs} epochs, {workers} worker(s): {seconds[workers]:.1f} s", flush=True
        )
    first, *others = seconds
    for workers in others:
        print(f"speed-up of {workers} workers over {first}: {seconds[first] / seconds[workers]:.2f}x")


def prepared_clone(folder: Path, args: argparse.Namespace) -> tuple[Path, dict[str, str]]:
    """A clone of HEAD with the grid's epochs and split sizes committed and the split stage run."""
    repo = folder / "repo"
    run(["git", "clone", "-q", str(ROOT), str(repo)], folder, dict(os.environ))
    params = load_raw(repo / "params.yaml")
    mirror = args.mirror
    if args.data == "synthetic":
        mirror = folder / "mirror"
        checksums = write_mirror(mirror, train_count=args.train_size + args.valid_size)
        write_source(repo, checksums)
    params["split"].update(train_size=args.train_size, valid_size=args.valid_size)
    params["train"]["epochs"] = args.epochs
    write_raw(params, repo / "params.yaml")
    env = shell_env(mirror.resolve())
    for command in (
        ["dvc", "repro", "split"],
        ["git", "add", "params.yaml", "data/mnist.yaml", "dvc.lock"],
        ["git", "commit", "-qm", "benchmark grid: params and split"],
    ):
        run(command, repo, env)
    return repo, env


def grid_seconds(repo: Path, env: dict[str, str], workers: int) -> float:
    """Queues the grid, then times running it all, up to the last experiment's results; every
    experiment must succeed.

    Under load a queue worker may miss DVC's shutdown message and idle on after the grid (seen
    here with 2 workers on 2 cores; treeverse/dvc-task#77 tells of the same monitor), holding open
    any pipe it inherited. So the command runs without pipes, the clock stops when the workers
    have logged the last experiment's end, and a worker left behind is stopped and reported."""
    run(["dvc", "exp", "run", "--queue"] + [part for sweep in GRID for part in ("-S", sweep)], repo, env)
    started = time.perf_counter()
    command = ["dvc", "exp", "run", "--run-all", "-j", str(workers)]
    with subprocess.Popen(command, cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as grid:
        while grid.poll() is None and finished_experiments(repo) < GRID_SIZE:
            time.sleep(POLL_SECONDS)
        seconds = time.perf_counter() - started
        try:
            grid.wait(timeout=GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            grid.kill()
            print(f"  {' '.join(command)} still ran {GRACE_SECONDS} s after the last result; killed", flush=True)
    stop_workers(repo, env)
    status = run(["dvc", "queue", "status"], repo, env)
    if status.count("Success") != GRID_SIZE:
        raise SystemExit(f"not all {GRID_SIZE} experiments succeeded:\n{status}")
    return seconds


def finished_experiments(repo: Path) -> int:
    """Experiments that ran to the end, successful or not, as DVC's queue workers log them: celery
    logs one ``Task ...run_exp[ID] succeeded`` (or ``raised``) line per experiment, once its results
    are collected."""
    logs = (repo / CELERY_FOLDER).glob("dvc-exp-worker-*.out")
    return sum(
        1
        for log in logs
        for line in log.read_text(errors="replace").splitlines()
        if ".run_exp[" in line and (" succeeded in " in line or " raised " in line)
    )


def stop_workers(repo: Path, env: dict[str, str]) -> None:
    """``dvc queue stop``, then a kill for any worker still alive ``STOP_SECONDS`` later."""
    run(["dvc", "queue", "stop"], repo, env)
    time.sleep(STOP_SECONDS)
    for pid_file in (repo / CELERY_FOLDER).glob("dvc-exp-worker-*.pid"):
        pid = int(pid_file.read_text())
        try:
            alive = b"queue-worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            alive = False  # it stopped, as it should
        if alive:
            os.kill(pid, signal.SIGKILL)
            print(f"  queue worker {pid_file.stem} missed DVC's shutdown: killed", flush=True)


def run(command: list[str], repo: Path, env: dict[str, str]) -> str:
    """The command's output; all of it, and an exit, if it fails."""
    result = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result.stdout


if __name__ == "__main__":
    main()
