"""Device choice, seeds, threads and deterministic kernels: everything bitwise reproducibility needs."""

from __future__ import annotations

import os
import platform
import sys

import torch

from stages.core.errors import PipelineError


def configure(seed: int, threads: int, device: str) -> torch.device:
    """Call first thing in a stage. The thread count is part of the result (MKL's GEMM splits work
    differently for 1 and 2 threads), so it comes from params, never from the machine."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.manual_seed(seed)
    return resolve_device(device)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an explicit device that is absent is an error,
    never a silent fall back to the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise PipelineError(f"device {name!r} is not available ({count} CUDA devices found); {_available()}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise PipelineError(f"device {name!r} is not available (no MPS backend); {_available()}")
    return device


def _available() -> str:
    choices = ["auto", "cpu"]
    if torch.cuda.is_available():
        choices += ["cuda"] + [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        choices.append("mps")
    return f"available here: {', '.join(choices)}"


def describe(device: torch.device) -> dict[str, object]:
    """What a result depends on besides params: recorded beside the metrics, not inside them."""
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": sys.platform,
        "machine": platform.machine(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_model(),
        "threads": torch.get_num_threads(),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
