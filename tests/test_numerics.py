"""Portable numerics: the same params give the same bits whatever the CPU offers, and every
result records the fingerprint of what its bits depend on."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.nn import functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from stages.core import data, numerics, runtime
from stages.core.params import load_raw, parse_params, write_raw
from stages.core.training import evaluate, probabilities, train_recipe
from testing.synthetic import synthetic_digits
from tests.conftest import ROOT
from tests.other_cpus import with_activations

# A short run of an MLP and a CNN (convolutions take another path than matrix products), printed
# as the digest of each trained model and the process's fingerprint.
TRAIN = """
import json, sys
from stages.core import data, runtime
from stages.core.models import model_bytes, sha256
from stages.core.params import load_params
from testing.synthetic import synthetic_digits
from stages.core.training import train_recipe
params = load_params(sys.argv[sys.argv.index("--params") + 1])
device = runtime.configure(params.threads, params.device, params.numerics)
images, labels = synthetic_digits(200, seed=1)
subset = data.Subset(images, labels.long(), labels)
digests = {}
for name in ("mlp_128_64_relu", "lenet5"):
    recipe = params.recipe(f"{name}-adam")
    model, _ = train_recipe(recipe, subset, subset, device)
    digests[name] = sha256(model_bytes(model, recipe.architecture, {}, ""))
print(json.dumps({"digests": digests, "environment": runtime.environment(device, params.numerics)}))
"""
# What a machine without AVX-512 offers: ATen's and MKL's widest kernels stop at AVX2.
AVX2_MACHINE = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
# This process runs pinned to AVX2 (tests/__init__.py), so ask the CPU itself.
HOST_HAS_AVX512 = " avx512f " in next((line + " " for line in open("/proc/cpuinfo") if line.startswith("flags")), "")


def params_file(tmp_path, mode: str):
    params = load_raw(ROOT / "params.yaml")
    params["numerics"] = mode
    params["train"].update(epochs=1, batch_size=50)
    params["evaluate"]["batch_size"] = 200
    params["grid"]["recipes"] = {
        f"{name}-adam": {"arch": name, "optimizer": "adam", "schedule": "none"}
        for name in ("mlp_128_64_relu", "lenet5")
    }
    path = tmp_path / f"{mode}.yaml"
    write_raw(params, path)  # and catalog.yaml beside it
    return path


def unpinned() -> dict[str, str]:
    """This process's environment without the portable pins (tests/__init__.py sets them)."""
    return {key: value for key, value in os.environ.items() if key not in numerics.PORTABLE_ENV}


def start(params, mode: str, machine: dict[str, str]) -> subprocess.Popen:
    """Portable's variables set here, as in the suite; MKL names every call it serves on stdout."""
    env = {**unpinned(), **(numerics.PORTABLE_ENV if mode == "portable" else {}), **machine, "MKL_VERBOSE": "1"}
    command = [sys.executable, "-c", TRAIN, "--params", str(params)]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[tuple[str, str], dict]:
    """Each mode on this machine as it is, and as a machine without AVX-512; two at a time."""
    folder = tmp_path_factory.mktemp("numerics")
    results = {}
    for mode in numerics.MODES:
        started = {
            machine: start(params_file(folder, mode), mode, env)
            for machine, env in (("host", {}), ("avx2", AVX2_MACHINE))
        }
        for machine, process in started.items():
            out, _ = process.communicate(timeout=120)
            assert process.returncode == 0
            *mkl_calls, last = out.splitlines()
            results[mode, machine] = {**json.loads(last), "mkl_calls": mkl_calls}
    return results


def test_portable_numerics_give_the_same_bits_with_or_without_avx512(runs):
    assert runs["portable", "host"]["digests"] == runs["portable", "avx2"]["digests"]
    assert (
        runs["portable", "host"]["environment"]["fingerprint"] == runs["portable", "avx2"]["environment"]["fingerprint"]
    )
    environment = runs["portable", "host"]["environment"]
    assert (environment["cpu_capability"], environment["mkl_branch"]) == ("AVX2", "COMPATIBLE")
    assert environment["blas"].startswith("OpenBLAS ") and environment["blas"].endswith(" Haswell")


def test_portable_matrix_products_never_reach_mkl(runs):
    """Every product of an MLP and a CNN, forward and backward, runs on the pinned OpenBLAS: MKL,
    asked to name each call it serves, names no GEMM (and in native mode it names them)."""
    assert [call for call in runs["portable", "host"]["mkl_calls"] if "GEMM" in call] == []
    assert any("SGEMM" in call for call in runs["native", "host"]["mkl_calls"])


