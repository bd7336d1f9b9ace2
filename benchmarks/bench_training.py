"""Train epochs and validation: the tutorial's per-image loop against the project's in-memory one.

Both run in this process, alternating, on the same data in the same order from the same initial
weights; the weights are compared bitwise after the timings. Four more loops are timed beside
them, to show where an epoch goes: the epoch with the split held as floats (what keeping it as
uint8 saves), the project's steps alone (forward, loss, gradients and optimizer on consecutive
slices, each scaled to floats, with no shuffle), the tutorial's autograd step on the same slices
(what taking the gradients by hand saves), and the matrix-multiply floor, the epoch's GEMMs alone
(forward addmm, backward matmuls of each Linear at the training batch size, each batch read from
the split), which no loop can beat.

    python -m benchmarks.bench_training --threads 2 --data real --raw data/raw
    python -m benchmarks.bench_training --device cuda --data real --raw /path/to/mnist
    python -m benchmarks.bench_training --peak-memory --data real --raw data/raw
    python -m benchmarks.bench_training --kernels --threads 2 --data real --raw data/raw
"""

from __future__ import annotations

import argparse
import itertools
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from benchmarks import common
from stages.core import tutorial
from benchmarks.common import BATCH_SIZE
from stages.core import data
from stages.core.models import Architecture
from stages.core.optimizers import build_optimizer
from stages.core.params import Params
from stages.core.training import evaluate, scaled_batches, train_steps

# Speed-up targets from the issue (tutorial/in-memory): per architecture, and for validation.
TRAIN_TARGETS = dict(zip(common.ARCHITECTURES, (6.0, 12.0), strict=True))
VALIDATION_TARGET = 15.0
FLOOR_TARGET = 1.5
PEAK_MEMORY_TARGET_BYTES = 1.5e9
TUTORIAL_EVAL_BATCH_SIZE = 100
MATRIX_PRODUCTS = ("aten::addmm", "aten::mm")  # the ATen ops of the matmul floor


def main() -> None:
    parser = common.data_arguments(__doc__)
    parser.add_argument("--optimizer", default="sgd", help="a name under optimizers in params.yaml")
    parser.add_argument("--peak-memory", action="store_true", help="only the train stage's peak RSS, in a child")
    parser.add_argument("--epochs", type=int, default=1, help="epochs of the train stage for --peak-memory")
    parser.add_argument("--kernels", action="store_true", help="only an in-memory epoch's CPU time by ATen op")
    args = parser.parse_args()
    if args.kernels and args.device != "cpu":
        parser.error(f"--kernels breaks down CPU time; got --device {args.device}, valid: cpu")
    params, device, train, valid = common.setup(args)
    print(common.describe(device, args.threads))
    if args.peak_memory:
        report_peak_memory(args, train, valid)
        return
    if args.kernels:
        for name in TRAIN_TARGETS:
            report_kernels(params, name, args.optimizer, train)
        return
    print(f"{args.data} data: {len(train):,} training, {len(valid):,} validation images; {args.repeats} repeats")
    models = [compare_training(params, name, args.optimizer, train, device, args.repeats) for name in TRAIN_TARGETS]
    compare_validation(models[0], valid, device, args.repeats)


