"""The grid's time with all its seeds against a one-seed grid: each chosen recipe's cell stage
(``python -m stages cell``) with ``grid.seeds`` 1 and with ``grid.seeds`` N, in turn, on the split
the split stage made. A recipe's seeds run side by side (``--jobs``, default: the cores over
params' ``threads``), so N seeds should cost well under N times one.

    python -m benchmarks bench_grid --split data/split --recipes mlp_20_sigmoid-sgd,mlp_128_64_relu-sgd
    python -m benchmarks bench_grid --split data/split --recipes lenet5 --epochs 2 --jobs 1
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stages.core.params import load_raw, write_raw

TARGET = 3.0  # issue #17: seeds 3 within 3x of one seed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--split", type=Path, default=Path("data/split"), help="folder of the split stage")
    parser.add_argument("--recipes", required=True, help="comma-separated names under grid.recipes")
    parser.add_argument("--seeds", type=int, help="the grid's seeds to compare with one (default: params.yaml's)")
    parser.add_argument("--epochs", type=int, help="instead of each recipe's epochs, to time less")
    parser.add_argument("--jobs", type=int, help="seeds trained at once, as stages.cell takes it")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of each seed count, alternating")
    args = parser.parse_args()
    params = load_raw(args.params)
    seeds = args.seeds or params["grid"]["seeds"]
    times: dict[int, list[float]] = {1: [], seeds: []}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.repeats):
            for count in times:
                times[count].append(grid_seconds(params, count, args, Path(folder) / f"seeds-{count}"))
    one, many = (statistics.median(times[count]) for count in (1, seeds))
    verdict = "met" if many / one <= TARGET else "MISSED"
    print(f"recipes {args.recipes}, epochs {args.epochs or 'as in each recipe'}, threads {params['threads']}, "
          f"jobs {args.jobs or 'auto'}: 1 seed {one:.1f} s; {seeds} seeds {many:.1f} s; "
          f"{many / one:.2f}x (target <= {TARGET:g}x, {verdict})")  # fmt: skip


def grid_seconds(params: dict, seeds: int, args: argparse.Namespace, folder: Path) -> float:
    """Wall time of every chosen recipe's cell stage with ``seeds`` seeds, one after another."""
    params = {**params, "grid": {**params["grid"], "seeds": seeds}}
    if args.epochs:
        params["train"] = {**params["train"], "epochs": args.epochs}
        for recipe in params["grid"]["recipes"].values():
            recipe.get("train", {}).pop("epochs", None)
    folder.mkdir(parents=True, exist_ok=True)
    write_raw(params, folder / "params.yaml")
    started = time.perf_counter()
    for recipe in args.recipes.split(","):
        command = [sys.executable, "-m", "stages", "cell", "--params", str(folder / "params.yaml"), "--recipe", recipe]
        command += ["--split", str(args.split), "--out", str(folder / "runs" / recipe)]
        command += ["--checkpoints", str(folder / "checkpoints")] + (["--jobs", str(args.jobs)] if args.jobs else [])
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
