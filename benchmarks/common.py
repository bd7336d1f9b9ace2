"""What the benchmarks share: their data arguments, loading the split, and alternating timings."""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from stages.core import data, mirrors, numerics, runtime
from stages.core.models import Architecture, build_model
from stages.core.params import Params, load_params
from testing.synthetic import synthetic_digits

ARCHITECTURES = ("mlp_128_64_relu", "mlp_20_sigmoid", "lenet5", "cnn_small")
BATCH_SIZE = 100  # the tutorial's


def data_arguments(description: str | None) -> argparse.ArgumentParser:
    """The arguments every benchmark takes: which data, how much, on what, how many times."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=("synthetic", "real"), default="real")
    parser.add_argument(
        "--raw", type=Path, default=Path("data/raw"), help="the four IDX files, or a mirror folder of their .gz files"
    )
    parser.add_argument("--params", default="params.yaml", help="architectures, optimizers and seed from here")
    parser.add_argument("--numerics", choices=numerics.MODES, help="instead of params.yaml's")
    parser.add_argument("--train-size", type=int, default=50_000)
    parser.add_argument("--valid-size", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each variant, alternating")
    return parser


def setup(args: argparse.Namespace) -> tuple[Params, torch.device, data.Subset, data.Subset]:
    """Configures torch as a stage does, and returns the params and the train/validation split."""
    params = load_params(args.params)
    args.numerics = args.numerics or params.numerics  # the mode in effect, for ``describe``
    device = runtime.configure(args.threads, args.device, args.numerics)
    if args.data == "synthetic":
        full = synthetic_full(args.train_size + args.valid_size, params.seed)
    else:
        full = real_full(args.raw)
    train, valid = data.split_train_valid(full, args.train_size, args.valid_size, params.split.seed)
    return params, device, train, valid


def synthetic_full(count: int, seed: int) -> data.Subset:
    images, labels = synthetic_digits(count, seed)
    return data.Subset(images, labels.long(), torch.arange(count))


def real_full(raw: Path) -> data.Subset:
    """MNIST's training set from decompressed IDX files, or from ``.gz`` files fetched and verified
    as the download stage would, so both layouts of a data folder work."""
    if (raw / "train-images-idx3-ubyte").exists():
        return data.read_mnist(raw, "train")
    with tempfile.TemporaryDirectory() as folder:
        source = mirrors.load_source(Path(__file__).resolve().parent.parent / "data/mnist.yaml")
        mirrors.download_all(source.files, [raw.resolve().as_uri() + "/"], Path(folder))
        return data.read_mnist(Path(folder), "train")


def describe(device: torch.device, threads: object, mode: str) -> str:
    """The machine line printed above every table: figures mean little without it."""
    info = runtime.environment(device, mode)
    return (
        f"{info['device_name']} ({info['device']}), threads {threads}, torch {info['torch']}, "
        f"ATen {info['cpu_capability']}, MKL branch {info['mkl_branch']} ({info['fingerprint']})"
    )


def alternate(runs: Mapping[str, Callable[[int], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds of each run, called in turn (A B A B ...) so drifts in machine load hit all alike.
    A run gets its round number, e.g. to pick that round's shuffle."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_number in range(repeats):
        for name, run in runs.items():
            synchronize()
            started = time.perf_counter()
            run(round_number)
            synchronize()
            times[name].append(time.perf_counter() - started)
    return times


def synchronize() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def summary(seconds: list[float]) -> str:
    return f"{statistics.median(seconds):.4f} s ({min(seconds):.4f}-{max(seconds):.4f})"


def ratio(slow: list[float], fast: list[float]) -> float:
    return statistics.median(slow) / statistics.median(fast)


def same_init_models(architecture: Architecture, count: int, device: torch.device) -> list[torch.nn.Module]:
    """``count`` models with one initialisation, so the loops under comparison start level; seeded,
    so one invocation's losses compare with another's."""
    torch.manual_seed(0)
    first = build_model(architecture).to(device)
    return [first, *(copy.deepcopy(first) for _ in range(count - 1))]


def epoch_orders(count: int, seed: int, repeats: int) -> list[torch.Tensor]:
    """One seeded permutation per timed round, shared by every loop in that round."""
    shuffle = torch.Generator().manual_seed(seed)
    return [torch.randperm(count, generator=shuffle) for _ in range(repeats)]
