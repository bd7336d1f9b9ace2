"""The benchmarks run as docs/performance.md shows them, here on small synthetic data: they are how
the speed and memory targets are measured, so a change that breaks one fails here rather than at the
next measurement. (``bench_queue`` takes minutes even so, and is left to be run by hand.)"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SMALL = ("--data", "synthetic", "--train-size", "600", "--valid-size", "200", "--repeats", "1")


def run_benchmark(module: str, *args: str) -> str:
    """The benchmark's output, run from this checkout (it writes nothing there)."""
    command = [sys.executable, "-m", "benchmarks", module, *SMALL, *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout


def test_bench_training_times_each_loop_and_finds_the_weights_bitwise_equal():
    """cnn_small brings batch norm and dropout: both loops must draw the same masks."""
    output = run_benchmark("bench_training", "--archs", "mlp_128_64_relu,cnn_small")
    for name in ("mlp_128_64_relu", "cnn_small"):
        assert re.search(rf"train epoch {name}: tutorial [\d.]+ s .*, in-memory [\d.]+ s .*; [\d.]+x", output)
        assert f"validation {name}, 200 images: tutorial" in output
    assert output.count("bitwise identical: in-memory and tutorial True") == 2
    assert "cpu-portable-" in output.splitlines()[0]  # the machine line names the numerics


@pytest.mark.slow  # a whole train stage in its own process
def test_bench_training_measures_the_train_stage_peak_memory():
    output = run_benchmark("bench_training", "--peak-memory")
    assert re.search(r"train stage peak RSS \(\w+, 1 epochs\): [\d.]+ GB .*; import torch alone: [\d.]+ GB", output)


def test_bench_numerics_prices_portable_numerics_against_native():
    output = run_benchmark("bench_numerics", "--candidates", "native,portable", "--recipes", "mlp_20_sigmoid-adam")
    cell = r"mlp_20_sigmoid-adam [\d.]+ s \([\d.]+x native\)"
    assert re.search(rf"^portable +{cell}; exactly portable: yes$", output, re.M)
    # Portable's correctly rounded sqrt changes Adam's steps on any CPU, so one outcome only: portable listed
    # here would mean its process never ran in its own numerics, and the prices beside it compare nothing.
    assert "same weights as native on this machine: native\n" in output


def test_bench_threads_times_each_thread_count():
    output = run_benchmark("bench_threads", "--counts", "1,2")
    assert re.search(r"train epoch mlp_128_64_relu: 1 threads .*; 2 threads [\d.]+ s", output)


@pytest.mark.slow  # three processes that import torch
def test_bench_startup_times_predict_against_a_bare_torch_import(reproduced):
    env = {**reproduced.env, "PYTHONPATH": str(ROOT)}  # the benchmark from this checkout, in a project with a model
    command = [sys.executable, "-m", "benchmarks", "bench_startup", "--repeats", "1"]
    output = subprocess.run(command, cwd=reproduced.root, env=env, capture_output=True, text=True, check=True).stdout
    assert re.search(
        r"^start-up, median of 1: import torch [\d.]+ s, predict of one image [\d.]+ s \([\d.]+x\)$", output, re.M
    )
