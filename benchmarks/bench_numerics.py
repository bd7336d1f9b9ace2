"""What portable numerics cost: one epoch of each recipe as the train stage runs it (training, then
validation), under each candidate setting of torch's CPU kernels, against the machine's own
(native). Each candidate runs in a process of its own, since the settings are read when torch
loads; the candidates take turns, round after round.

    python -m benchmarks bench_numerics --data real --raw data/raw
    python -m benchmarks bench_numerics --data real --raw data/raw --recipes lenet5,cnn_small --train-size 5000

A candidate is exactly portable when nothing it computes depends on the CPU: ATen pinned to one
instruction set every promised CPU has, MKL on its COMPATIBLE branch (the only one Intel documents
as equal on Intel and AMD), convolutions off oneDNN and NNPACK (whose kernels follow the CPU) and
a correctly rounded sqrt (MKL VML's approximates it, each CPU maker its own way); the last two are
``numerics.configure_torch``'s for ``portable``. ``portable-but-vml-sqrt`` prices the sqrt alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time

from benchmarks import common
from stages.core import numerics
from stages.core.models import model_bytes, sha256
from stages.core.training import train_recipe

MKL_PINNED = {key: value for key, value in numerics.PORTABLE_ENV.items() if key != "ATEN_CPU_CAPABILITY"}
# name: (environment, oneDNN and NNPACK for convolutions, a correctly rounded sqrt, products on the pinned
# OpenBLAS, exactly portable)
CANDIDATES = {
    "native": ({}, True, False, False, False),
    "aten-avx2": ({"ATEN_CPU_CAPABILITY": "avx2"}, True, False, False, False),
    "mkl-compatible": (MKL_PINNED, False, True, False, False),
    "portable-mkl-gemm": (numerics.PORTABLE_ENV, False, True, False, True),  # products on MKL's COMPATIBLE branch
    "portable-but-vml-sqrt": (numerics.PORTABLE_ENV, False, False, True, False),  # the sqrt's own cost
    "portable": (numerics.PORTABLE_ENV, False, True, True, True),  # numerics.py's choice
}


def main() -> None:
    parser = common.data_arguments(__doc__)
    parser.add_argument("--recipes", default="default,mlp_20_sigmoid-sgd", help="grid recipes, or default: "
                        "params.yaml's own (comma-separated)")  # fmt: skip
    parser.add_argument("--candidates", default=",".join(CANDIDATES), help="comma-separated, native first")
    parser.add_argument("--candidate", choices=CANDIDATES, help=argparse.SUPPRESS)  # one child's run
    args = parser.parse_args()
    candidates = args.candidates.split(",")
    if candidates[0] != "native" or not set(candidates) <= set(CANDIDATES):
        parser.error(f"--candidates {args.candidates}: start with native; choose from {', '.join(CANDIDATES)}")
    if args.candidate:
        print(json.dumps(child(args)))
        return
    clean = {key: value for key, value in os.environ.items() if key not in numerics.PORTABLE_ENV}
    times: dict[str, dict[str, list[float]]] = {name: {} for name in candidates}
    digests: dict[str, dict[str, str]] = {}
    machine = ""
    for _ in range(args.repeats):
        for name in candidates:
            command = [sys.executable, "-m", "benchmarks.bench_numerics", *sys.argv[1:], "--candidate", name,
                       "--numerics", "native", "--repeats", "1"]  # fmt: skip
            result = json.loads(subprocess.run(command, env={**clean, **CANDIDATES[name][0]}, check=True,
                                               capture_output=True, text=True).stdout.splitlines()[-1])  # fmt: skip
            for recipe, seconds in result["seconds"].items():
                times[name].setdefault(recipe, []).append(seconds)
            digests[name] = result["digests"]
            machine = machine or result["machine"]  # the native child's: the machine as it is
    print(f"{machine}; one epoch of each recipe (train and validate), {args.data} data, {args.train_size:,} "
          f"images, median of {args.repeats}")  # fmt: skip
    native = times["native"]
    for name in candidates:
        cells = [f"{recipe} {statistics.median(seconds):.3f} s ({common.ratio(seconds, native[recipe]):.2f}x native)"
                 for recipe, seconds in times[name].items()]  # fmt: skip
        print(f"{name:28} {'; '.join(cells)}; exactly portable: {'yes' if CANDIDATES[name][4] else 'no'}")
    same = [name for name in candidates if digests[name] == digests["native"]]
    print(f"same weights as native on this machine: {', '.join(same)}")


def child(args) -> dict:
    """The second epoch of each recipe (the first warms up), in this process's numerics."""
    params, device, train, valid = common.setup(args)
    numerics.convolution_libraries(enabled=CANDIDATES[args.candidate][1])
    numerics.correctly_rounded_sqrt(enabled=CANDIDATES[args.candidate][2])
    numerics.pinned_products(enabled=CANDIDATES[args.candidate][3], threads=args.threads)
    seconds, digests = {}, {}
    for name in args.recipes.split(","):
        recipe = params.recipe(None if name == "default" else name)
        recipe = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, epochs=2))
        ends: list[float] = []
        model, _ = train_recipe(
            recipe, train, valid, device, on_epoch=lambda _, ends=ends: ends.append(time.perf_counter())
        )
        seconds[name] = ends[1] - ends[0]
        digests[name] = sha256(model_bytes(model, recipe.architecture, {}, ""))
    return {"seconds": seconds, "digests": digests, "machine": common.describe(device, args.threads, args.numerics)}


if __name__ == "__main__":
    main()
