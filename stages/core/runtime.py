"""Device choice, seeds, threads, numerics and deterministic kernels: everything bitwise
reproducibility needs, and the fingerprint of what the bits depend on besides params."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from typing import Any

import torch

from stages.core import numerics
from stages.core.errors import PipelineError


def configure(threads: int, device: str, mode: str) -> torch.device:
    """Call first thing in a stage, before any result is computed. The thread count is part of the
    result (a GEMM splits its work by threads), so it comes from params, never from the machine.
    Seeds are set where weights are drawn (``training.train_recipe``)."""
    if problem := numerics.check(mode):
        raise PipelineError(problem)
    numerics.configure_torch(mode, threads)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    torch.set_num_threads(threads)
    torch._C._set_deterministic_algorithms(True)  # torch.use_deterministic_algorithms also imports inductor: 1.5 s
    torch.backends.cudnn.benchmark = False
    return resolve_device(device)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an explicit device that is absent is an error,
    never a silent fall back to the CPU."""
    cuda = [f"cuda:{index}" for index in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    mps = torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    device = torch.device(name)
    missing = {"cuda": (device.index or 0) >= len(cuda), "mps": not mps}.get(device.type)
    if missing:
        why = f"{len(cuda)} CUDA devices found" if device.type == "cuda" else "no MPS backend"
        available = ", ".join(["auto", "cpu", *(["cuda", *cuda] if cuda else []), *(["mps"] if mps else [])])
        raise PipelineError(f"device {name!r} is not available ({why}); available here: {available}")
    return device


def environment(device: torch.device, mode: str) -> dict[str, Any]:
    """What a result's bits depend on besides params, with ``fingerprint`` summing it up; recorded
    in logs/, beside the metrics and never inside them."""
    cpu_vendor, cpu_model = _cpu()
    env = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model,
        "cpu_vendor": cpu_vendor,
        "cpu_model": cpu_model,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "numerics": mode,
        "mkl_branch": numerics.mkl_branch(),
        "correctly_rounded": list(numerics.CORRECTLY_ROUNDED) if mode == "portable" else [],
        "blas": numerics.blas() if mode == "portable" else "MKL",  # what the CPU's matrix products run on
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "libc": " ".join(platform.libc_ver()),  # the schedules' and turns' math.cos; not a field of the fingerprint
        "platform": f"{sys.platform} {platform.machine()}",
    }
    return {"fingerprint": fingerprint(env), **env}


def expected_fingerprint(threads: int, device: str, mode: str) -> str:
    """The fingerprint a stage run here with these params records, without configuring this process
    (a tool's): in portable mode the pinned kernels' (a stage that cannot pin them refuses to run)."""
    env = {**environment(resolve_device(device), mode), "threads": threads}
    if mode == "portable":
        pinned = numerics.PORTABLE_CAPABILITY, "COMPATIBLE", numerics.blas(numerics.PORTABLE_BLAS_KERNEL)
        env["cpu_capability"], env["mkl_branch"], env["blas"] = pinned
    return fingerprint(env)


def class_fields(env: dict[str, Any]) -> dict[str, Any]:
    """The fields that decide the bits. In portable mode the CPU's make and model do not (that is
    the point of it); in native mode they do, and on a GPU its name and toolkit do."""
    keys = ("torch", "numerics", "threads", "cpu_capability", "mkl_branch", "correctly_rounded", "blas")
    fields = {key: env.get(key) for key in keys}  # a log from before a field existed reads None
    fields["device"] = env["device"].split(":")[0]
    if env["numerics"] != "portable":
        fields.update(cpu_vendor=env["cpu_vendor"], cpu_model=env["cpu_model"], platform=env["platform"])
    if fields["device"] != "cpu":
        fields.update(device_name=env["device_name"], cuda=env["cuda"], cudnn=env["cudnn"], platform=env["platform"])
    return fields


def split_environment(env: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """What decides the bits (the fingerprint and its fields: a log's, tracked) and the rest (the
    machine's make, Python, libc: beside the timings, untracked), so a run that gives the same
    bits on another machine leaves its log as it was."""
    decisive = {"fingerprint", "device", *class_fields(env)}
    return {k: v for k, v in env.items() if k in decisive}, {k: v for k, v in env.items() if k not in decisive}


def fingerprint(env: dict[str, Any]) -> str:
    """One short string: two runs with the same one computed with the same kernels, whatever the
    machine was; e.g. ``cpu-portable-3f2a9c1b``."""
    fields = class_fields(env)
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:8]
    return f"{fields['device']}-{env['numerics']}-{digest}"


def _cpu() -> tuple[str, str]:
    """Vendor and model name, from /proc/cpuinfo where there is one."""
    found = {}
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                found.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return found.get("vendor_id", platform.machine()), found.get("model name", platform.processor() or "unknown")