def test_native_numerics_follow_the_cpu_and_the_fingerprint_says_so(runs):
    host, avx2 = runs["native", "host"], runs["native", "avx2"]
    for name in host["digests"]:  # on a host with AVX-512 the kernels, and so the bits, differ
        assert (host["digests"][name] != avx2["digests"][name]) == HOST_HAS_AVX512, name
    assert (host["environment"]["fingerprint"] != avx2["environment"]["fingerprint"]) == HOST_HAS_AVX512
    assert host["environment"]["fingerprint"].startswith("cpu-native-")
    assert runs["portable", "host"]["digests"] != host["digests"]


def test_dropout_masks_come_from_torchs_own_generator_on_every_cpu():
    """Dropout draws its masks with ``bernoulli_(p)``, which older torch builds sent to MKL on Intel
    CPUs alone (other masks there); the probability-tensor form always takes torch's generator."""
    ones = torch.ones(64, 128)
    torch.manual_seed(3)
    dropped = F.dropout(ones, 0.25, training=True)
    torch.manual_seed(3)
    kept = torch.empty_like(ones).bernoulli_(torch.tensor(0.75, dtype=torch.float64))
    assert 0.7 < kept.mean() < 0.8
    assert torch.equal(dropped, kept / 0.75)


def test_a_process_that_loaded_torch_without_the_variables_refuses_to_compute():
    script = "from stages.core import runtime\nruntime.configure(1, 'cpu', 'portable')"
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=unpinned(), capture_output=True, text=True)
    assert result.returncode != 0
    assert "numerics: portable, but this process runs ATen" in result.stderr
    assert "start it as `python -m stages <command>`" in result.stderr


def test_a_tool_without_the_variables_knows_the_fingerprint_a_portable_stage_records():
    """``tools.seeded`` matches stored runs by the fingerprint a stage would record here."""
    script = "from stages.core import runtime\nprint(runtime.expected_fingerprint(1, 'cpu', 'portable'))"
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=unpinned(), capture_output=True, text=True)
    device = runtime.configure(1, "cpu", "portable")
    assert result.stdout.strip() == runtime.environment(device, "portable")["fingerprint"], result.stderr


@pytest.mark.slow  # a whole train stage in its own process
def test_a_stage_started_without_the_variables_sets_them_before_torch_loads(project):
    """``python -m stages train`` from a shell without the variables: one process, no restart,
    and the suite's portable fingerprint."""
    expected = json.loads(project.read("logs/train.json"))["fingerprint"]
    project.set_params(train={**project.params()["train"], "epochs": 1})
    project.env = {key: value for key, value in project.env.items() if key not in numerics.PORTABLE_ENV}
    result = project.stage("train")
    assert "numerics:" not in result.stderr, result.stderr
    assert result.stdout.count(f"numerics {expected}") == 1
    log = json.loads(project.read("logs/train.json"))
    assert (log["fingerprint"], log["cpu_capability"], log["mkl_branch"]) == (expected, "AVX2", "COMPATIBLE")


@pytest.mark.parametrize(("mode", "pinned"), [("portable", True), ("native", False)])
def test_python_m_stages_sets_the_variables_of_the_params_mode_before_the_stage_loads(
    monkeypatch, tmp_path, mode, pinned
):
    """``python -m stages train --params P``: the mode is read from P without torch, and the
    variables are in the environment before ``stages.train`` (and so torch) is imported."""
    import stages.__main__ as entry

    write_raw({**load_raw(ROOT / "params.yaml"), "numerics": mode}, tmp_path / "p.yaml")
    for key in numerics.PORTABLE_ENV:
        monkeypatch.delenv(key)
    monkeypatch.setattr(sys, "argv", ["stages", "train", "--params", str(tmp_path / "p.yaml")])
    seen = {}
    monkeypatch.setattr(entry.importlib, "import_module", lambda name: seen.setdefault(name, dict(os.environ)) and None)
    with pytest.raises(AttributeError):  # the stand-in module has no main
        entry.run("stages", entry.COMMANDS)
    assert list(seen) == ["stages.train"]
    assert (numerics.PORTABLE_ENV.items() <= seen["stages.train"].items()) == pinned
    assert sys.argv == ["python -m stages train", "--params", str(tmp_path / "p.yaml")]


