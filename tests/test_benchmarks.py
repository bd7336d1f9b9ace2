"""The benchmarks run as README shows them, here on small synthetic data: they are how the speed and
memory targets are measured, so a change that breaks one fails here rather than at the next
measurement. (``bench_queue`` takes minutes even so, and is left to be run by hand.)"""

from __future__ import annotations

import os
import re
import sys

from benchmarks.common import ARCHITECTURES
from tests.conftest import ROOT, Project

SMALL = ("--data", "synthetic", "--train-size", "600", "--valid-size", "200", "--repeats", "1")


def run_benchmark(module: str, *args: str) -> str:
    """The benchmark's output, run from this checkout (it writes nothing there)."""
    return Project(ROOT, dict(os.environ)).run(sys.executable, "-m", f"benchmarks.{module}", *SMALL, *args).stdout


def test_bench_training_times_each_loop_and_finds_the_weights_bitwise_equal():
    output = run_benchmark("bench_training")
    for name in ARCHITECTURES:
        assert re.search(rf"train epoch {name}: tutorial [\d.]+ s .*, in-memory [\d.]+ s .*; [\d.]+x", output)
    identical = "in-memory and tutorial True, in-memory and float rows True, steps by hand and by autograd True"
    assert output.count(f"bitwise identical: {identical}") == len(ARCHITECTURES)
    assert "validation of 200 images: tutorial" in output


def test_bench_training_splits_an_epoch_into_matrix_products_and_other_ops():
    output = run_benchmark("bench_training", "--kernels")
    shares = re.findall(r"matrix products ([\d.]+) ms, other ATen ops ([\d.]+) ms", output)
    assert len(shares) == len(ARCHITECTURES)
    assert all(float(products) > 0 and float(others) > 0 for products, others in shares)
    assert output.count("largest others: ") == len(ARCHITECTURES)


def test_bench_training_measures_the_train_stage_peak_memory():
    output = run_benchmark("bench_training", "--peak-memory")
    assert re.search(r"train stage peak RSS \(\w+, 1 epochs\): [\d.]+ GB .*; import torch alone: [\d.]+ GB", output)


def test_bench_threads_times_each_thread_count():
    output = run_benchmark("bench_threads", "--counts", "1,2")
    for name in ARCHITECTURES:
        assert re.search(rf"train epoch {name}: 1 threads .*; 2 threads [\d.]+ s", output)
