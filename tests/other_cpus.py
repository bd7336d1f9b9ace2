"""The portable promise, checked on other CPUs: one short epoch of the real train stage for every
grid recipe and params.yaml's own, on a fixed slice of MNIST, here and under QEMU as Intel AVX2
CPUs without AVX-512 (Haswell, Skylake-Client) and an AMD one (EPYC). Each run's model, curves and metrics must be
the same bytes as this machine's. One recipe also runs in native numerics, to show that the check
sees a difference where one is expected. Too slow for the suite (QEMU is 10-100x slower): .ci/run
runs it as its own step (docs/testing.md).

    python -m tests.other_cpus --raw data/raw     # a slice of real MNIST (synthetic digits without it)

QEMU computes ``rsqrtps`` and ``rcpps`` exactly where a real CPU approximates them, so any kernel
built on them gives other bits under emulation; everything IEEE 754 specifies gives the same.
"""

from __future__ import annotations

import argparse
import copy
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from stages import train
from stages.core import data
from stages.core.errors import PipelineError
from stages.core.params import load_raw, write_raw
from testing.synthetic import synthetic_digits

ROOT = Path(__file__).resolve().parent.parent
CPUS = ("Haswell", "EPYC", "Skylake-Client")  # QEMU's names: Intel AVX2 without AVX-512; AMD AVX2; a later Intel
OUTPUTS = ("model.pt", "loss.csv", "train.json")
NATIVE_RECIPE = "mlp_128_64_relu-adam"
# The activations params.yaml offers that no grid recipe uses, each checked in a recipe of its own.
ACTIVATIONS = {f"mlp_64_{name}": {"family": "mlp", "hidden": [64], "activation": name} for name in ("tanh", "gelu")}
SLICE = {"train_size": 1000, "valid_size": 200}  # 8 batches of 128: one-cycle needs a few


def main() -> None:
    if sys.argv[1:2] == ["train"]:
        return train_all()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", type=Path, default=Path("data/raw"), help="MNIST's IDX files (else synthetic)")
    parser.add_argument("--cpus", default=",".join(CPUS), help="QEMU CPU models, comma-separated")
    parser.add_argument("--recipes", help="grid recipes to check, comma-separated (default: all, and the default)")
    parser.add_argument("--keep", type=Path, help="leave the runs in this folder (default: a temporary one)")
    args = parser.parse_args()
    if shutil.which("qemu-x86_64") is None:
        sys.exit("error: qemu-x86_64 not found; install Debian's qemu-user (apt-get install qemu-user)")

    work = args.keep or Path(tempfile.mkdtemp(prefix="other-cpus-"))
    split = write_slice(args.raw, work / "split")
    params = with_activations(load_raw(ROOT / "params.yaml"))
    names = args.recipes.split(",") if args.recipes else ["default", *params["grid"]["recipes"]]
    portable = [write_params(params, name, "portable", work / "params") for name in names]
    native = [write_params(params, NATIVE_RECIPE, "native", work / "params")]
    machines = ["host", *args.cpus.split(",")]
    with ThreadPoolExecutor(2) as pool:  # two single-thread processes: one per core
        jobs = [
            pool.submit(run_machine, machine, files, split, work / mode / machine)
            for mode, files in (("portable", portable), ("native", native))
            for machine in machines
        ]
        for job in jobs:
            job.result()

    failures = compare(work / "portable", machines, names)
    native_differs = compare(work / "native", machines, [native[0].stem], quiet=True)
    print(f"native numerics ({NATIVE_RECIPE}): the emulated CPUs "
          f"{'differ from this one, as expected' if native_differs else 'agree with this one'}")  # fmt: skip
    if failures:
        sys.exit(f"error: not portable: {failures[0]} differs (runs kept in {work})")
    print(f"portable: {len(names)} recipes x {len(OUTPUTS)} files, the same bytes on {', '.join(machines)}")
    if args.keep is None:
        shutil.rmtree(work)