def test_python_m_stages_names_its_commands():
    result = subprocess.run([sys.executable, "-m", "stages", "trian"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: 'trian' is no command; usage: python -m stages <command> [arguments]; commands: download, split, "
        "recipe, train, evaluate, cell, predict, draw"
    ]


ENVIRONMENT = {
    "torch": "2.14.1", "cuda": None, "cudnn": None, "device": "cpu", "device_name": "AMD EPYC",
    "cpu_vendor": "AuthenticAMD", "cpu_model": "AMD EPYC", "cpu_capability": "AVX2", "numerics": "portable",
    "mkl_branch": "COMPATIBLE", "correctly_rounded": ["sqrt"], "blas": "OpenBLAS 0.3.31.188.0 Haswell", "threads": 1,
    "python": "3.11.7", "platform": "linux x86_64",
}  # fmt: skip


def test_portable_runs_on_any_cpu_share_one_fingerprint():
    intel = {**ENVIRONMENT, "cpu_vendor": "GenuineIntel", "cpu_model": "Intel Xeon", "device_name": "Intel Xeon"}
    assert runtime.fingerprint(intel) == runtime.fingerprint(ENVIRONMENT)
    assert runtime.fingerprint(ENVIRONMENT).startswith("cpu-portable-")


@pytest.mark.parametrize(
    "change",
    [
        {"threads": 2},
        {"torch": "2.15.0"},
        {"mkl_branch": "AUTO"},
        {"correctly_rounded": []},
        {"blas": "OpenBLAS 0.3.31.188.0 SkylakeX"},
        {"numerics": "native", "mkl_branch": "AUTO", "correctly_rounded": []},
    ],
    ids=["threads", "torch", "mkl-branch", "vml-sqrt", "blas-kernel", "native"],
)
def test_what_changes_the_bits_changes_the_fingerprint(change):
    assert runtime.fingerprint({**ENVIRONMENT, **change}) != runtime.fingerprint(ENVIRONMENT)


def test_native_and_gpu_fingerprints_name_the_hardware():
    native = {**ENVIRONMENT, "numerics": "native", "cpu_capability": "AVX512", "mkl_branch": "AUTO"}
    assert runtime.fingerprint({**native, "cpu_model": "Intel Xeon"}) != runtime.fingerprint(native)
    gpu = {**ENVIRONMENT, "device": "cuda:0", "device_name": "NVIDIA H200", "cuda": "13.0", "cudnn": 92400}
    assert runtime.fingerprint(gpu).startswith("cuda-portable-")
    assert runtime.fingerprint({**gpu, "device_name": "NVIDIA A100"}) != runtime.fingerprint(gpu)


def test_the_train_stage_records_its_fingerprint_and_environment(reproduced):
    log = json.loads(reproduced.read("logs/train.json"))
    assert log["fingerprint"] == runtime.fingerprint(log)
    assert (log["numerics"], log["cpu_capability"], log["mkl_branch"], log["threads"]) == (
        "portable",
        "AVX2",
        "COMPATIBLE",
        1,
    )
    assert {"torch", "device", "blas"} <= set(log)
    assert not {"cpu_model", "python", "train_seconds"} & set(log)  # the same bits on another machine: the same log
    machine = json.loads(reproduced.read("logs/train.timings.json"))  # beside it, neither git's nor DVC's
    assert {"cpu_vendor", "cpu_model", "python", "train_seconds"} <= set(machine)


def hard_square_roots() -> torch.Tensor:
    """Every kind of float32: random bit patterns over all exponents (subnormals too), the neighbours
    of exact squares (where a root one ulp off is most often rounded the wrong way), and the
    special values."""
    generator = torch.Generator().manual_seed(0)
    patterns = torch.randint(0, 0x7F800000, (200_000,), generator=generator, dtype=torch.int32).view(torch.float32)
    roots = torch.randint(1, 1 << 12, (20_000,), generator=generator).float() * 2.0 ** torch.randint(-60, 60, (20_000,))
    squares = (roots.double() ** 2).float()
    near = torch.cat([squares, *(torch.nextafter(squares, torch.tensor(bound)) for bound in (0.0, 1e38))])
    special = torch.tensor([0.0, -0.0, float("inf"), -1.0, float("nan"), 1e-45, 3.4028235e38, 1.0, 2.0])
    return torch.cat([patterns, near, special])


def test_portable_sqrt_is_correctly_rounded_on_every_path():
    """torch's float32 sqrt is MKL VML's, which approximates with ``rsqrtps`` (one CPU maker's bits);
    portable mode must give IEEE 754's correctly rounded root however an optimizer asks for it."""
    numerics.configure_torch("portable", threads=1)
    x = hard_square_roots()
    with np.errstate(invalid="ignore"):
        expected = torch.from_numpy(np.sqrt(x.numpy().astype(np.float64)).astype(np.float32))  # SSE2 sqrtsd: exact
    out = torch.empty(0)
    results = {
        "Tensor.sqrt": x.sqrt(),
        "torch.sqrt": torch.sqrt(x),
        "sqrt_": x.clone().sqrt_(),
        "out=": torch.sqrt(x, out=out),
        "_foreach_sqrt": torch._foreach_sqrt([x])[0],
        "RMSprop centered's view": x.view(-1, 1)[:, 0].sqrt(),
    }
    bits = torch.where(expected.isnan(), 0x7FC00000, expected.view(torch.int32))  # NaN's sign is free
    for path, result in results.items():
        assert torch.equal(torch.where(result.isnan(), 0x7FC00000, result.view(torch.int32)), bits), path
    assert torch.equal(torch.tensor([4, 9]).sqrt(), torch.tensor([2.0, 3.0]))  # integers promote, as torch's do


# Every aten op that a recipe's training and evaluation run, by why its bits are the same on every
# x86-64 CPU with AVX2 in portable mode (docs/reproducibility.md). An op missing here fails the test
# below until someone has checked it, and the emulated check (tests/other_cpus.py) has run it.
AUDITED = {
    "no arithmetic (memory, views, comparisons, indexing, argmax, max pooling)": {
        "_local_scalar_dense", "_to_copy", "argmax", "bitwise_and", "cat", "clone", "constant_pad_nd", "copy_",
        "detach", "empty", "empty_like", "eq", "fill_", "flatten", "full_like", "index", "index_put_",
        "index_select", "item", "lift_fresh", "max_pool2d", "max_pool2d_with_indices",
        "max_pool2d_with_indices_backward", "nonzero", "ones", "ones_like", "relu", "select", "slice", "stack", "t",
        "threshold_backward", "to", "unflatten", "view", "zero_", "zeros", "zeros_like", "dropout",
        "_unsafe_view", "as_strided", "new_empty", "new_zeros", "transpose", "unbind", "clamp_", "expand",
        "unsqueeze", "gather", "floor", "bitwise_not", "masked_fill", "masked_fill_",
    },
    "IEEE 754 operations in a fixed order: ATen's code for AVX2 (pinned), FMA and Sleef's exp included": {
        "add", "add_", "addcdiv_", "addcmul_", "div", "div_", "lerp_", "mul", "mul_", "sum", "sigmoid",
        "tanh_backward", "gelu", "gelu_backward",
        "sigmoid_backward", "softmax", "_log_softmax", "_log_softmax_backward_data", "cross_entropy_loss",
        "nll_loss_forward", "nll_loss_backward", "batch_norm", "native_batch_norm", "native_batch_norm_backward",
        "neg", "sub", "rsub", "round_", "arange",
    },
    "MKL VML's tanh on the COMPATIBLE branch: no approximate instruction (checked under QEMU)": {"tanh"},
    "products on the pinned OpenBLAS kernel (numerics.pinned_products; convolutions off oneDNN and NNPACK)": {
        "addmm", "mm", "linear", "conv2d", "convolution", "convolution_backward",
    },
    "torch's own generator (mt19937 and its transforms)": {"uniform_", "bernoulli_", "randperm", "randint", "rand"},
    "correctly rounded in portable mode (numerics.correctly_rounded_sqrt)": {"sqrt"},
}  # fmt: skip


class OpRecorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "aten":
            self.ops.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def test_every_op_of_every_recipe_is_one_that_gives_the_same_bits_on_every_cpu():
    params = parse_params(with_activations(load_raw(ROOT / "params.yaml")))
    device = runtime.configure(1, "cpu", "portable")
    images, labels = synthetic_digits(256, seed=1)
    subset = data.Subset(images, labels.long(), labels.long())
    features = data.as_features(images, device)
    recorded = {}
    for name in (None, *params.grid.recipes):
        recipe = params.recipe(name)
        recipe = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, epochs=2, batch_size=64))
        with OpRecorder() as recorder:  # two epochs: a one-cycle rate, momentum and Adam's state all move
            model, _ = train_recipe(recipe, subset, subset, device)
            evaluate(model, features, labels.long(), 100)
            probabilities(model, features[:5])
        for op in recorder.ops:
            recorded.setdefault(op, name or "params.yaml's")
    audited = set().union(*AUDITED.values())
    assert {op: recipe for op, recipe in recorded.items() if op not in audited} == {}
    assert "sqrt" in recorded  # the recipes do reach the one replaced kernel (Adam, AdamW, ...)