def compare_training(
    params: Params, name: str, optimizer: str, train: data.Subset, device: torch.device, repeats: int
) -> torch.nn.Module:
    """Times one epoch of each loop and the floor; returns the trained in-memory model."""
    architecture = params.architectures[name]
    fast, slow, floats, in_order, autograd = common.same_init_models(architecture, 5, device)
    spec = params.optimizers[optimizer]
    slow_optimizer, floats_optimizer, in_order_optimizer, autograd_optimizer = (
        build_optimizer(spec, model.parameters()) for model in (slow, floats, in_order, autograd)
    )
    rows, labels = data.as_rows(train.images, device), train.labels.to(device)
    features = data.scale(rows)
    fast_epoch = common.in_memory_epoch(fast, build_optimizer(spec, fast.parameters()), rows, labels)
    dataset = tutorial.PerImageDataset(train.images, train.labels)
    orders = common.epoch_orders(len(train), params.seed, repeats)
    floats_epoch = float_rows_epoch(floats, floats_optimizer, features, labels)
    floor = matmul_floor(architecture, features)
    variants = {
        "tutorial": lambda r: tutorial.train_epoch(
            slow, slow_optimizer, tutorial.loader(dataset, BATCH_SIZE, orders[r]), device
        ),
        "in-memory": lambda r: fast_epoch(orders[r]),
        "float rows": lambda r: floats_epoch(orders[r]),
        "steps alone": lambda r: train_steps(in_order, in_order_optimizer, scaled_batches(rows, labels, BATCH_SIZE)),
        "autograd steps": lambda r: tutorial.train_epoch(
            autograd, autograd_optimizer, scaled_batches(rows, labels, BATCH_SIZE), device
        ),
        "matmul floor": lambda r: floor(),
    }
    if device.type == "cuda":  # a launch-bound step: one graph replay per step instead of ~40 launches
        graphed = common.same_init_models(architecture, 1, device)[0]
        variants["CUDA graph"] = graphed_epoch(graphed, build_optimizer(spec, graphed.parameters()), features, labels)
    times = common.alternate(variants, repeats)
    identical = same_weights(fast, slow)
    floats_identical = same_weights(fast, floats)
    by_hand_is_autograd = same_weights(in_order, autograd)
    report(f"train epoch {name}", times["tutorial"], times["in-memory"], TRAIN_TARGETS[name])
    print(f"  matmul floor {common.summary(times['matmul floor'])}; in-memory/floor "
          f"{common.ratio(times['in-memory'], times['matmul floor']):.2f}x (target <= {FLOOR_TARGET}x)")
    print(f"  float rows (the split as floats, gathered whole each epoch) {common.summary(times['float rows'])}: "
          f"float rows/in-memory {common.ratio(times['float rows'], times['in-memory']):.2f}x")
    print(f"  steps alone (no shuffle, no gather) {common.summary(times['steps alone'])}: "
          f"in-memory/steps {common.ratio(times['in-memory'], times['steps alone']):.2f}x, "
          f"steps/floor {common.ratio(times['steps alone'], times['matmul floor']):.2f}x")
    print(f"  the tutorial's autograd step on the same slices {common.summary(times['autograd steps'])}: "
          f"autograd/by-hand {common.ratio(times['autograd steps'], times['steps alone']):.2f}x; "
          f"tutorial/autograd {common.ratio(times['tutorial'], times['autograd steps']):.1f}x is the most "
          "a loop that takes the gradients by autograd can reach")
    print(f"  weights after {repeats} epochs bitwise identical: in-memory and tutorial {identical}, "
          f"in-memory and float rows {floats_identical}, steps by hand and by autograd {by_hand_is_autograd}")
    if "CUDA graph" in times:
        print(f"  in-memory step captured as a CUDA graph: {common.summary(times['CUDA graph'])}; "
              f"{common.ratio(times['in-memory'], times['CUDA graph']):.2f}x faster than in-memory")
    return fast


def same_weights(first: torch.nn.Module, second: torch.nn.Module) -> bool:
    return all(torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters(), strict=True))


def float_rows_epoch(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, features: torch.Tensor, labels: torch.Tensor
) -> Callable[[torch.Tensor], float]:
    """The in-memory epoch as it was before the rows stayed uint8: the split as floats, gathered
    whole each epoch into reused buffers, batches sliced from the copy with nothing to scale."""
    shuffled = (torch.empty_like(features), torch.empty_like(labels))

    def epoch(order: torch.Tensor) -> float:
        x, y = (torch.index_select(t, 0, order, out=out) for t, out in zip((features, labels), shuffled, strict=True))
        starts = range(0, len(y), BATCH_SIZE)
        return train_steps(model, optimizer, ((x[i : i + BATCH_SIZE], y[i : i + BATCH_SIZE]) for i in starts))

    return epoch


def compare_validation(model: torch.nn.Module, valid: data.Subset, device: torch.device, repeats: int) -> None:
    features, labels = data.as_features(valid.images, device), valid.labels.to(device)
    batches = tutorial.loader(tutorial.PerImageDataset(valid.images, valid.labels), TUTORIAL_EVAL_BATCH_SIZE)
    results = {}
    times = common.alternate(
        {
            "tutorial": lambda r: results.update(tutorial=tutorial.evaluate(model, batches, device)),
            "in-memory": lambda r: results.update(fast=evaluate(model, features, labels)),
        },
        repeats,
    )
    report(f"validation of {len(valid):,} images", times["tutorial"], times["in-memory"], VALIDATION_TARGET)
    loss, accuracy = results["tutorial"]
    print(f"  loss {results['fast'].loss:.6f} vs {loss:.6f}; accuracy {results['fast'].accuracy:.4f} vs {accuracy:.4f}")


def report(what: str, tutorial: list[float], fast: list[float], target: float) -> None:
    speedup = common.ratio(tutorial, fast)
    verdict = "met" if speedup >= target else "MISSED"
    print(f"{what}: tutorial {common.summary(tutorial)}, in-memory {common.summary(fast)}; "
          f"{speedup:.1f}x (target >= {target:g}x, {verdict})")


def matmul_floor(architecture: Architecture, features: torch.Tensor) -> Callable[[], None]:
    """An epoch of the step's GEMMs alone, into preallocated outputs: per Linear the forward addmm,
    the weight gradient, and (past the first layer, whose input needs none) the input gradient.
    The first layer reads each batch from ``features`` in turn, as the real epoch must."""
    sizes = architecture.layer_sizes
    device = features.device
    layers = []
    for inputs, outputs in itertools.pairwise(sizes):
        tensor = lambda *shape: torch.rand(*shape, device=device)  # noqa: E731
        layers.append([tensor(BATCH_SIZE, inputs), tensor(outputs, inputs), tensor(outputs),
                       tensor(BATCH_SIZE, outputs), tensor(outputs, inputs), tensor(BATCH_SIZE, inputs)])

    def epoch() -> None:
        for start in range(0, len(features) - BATCH_SIZE + 1, BATCH_SIZE):
            layers[0][0] = features[start : start + BATCH_SIZE]
            for x, weight, bias, y, _, _ in layers:
                torch.addmm(bias, x, weight.t(), out=y)
            for index, (x, weight, _, grad_y, grad_weight, grad_x) in reversed(list(enumerate(layers))):
                torch.mm(grad_y.t(), x, out=grad_weight)
                if index:
                    torch.mm(grad_y, weight, out=grad_x)

    return epoch


