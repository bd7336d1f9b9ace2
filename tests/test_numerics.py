"""Portable numerics: the same params give the same bits whatever the CPU offers, and every
result records the fingerprint of what its bits depend on."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml
from torch.nn import functional as F

from stages.core import numerics, runtime
from tests.conftest import ROOT

# A short run of an MLP and a CNN (convolutions take another path than matrix products), printed
# as the digest of each trained model and the process's fingerprint.
TRAIN = """
import stages, json, sys
from stages.core import data, runtime
from stages.core.models import model_bytes, sha256
from stages.core.params import load_params
from stages.core.synthetic import synthetic_digits
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
# This process runs pinned to AVX2 (tests/__init__.py imports stages), so ask the CPU itself.
HOST_HAS_AVX512 = " avx512f " in next((line + " " for line in open("/proc/cpuinfo") if line.startswith("flags")), "")


def params_file(tmp_path, mode: str):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["numerics"] = mode
    params["train"].update(epochs=1, batch_size=50)
    params["evaluate"]["batch_size"] = 200
    params["grid"]["recipes"] = {
        f"{name}-adam": {"arch": name, "optimizer": "adam", "schedule": "none"}
        for name in ("mlp_128_64_relu", "lenet5")
    }
    path = tmp_path / f"{mode}.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def start(params, machine: dict[str, str]) -> subprocess.Popen:
    env = {key: value for key, value in __import__("os").environ.items() if key not in numerics.PORTABLE_ENV}
    command = [sys.executable, "-c", TRAIN, "--params", str(params)]
    return subprocess.Popen(command, cwd=ROOT, env={**env, **machine}, stdout=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[tuple[str, str], dict]:
    """Each mode on this machine as it is, and as a machine without AVX-512; two at a time."""
    folder = tmp_path_factory.mktemp("numerics")
    results = {}
    for mode in numerics.MODES:
        started = {
            machine: start(params_file(folder, mode), env) for machine, env in (("host", {}), ("avx2", AVX2_MACHINE))
        }
        for machine, process in started.items():
            out, _ = process.communicate(timeout=120)
            assert process.returncode == 0
            results[mode, machine] = json.loads(out)
    return results


def test_portable_numerics_give_the_same_bits_with_or_without_avx512(runs):
    assert runs["portable", "host"]["digests"] == runs["portable", "avx2"]["digests"]
    assert (
        runs["portable", "host"]["environment"]["fingerprint"] == runs["portable", "avx2"]["environment"]["fingerprint"]
    )
    environment = runs["portable", "host"]["environment"]
    assert (environment["cpu_capability"], environment["mkl_branch"]) == ("AVX2", "COMPATIBLE")


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


def test_a_process_that_imported_torch_before_the_pins_refuses_to_compute(tmp_path):
    script = "import torch, stages\nfrom stages.core import runtime\nruntime.configure(1, 'cpu', 'portable')"
    env = {key: value for key, value in __import__("os").environ.items() if key not in numerics.PORTABLE_ENV}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert "numerics: portable, but this process runs ATen" in result.stderr
    assert "the pins must be set before torch is imported" in result.stderr


def test_the_mode_comes_from_the_params_file_the_process_was_given(tmp_path):
    (tmp_path / "p.yaml").write_text("numerics: native\n")
    assert numerics.requested_mode(["-m", "stages.train", "--params", str(tmp_path / "p.yaml")]) == "native"
    assert numerics.requested_mode([f"--params={tmp_path / 'p.yaml'}"]) == "native"
    assert numerics.requested_mode(["--params", str(tmp_path / "absent.yaml")]) == "portable"
    env: dict[str, str] = {}
    numerics.pin("portable", env)
    assert env == numerics.PORTABLE_ENV
    numerics.pin("native", env := {})
    assert env == {}


ENVIRONMENT = {
    "torch": "2.14.1", "cuda": None, "cudnn": None, "device": "cpu", "device_name": "AMD EPYC",
    "cpu_vendor": "AuthenticAMD", "cpu_model": "AMD EPYC", "cpu_capability": "AVX2", "numerics": "portable",
    "mkl_branch": "COMPATIBLE", "threads": 1, "python": "3.11.7", "platform": "linux x86_64",
}  # fmt: skip


def test_portable_runs_on_any_cpu_share_one_fingerprint():
    intel = {**ENVIRONMENT, "cpu_vendor": "GenuineIntel", "cpu_model": "Intel Xeon", "device_name": "Intel Xeon"}
    assert runtime.fingerprint(intel) == runtime.fingerprint(ENVIRONMENT)
    assert runtime.fingerprint(ENVIRONMENT).startswith("cpu-portable-")


@pytest.mark.parametrize(
    "change",
    [{"threads": 2}, {"torch": "2.15.0"}, {"mkl_branch": "AUTO"}, {"numerics": "native", "mkl_branch": "AUTO"}],
    ids=["threads", "torch", "mkl-branch", "native"],
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
    assert {"torch", "cuda", "cudnn", "device", "device_name", "cpu_vendor", "cpu_model"} <= set(log)
