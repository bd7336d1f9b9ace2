"""A train epoch of the in-memory loop at several thread counts, alternating in one process.

``threads`` in params.yaml is part of a result (MKL splits a GEMM differently for 1 and 2 threads),
so it is fixed, not taken from the machine; this measures what a second thread buys one run. Whether
two single-threaded runs side by side beat that is for benchmarks/bench_queue.py.

    python -m benchmarks bench_threads --data real --raw data/raw --counts 1,2
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from benchmarks import common
from stages.core import data
from stages.core.optimizers import build_optimizer
from stages.core.training import epoch_rows, scaled_batches, train_epoch


def main() -> None:
    parser = common.data_arguments(__doc__)
    parser.add_argument("--counts", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--optimizer", default="sgd", help="a name under optimizers in params.yaml")
    args = parser.parse_args()
    counts = [int(count) for count in args.counts.split(",")]
    params, device, train, _ = common.setup(args)
    print(common.describe(device, args.counts, args.numerics))
    rows, labels = data.as_rows(train.images, device), train.labels.to(device)
    orders = common.epoch_orders(len(train), params.seed, args.repeats)
    for name in common.ARCHITECTURES[:2]:  # the MLPs; bench_training --archs times the CNNs
        models = common.same_init_models(params.architectures[name], len(counts), device)
        runs = {}
        for count, model in zip(counts, models, strict=True):
            optimizer = build_optimizer(params.optimizers[args.optimizer], model.parameters())
            runs[f"{count} threads"] = at_threads(count, in_memory_epoch(model, optimizer, (rows, labels)), orders)
        times = common.alternate(runs, args.repeats)
        first = times[f"{counts[0]} threads"]
        print(
            f"train epoch {name}: "
            + "; ".join(
                f"{run} {common.summary(seconds)} ({common.ratio(first, seconds):.2f}x)"
                for run, seconds in times.items()
            )
        )


def in_memory_epoch(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, train: tuple[torch.Tensor, torch.Tensor]
) -> Callable[[torch.Tensor], float]:
    """One epoch in ``order`` as ``fit`` trains it, the shuffle buffers allocated once."""
    shuffled = (torch.empty_like(train[0]), torch.empty_like(train[1]))
    return lambda order: train_epoch(
        model, optimizer, scaled_batches(*epoch_rows(train, order, shuffled), common.BATCH_SIZE)
    )


def at_threads(
    count: int, epoch: Callable[[torch.Tensor], float], orders: list[torch.Tensor]
) -> Callable[[int], float]:
    """A timed run: the thread count is set per call, since the runs it alternates with change it."""

    def run(round_number: int) -> float:
        torch.set_num_threads(count)
        return epoch(orders[round_number])

    return run


if __name__ == "__main__":
    main()
