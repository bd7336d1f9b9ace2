"""The grid through the Dask engine against ``dvc repro grid/dvc.yaml``, side by side, on this machine.

A clone of HEAD with its grid committed (catalog.yaml's recipes and seeds, params.yaml's epochs and
split, unless the options below choose others) and its split in a DVC remote beside it, with a bare
repository as its Git remote; then, each in a copy of it: ``dvc repro grid/dvc.yaml`` (a recipe's
seeds side by side, as many as the cores hold), and ``python -m tools.cluster run --engine dask
--workers N`` (N one-thread workers, each cell's seeds one at a time), until both workspaces hold
the gathered grid and leaderboard.

    python -m benchmarks bench_cluster --data real --mirror /path/to/mnist-gz    # the whole grid
    python -m benchmarks bench_cluster --data synthetic --epochs 1 --train-size 400 --valid-size 100 \\
        --recipes mlp_20_sigmoid-sgd,mlp_128_64_relu-sgd --seeds 2
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_queue import ROOT, prepared_clone, run
from stages.cell import JOBS_ENV
from stages.core.params import load_raw, write_raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=("synthetic", "real"), default="synthetic")
    parser.add_argument("--mirror", type=Path, help="folder of the four MNIST .gz files (for --data real)")
    parser.add_argument("--epochs", type=int, help="default: params.yaml's")
    parser.add_argument("--train-size", type=int, help="default: params.yaml's")
    parser.add_argument("--valid-size", type=int, help="default: params.yaml's")
    parser.add_argument("--recipes", help="comma-separated; default: every recipe of catalog.yaml's grid")
    parser.add_argument("--seeds", type=int, help="default: catalog.yaml's")
    parser.add_argument("--workers", type=int, default=2, help="Dask workers, one thread each")
    args = parser.parse_args()
    if args.data == "real" and args.mirror is None:
        parser.error("--data real needs --mirror")
    committed = load_raw(ROOT / "params.yaml")
    args.epochs = args.epochs or committed["train"]["epochs"]
    args.train_size = args.train_size or committed["split"]["train_size"]
    args.valid_size = args.valid_size or committed["split"]["valid_size"]
    recipes = args.recipes.split(",") if args.recipes else list(committed["grid"]["recipes"])
    seeds = args.seeds or committed["grid"]["seeds"]
    with tempfile.TemporaryDirectory() as folder:
        repo, env = prepared_clone(Path(folder), args)
        params = load_raw(repo / "params.yaml")
        params["grid"] = {"seeds": seeds, "recipes": {name: params["grid"]["recipes"][name] for name in recipes}}
        write_raw(params, repo / "params.yaml")
        origin = Path(folder) / "origin.git"
        for command in (
            ["git", "commit", "-qam", "benchmark grid"],
            ["git", "init", "-q", "--bare", str(origin)],
            ["git", "remote", "set-url", "origin", str(origin)],
            ["git", "push", "-q", "origin", "HEAD:main"],
            ["dvc", "push", "-q"],
        ):
            run(command, repo, env)
        serial = shutil.copytree(repo, Path(folder) / "serial", symlinks=True)
        seconds = {
            "dvc repro grid/dvc.yaml": timed(["dvc", "repro", "grid/dvc.yaml"], serial, env),
            f"tools.cluster, Dask, {args.workers} one-thread workers": timed(
                [sys.executable, "-m", "tools.cluster", "run", "--engine", "dask", "--workers", str(args.workers)],
                repo,
                {**env, JOBS_ENV: "1"},
            ),
        }
    cells = len(recipes)
    (one, one_s), (dask, dask_s) = seconds.items()
    print(f"{cells} cells ({','.join(recipes)}) x {seeds} seeds, {args.epochs} epochs, {args.data} data "
          f"{args.train_size}/{args.valid_size}:")  # fmt: skip
    print(f"  {one}: {one_s:.1f} s\n  {dask}: {dask_s:.1f} s")
    print(f"  ratio {dask_s / one_s:.2f}x; {(dask_s - one_s) / cells:+.1f} s per cell")


def timed(command: list[str], repo: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    run(command, repo, env)
    seconds = time.perf_counter() - started
    status = run(["dvc", "status", "grid/dvc.yaml"], repo, env).strip()
    if status != "Data and pipelines are up to date.":
        raise SystemExit(f"{' '.join(command)} left the grid out of date:\n{status}")
    return seconds


if __name__ == "__main__":
    main()
