"""Train epochs and validation: the tutorial's per-image loop against the project's in-memory one.

Both run in this process, alternating, on the same data in the same order from the same initial
weights, with the same numerics (params.yaml's, or ``--numerics``); the weights are compared
bitwise after the timings. On CUDA the in-memory step is also timed captured as one CUDA graph.

    python -m benchmarks bench_training --threads 2 --data real --raw data/raw
    python -m benchmarks bench_training --numerics native --threads 2 --data real --raw data/raw
    python -m benchmarks bench_training --archs lenet5,cnn_small --train-size 10000 --data real --raw data/raw
    python -m benchmarks bench_training --device cuda --data real --raw /path/to/mnist
    python -m benchmarks bench_training --peak-memory --data real --raw data/raw
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks import common
from benchmarks.common import BATCH_SIZE
from stages.core import data, graphs
from stages.core.optimizers import OptimizerSpec, build_optimizer
from stages.core.params import Params, load_raw, write_raw
from stages.core.training import epoch_rows, evaluate, scaled_batches, step, train_epoch
from testing import tutorial

TRAIN_TARGETS = {"mlp_128_64_relu": 6.0}  # tutorial/in-memory, at equal threads and numerics (issue #13)
VALIDATION_TARGETS = {"mlp_128_64_relu": 15.0}
PEAK_MEMORY_TARGET_BYTES = 1.5e9
TUTORIAL_EVAL_BATCH_SIZE = 100


def main() -> None:
    parser = common.data_arguments(__doc__)
    parser.add_argument("--archs", default=",".join(common.ARCHITECTURES[:2]), help="comma-separated architectures")
    parser.add_argument("--optimizer", default="sgd", help="a name under optimizers in params.yaml")
    parser.add_argument("--peak-memory", action="store_true", help="only the train stage's peak RSS, in a child")
    parser.add_argument("--epochs", type=int, default=1, help="epochs of the train stage for --peak-memory")
    args = parser.parse_args()
    params, device, train, valid = common.setup(args)
    print(common.describe(device, args.threads, args.numerics))
    if args.peak_memory:
        report_peak_memory(args, train, valid)
        return
    print(f"{args.data} data: {len(train):,} training, {len(valid):,} validation images; {args.repeats} repeats")
    for name in args.archs.split(","):
        model = compare_training(params, name, args.optimizer, train, device, args.repeats)
        compare_validation(name, model, valid, params.evaluate.batch_size, device, args.repeats)


def compare_training(
    params: Params, name: str, optimizer: str, train: data.Subset, device: torch.device, repeats: int
) -> torch.nn.Module:
    """Times one epoch of each loop; returns the trained in-memory model."""
    fast, slow = common.same_init_models(params.architectures[name], 2, device)
    spec = params.optimizers[optimizer]
    fast_optimizer, slow_optimizer = build_optimizer(spec, fast.parameters()), build_optimizer(spec, slow.parameters())
    rows = (data.as_rows(train.images, device), train.labels.to(device))
    shuffled = (torch.empty_like(rows[0]), torch.empty_like(rows[1]))
    dataset = tutorial.PerImageDataset(train.images, train.labels)
    orders = common.epoch_orders(len(train), params.seed, repeats)

    def tutorial_epoch(r: int) -> None:
        torch.manual_seed(r)  # each round starts the global generator alike: the same dropout masks
        tutorial.train_epoch(slow, slow_optimizer, tutorial.loader(dataset, BATCH_SIZE, orders[r]), device)

    def in_memory_epoch(r: int) -> None:
        torch.manual_seed(r)
        train_epoch(fast, fast_optimizer, scaled_batches(*epoch_rows(rows, orders[r], shuffled), BATCH_SIZE))

    variants = {"tutorial": tutorial_epoch, "in-memory": in_memory_epoch}
    if device.type == "cuda":  # the training path's own capture (stages/core/graphs.py), timed beside
        variants["CUDA graph"] = graphed_epoch(params, name, spec, rows, orders, device)
    times = common.alternate(variants, repeats)
    report(f"train epoch {name}", times["tutorial"], times["in-memory"], TRAIN_TARGETS.get(name))
    identical = all(
        torch.equal(a, b) for a, b in zip(fast.state_dict().values(), slow.state_dict().values(), strict=True)
    )
    print(f"  weights after {repeats} epochs bitwise identical: in-memory and tutorial {identical}")
    if "CUDA graph" in times:
        print(f"  in-memory step captured as a CUDA graph: {common.summary(times['CUDA graph'])}; "
              f"{common.ratio(times['in-memory'], times['CUDA graph']):.2f}x faster than in-memory")  # fmt: skip
    return fast


def graphed_epoch(
    params: Params,
    name: str,
    spec: OptimizerSpec,
    rows: tuple[torch.Tensor, torch.Tensor],
    orders: list[torch.Tensor],
    device: torch.device,
) -> Callable[[int], None]:
    """An in-memory epoch whose full batches replay the step as ``fit`` captures it on CUDA."""
    model = common.same_init_models(params.architectures[name], 1, device)[0]
    optimizer = build_optimizer(graphs.optimizer_spec(spec, device, constant_rate=True), model.parameters())
    graphed = graphs.GraphedStep(model, optimizer, step, BATCH_SIZE, rows[0].shape[1])
    shuffled = (torch.empty_like(rows[0]), torch.empty_like(rows[1]))
    return lambda r: train_epoch(
        model, optimizer, scaled_batches(*epoch_rows(rows, orders[r], shuffled), BATCH_SIZE), graphed=graphed
    )


def compare_validation(
    name: str, model: torch.nn.Module, valid: data.Subset, batch_size: int, device: torch.device, repeats: int
) -> None:
    """The tutorial's batches of 100 against the evaluate stage's batch size."""
    features, labels = data.as_features(valid.images, device), valid.labels.to(device)
    batches = tutorial.loader(tutorial.PerImageDataset(valid.images, valid.labels), TUTORIAL_EVAL_BATCH_SIZE)
    results = {}
    times = common.alternate(
        {
            "tutorial": lambda r: results.update(tutorial=tutorial.evaluate(model, batches, device)),
            "in-memory": lambda r: results.update(fast=evaluate(model, features, labels, batch_size)),
        },
        repeats,
    )
    report(f"validation {name}, {len(valid):,} images", times["tutorial"], times["in-memory"],
           VALIDATION_TARGETS.get(name))  # fmt: skip
    loss, accuracy = results["tutorial"]
    print(f"  loss {results['fast'].loss:.6f} vs {loss:.6f}; accuracy {results['fast'].accuracy:.4f} vs {accuracy:.4f}")


def report(what: str, tutorial_seconds: list[float], fast: list[float], target: float | None) -> None:
    speedup = common.ratio(tutorial_seconds, fast)
    verdict = "" if target is None else f" (target >= {target:g}x, {'met' if speedup >= target else 'MISSED'})"
    print(f"{what}: tutorial {common.summary(tutorial_seconds)}, in-memory {common.summary(fast)}; "
          f"{speedup:.1f}x{verdict}")  # fmt: skip


def report_peak_memory(args: argparse.Namespace, train: data.Subset, valid: data.Subset) -> None:
    """Runs ``python -m stages train`` as a child on this split, and reports the child's peak RSS
    beside that of a child that only imports torch (the CUDA wheels' libraries count as resident)."""
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    import_only = peak_child_rss()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        for name, subset in (("train", train), ("valid", valid)):
            (work / "split").mkdir(exist_ok=True)
            (work / "split" / f"{name}.pt").write_bytes(data.subset_bytes(subset))
        raw = load_raw(args.params)
        raw.update(threads=args.threads, device=args.device)
        raw["train"]["epochs"] = args.epochs
        write_raw(raw, work / "params.yaml")
        outputs = ("--model", "--metrics", "--curves", "--curves-figure", "--summary", "--log", "--checkpoint")
        command = [sys.executable, "-m", "stages", "train", "--params", str(work / "params.yaml")]
        command += ["--split", str(work / "split")]
        command += [part for index, option in enumerate(outputs) for part in (option, str(work / f"out{index}"))]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    peak = peak_child_rss()
    verdict = "met" if peak < PEAK_MEMORY_TARGET_BYTES else "MISSED"
    print(f"train stage peak RSS ({raw['arch']}, {args.epochs} epochs): {peak / 1e9:.3f} GB "
          f"(target < {PEAK_MEMORY_TARGET_BYTES / 1e9:g} GB, {verdict}); "
          f"import torch alone: {import_only / 1e9:.3f} GB")  # fmt: skip


def peak_child_rss() -> int:
    """Bytes: the largest peak RSS of any child waited for so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


if __name__ == "__main__":
    main()
