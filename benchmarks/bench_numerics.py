"""What portable numerics cost: one in-memory train epoch under each candidate setting of torch's CPU
kernels, against the machine's own (native). Each candidate runs in a process of its own, since the
settings are read when torch loads; the candidates take turns, round after round.

    python -m benchmarks.bench_numerics --data real --raw data/raw
    python -m benchmarks.bench_numerics --data real --raw data/raw --archs lenet5,cnn_small --train-size 10000

A candidate is exactly portable when nothing it computes depends on the CPU: ATen pinned to one
instruction set every promised CPU has, MKL on its COMPATIBLE branch (the only one Intel documents
as equal on Intel and AMD), and convolutions off oneDNN and NNPACK (whose kernels follow the CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

from benchmarks import common
from stages.core import data, numerics
from stages.core.models import model_bytes, sha256
from stages.core.optimizers import build_optimizer
from stages.core.training import epoch_rows, scaled_batches, train_epoch

MKL_PINNED = {key: value for key, value in numerics.PORTABLE_ENV.items() if key != "ATEN_CPU_CAPABILITY"}
CANDIDATES = {  # name: (environment, oneDNN and NNPACK for convolutions, exactly portable)
    "native": ({}, True, False),
    "aten-avx2": ({"ATEN_CPU_CAPABILITY": "avx2"}, True, False),
    "mkl-compatible": (MKL_PINNED, False, False),
    "aten-default+mkl-compatible": ({**MKL_PINNED, "ATEN_CPU_CAPABILITY": "default"}, False, True),
    "portable": (numerics.PORTABLE_ENV, False, True),  # aten-avx2+mkl-compatible: numerics.py's choice
}


def main() -> None:
    parser = common.data_arguments(__doc__)
    parser.add_argument("--archs", default=",".join(common.ARCHITECTURES[:2]), help="comma-separated architectures")
    parser.add_argument("--optimizer", default="sgd", help="a name under optimizers in params.yaml")
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
            environment = CANDIDATES[name][0]
            command = [sys.executable, "-m", "benchmarks.bench_numerics", *sys.argv[1:], "--candidate", name,
                       "--numerics", "native", "--repeats", "1"]  # fmt: skip
            result = json.loads(subprocess.run(command, env={**clean, **environment}, check=True,
                                               capture_output=True, text=True).stdout.splitlines()[-1])  # fmt: skip
            for arch, seconds in result["seconds"].items():
                times[name].setdefault(arch, []).append(seconds)
            digests[name] = result["digests"]
            machine = machine or result["machine"]  # the native child's: the machine as it is
    print(
        f"{machine}; one in-memory train epoch, {args.data} data, {args.train_size:,} images, median of {args.repeats}"
    )
    native = times["native"]
    for name in candidates:
        cells = [f"{arch} {statistics.median(seconds):.3f} s ({common.ratio(seconds, native[arch]):.2f}x native)"
                 for arch, seconds in times[name].items()]  # fmt: skip
        print(f"{name:28} {'; '.join(cells)}; exactly portable: {'yes' if CANDIDATES[name][2] else 'no'}")
    same = [name for name in candidates if digests[name] == digests["native"]]
    print(f"same weights as native on this machine: {', '.join(same)}")


def child(args: argparse.Namespace) -> dict:
    """One epoch of each architecture after a warm-up epoch, in this process's numerics."""
    params, device, train, _ = common.setup(args)
    numerics.convolution_libraries(enabled=CANDIDATES[args.candidate][1])
    rows = (data.as_rows(train.images, device), train.labels.to(device))
    shuffled = (torch.empty_like(rows[0]), torch.empty_like(rows[1]))
    warm_up, timed = common.epoch_orders(len(train), params.seed, 2)
    seconds, digests = {}, {}
    for name in args.archs.split(","):
        torch.manual_seed(params.seed)
        model = common.same_init_models(params.architectures[name], 1, device)[0]
        optimizer = build_optimizer(params.optimizers[args.optimizer], model.parameters())
        for order in (warm_up, timed):
            started = time.perf_counter()
            train_epoch(model, optimizer, scaled_batches(*epoch_rows(rows, order, shuffled), common.BATCH_SIZE))
            seconds[name] = time.perf_counter() - started
        digests[name] = sha256(model_bytes(model, params.architectures[name], {}, ""))
    return {"seconds": seconds, "digests": digests, "machine": common.describe(device, args.threads)}


if __name__ == "__main__":
    main()