def write_slice(raw: Path, folder: Path) -> Path:
    """The train and valid subsets of the check: a seeded slice of MNIST's training images when
    ``raw`` holds them, else of synthetic digits."""
    try:
        full = data.read_mnist(raw, "train")
        print(f"data: a slice of {raw}")
    except (OSError, PipelineError):
        images, labels = synthetic_digits(2 * sum(SLICE.values()), seed=1)
        full = data.Subset(images, labels.long(), torch.arange(len(labels)))
        print("data: synthetic digits (no MNIST files at --raw)")
    subsets = data.split_train_valid(full, SLICE["train_size"], SLICE["valid_size"], seed=42)
    folder.mkdir(parents=True, exist_ok=True)
    for name, subset in zip(("train", "valid"), subsets, strict=True):
        (folder / f"{name}.pt").write_bytes(data.subset_bytes(subset))
    return folder


def with_activations(params: dict) -> dict:
    """params.yaml, its grid extended by a recipe for each activation in ``ACTIVATIONS``."""
    params["architectures"].update(ACTIVATIONS)
    for arch in ACTIVATIONS:
        params["grid"]["recipes"][arch] = {"arch": arch, "optimizer": "rmsprop", "schedule": "none"}
    return params


def write_params(params: dict, name: str, mode: str, folder: Path) -> Path:
    """params.yaml with grid recipe ``name`` (or its own, ``default``) as the single configuration,
    trained for one epoch."""
    params = copy.deepcopy(params)
    if name != "default":
        recipe = params["grid"]["recipes"][name]
        params.update(arch=recipe["arch"], optimizer=recipe["optimizer"], schedule=recipe["schedule"])
        params["train"].update(recipe.get("train", {}))
    params["train"]["epochs"] = 1
    params["numerics"] = mode
    params["split"].update(SLICE)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name if mode == "portable" else f"{name}-{mode}")
    path = path.with_suffix(".yaml")
    write_raw(params, path)  # and the catalog.yaml beside it, the same for every recipe
    return path


def run_machine(machine: str, params_files: list[Path], split: Path, out: Path) -> None:
    """One process per machine trains every recipe (importing torch under QEMU takes a while)."""
    emulator = [] if machine == "host" else ["qemu-x86_64", "-cpu", machine]
    mode = "native" if "native" in params_files[0].stem else "portable"
    command = [*emulator, sys.executable, "-m", "tests.other_cpus", "train", "--split", str(split), "--out", str(out),
               *map(str, params_files)]  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "stdout.log", "w") as log:
        result = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        sys.exit(f"error: the runs on {machine} failed (exit {result.returncode}); see {out / 'stdout.log'}")
    print(f"{machine}: {len(params_files)} {mode} runs done")


def compare(folder: Path, machines: list[str], names: list[str], quiet: bool = False) -> list[str]:
    """The files that differ from the host's, first to last; prints a line per recipe."""
    differing = []
    for name in names:
        host = folder / "host" / name
        for machine in machines[1:]:
            for output in OUTPUTS:
                if (host / output).read_bytes() != (folder / machine / name / output).read_bytes():
                    differing.append(f"{machine}/{name}/{output}")
        if not quiet:
            same = not any(item.split("/")[1] == name for item in differing)
            print(f"{name:28s} {'same bytes' if same else 'DIFFERENT'} on {', '.join(machines)}")
    return differing


def train_all() -> None:
    """``train --split DIR --out DIR PARAMS...``: the train stage's own ``main`` for each params file
    in turn, its outputs in ``<out>/<params file's stem>/``. The variables are tests/__init__.py's, set
    in this process: nothing ``exec``s, which under qemu-user would leave the emulator."""
    parser = argparse.ArgumentParser()
    parser.add_argument("command")
    parser.add_argument("--split", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("params", nargs="+")
    args = parser.parse_args()
    for path in args.params:
        run = args.out / Path(path).stem
        sys.argv = ["stages.train", "--params", path, "--split", args.split, "--model", f"{run}/model.pt",
                    "--metrics", f"{run}/train.json", "--curves", f"{run}/loss.csv",
                    "--curves-figure", f"{run}/curves.png", "--summary", f"{run}/summary.txt",
                    "--log", f"{run}/log.json", "--checkpoint", f"{run}/checkpoint.pt"]  # fmt: skip
        train.main()


if __name__ == "__main__":
    main()