def graphed_epoch(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, features: torch.Tensor, labels: torch.Tensor
) -> Callable[[int], None]:
    """An in-memory epoch whose whole step (forward, backward, optimizer) is one captured CUDA graph,
    fed by copying each batch into static inputs: PyTorch's documented whole-network capture. Timed
    only: the warm-up steps before capture change the weights, so it is not a result."""
    static_x, static_y = features[:BATCH_SIZE].clone(), labels[:BATCH_SIZE].clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(static_x), static_y).backward()
            optimizer.step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        torch.nn.functional.cross_entropy(model(static_x), static_y).backward()
        optimizer.step()

    def epoch(repeat: int) -> None:
        order = torch.randperm(len(labels), device=features.device)
        shuffled_x, shuffled_y = features[order], labels[order]
        for start in range(0, len(labels) - BATCH_SIZE + 1, BATCH_SIZE):
            static_x.copy_(shuffled_x[start : start + BATCH_SIZE])
            static_y.copy_(shuffled_y[start : start + BATCH_SIZE])
            graph.replay()

    return epoch


def report_kernels(params: Params, name: str, optimizer: str, train: data.Subset) -> None:
    """Profiles one in-memory epoch and sums each ATen op's own CPU time: the matrix products
    against every other op. Their sum over the products is what the epoch would take over the
    floor with no interpreter time at all, the part of the floor ratio that no Python can remove.
    The profiler adds a little to each op, most to the smallest."""
    model = common.same_init_models(params.architectures[name], 1, torch.device("cpu"))[0]
    optimizer_ = build_optimizer(params.optimizers[optimizer], model.parameters())
    rows = data.as_rows(train.images, torch.device("cpu"))
    epoch = common.in_memory_epoch(model, optimizer_, rows, train.labels)
    warm_up, profiled = common.epoch_orders(len(train), params.seed, 2)
    epoch(warm_up)  # the shuffle buffers' first touch and the BLAS's first calls stay out
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        started = time.perf_counter()
        epoch(profiled)
        seconds = time.perf_counter() - started
    ops = profile.key_averages()
    milliseconds = {op.key: op.self_cpu_time_total / 1e3 for op in ops if op.key.startswith("aten::")}
    products = sum(milliseconds.pop(op, 0.0) for op in MATRIX_PRODUCTS)
    others = sum(milliseconds.values())
    largest = sorted(milliseconds.items(), key=lambda item: -item[1])[:8]
    print(f"{name}, one profiled in-memory epoch ({seconds * 1e3:.1f} ms under the profiler): matrix products "
          f"{products:.1f} ms, other ATen ops {others:.1f} ms; (products + others) / products "
          f"{(products + others) / products:.2f}x (floor target <= {FLOOR_TARGET}x)")
    print("  largest others: " + ", ".join(f"{op.removeprefix('aten::')} {ms:.1f}" for op, ms in largest))


def report_peak_memory(args: argparse.Namespace, train: data.Subset, valid: data.Subset) -> None:
    """Runs ``python -m stages.train`` as a child on this split, and reports the child's peak RSS
    beside that of a child that only imports torch (the CUDA wheels' libraries count as resident)."""
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    import_only = peak_child_rss()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        for name, subset in (("train", train), ("valid", valid)):
            data.save_subset(subset, work / "split" / f"{name}.pt")
        raw = yaml.safe_load(Path(args.params).read_text())
        raw.update(threads=args.threads, device=args.device)
        raw["train"]["epochs"] = args.epochs
        (work / "params.yaml").write_text(yaml.safe_dump(raw))
        outputs = {
            "--model": "model.pt",
            "--metrics": "train.json",
            "--curves": "loss.csv",
            "--curves-figure": "curves.png",
            "--summary": "summary.txt",
            "--log": "log.json",
        }
        command = [sys.executable, "-m", "stages.train", "--params", str(work / "params.yaml")]
        command += ["--split", str(work / "split")]
        command += [part for option, file in outputs.items() for part in (option, str(work / file))]
        subprocess.run(command, check=True)
    peak = peak_child_rss()
    verdict = "met" if peak < PEAK_MEMORY_TARGET_BYTES else "MISSED"
    print(f"train stage peak RSS ({raw['arch']}, {args.epochs} epochs): {peak / 1e9:.3f} GB "
          f"(target < {PEAK_MEMORY_TARGET_BYTES / 1e9:g} GB, {verdict}); "
          f"import torch alone: {import_only / 1e9:.3f} GB")


def peak_child_rss() -> int:
    """Bytes: the largest peak RSS of any child waited for so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


if __name__ == "__main__":
    main()
