"""Which CPU kernels torch uses, so that a result means the same bits on every machine the docs promise.

torch's CPU results depend on more than its inputs: ATen's vectorised kernels on the instruction
set (``ATEN_CPU_CAPABILITY``), MKL's matrix products on its code path (``MKL_CBWR``) and on how
many threads it allows itself (``MKL_DYNAMIC``), convolutions on oneDNN's JIT kernels. ``portable``
pins each to a choice every x86-64 CPU with AVX2 makes alike, Intel or AMD, with or without
AVX-512, and replaces the one kernel a recipe reaches whose result the CPU maker chooses: float32
``sqrt`` (``correctly_rounded_sqrt``). ``native`` leaves the machine's fastest kernels, whose
results are tied to that CPU. docs/reproducibility.md lists every op of every recipe and why each
gives the same bits everywhere.

The variables are read when torch loads: ``pin`` is the one place that sets them, restarting a
command that started without them. This module must not import torch at import time (tests set
the variables from it before torch loads).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

MODES = ("portable", "native")
PORTABLE_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",  # the widest instruction set every promised CPU has
    "MKL_CBWR": "COMPATIBLE",  # the one MKL branch Intel documents as equal on Intel and AMD CPUs
    "MKL_DYNAMIC": "FALSE",  # MKL must use the threads it is given, whatever the machine's cores
    "OMP_DYNAMIC": "FALSE",
}
PORTABLE_CAPABILITY = "AVX2"
MKL_BRANCHES = {1: "OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 8: "SSE4_2", 9: "AVX", 10: "AVX2", 12: "AVX512"}


COMMANDS = ("stages", "tools", "benchmarks")  # the packages whose ``python -m`` commands ``pin`` restarts


def pin(mode: str) -> None:
    """Where ``portable`` takes effect, for every process (``runtime.configure`` calls it first).
    torch reads the variables only when it loads, so a command whose environment lacks them sets
    them and starts again: the same command line, in the same process (``exec``: DVC sees one pid),
    with one line on stderr saying so; every process it starts inherits them. ``native`` leaves the
    environment as the user set it. Nothing else restarts (pytest, a notebook, a pool's worker): it
    inherits them or sets them before importing torch (tests/__init__.py), or ``check`` stops it."""
    if mode != "portable" or PORTABLE_ENV.items() <= os.environ.items() or not _restartable():
        return
    os.environ.update(PORTABLE_ENV)
    settings = " ".join(f"{key}={value}" for key, value in PORTABLE_ENV.items())
    print(f"numerics: portable: restarting with {settings}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def _restartable() -> bool:
    """Whether this process is ``python -m`` one of the project's commands, so that running its
    command line again runs it again (a spawned worker runs its parent's module, from ``-c``)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    argv = sys.orig_argv
    command = argv[argv.index("-m") + 1 :] if "-m" in argv else []
    return spec is not None and command[:1] == [spec.name] and spec.name.partition(".")[0] in COMMANDS


def mkl_branch() -> str:
    """The MKL code path in effect (``AUTO`` unless pinned), read from the MKL that torch links."""
    import ctypes

    import torch

    try:
        library = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
        get = library.mkl_serv_cbwr_get
    except (OSError, AttributeError):  # a build without MKL (ARM, macOS)
        return "none"
    get.restype, get.argtypes = ctypes.c_int, [ctypes.c_int]
    branch = get(1)  # MKL_CBWR_BRANCH
    return MKL_BRANCHES.get(branch, str(branch))


def check(mode: str) -> str | None:
    """Why this process cannot compute in ``mode``, or None. Call before the first result is computed."""
    import torch

    if mode != "portable":
        return None
    capability, branch = torch.backends.cpu.get_cpu_capability(), mkl_branch()
    if capability == PORTABLE_CAPABILITY and branch == "COMPATIBLE":
        return None
    if branch == "none" or (capability == "DEFAULT" and os.environ.get("ATEN_CPU_CAPABILITY") == "avx2"):
        return (
            f"numerics: portable needs an x86-64 CPU with AVX2 and torch's MKL build (here: ATen {capability}, "
            f"MKL {branch}); set numerics: native to run with this machine's own kernels"
        )
    return (
        f"numerics: portable, but this process runs ATen {capability} and MKL branch {branch}: the pins "
        "must be set before torch is imported; start it as `python -m stages.<name>` or `python -m tools.<name>` "
        "(numerics.pin sets them), or set numerics.PORTABLE_ENV before importing torch"
    )


def configure_torch(mode: str) -> None:
    """The part of a mode that is a torch setting rather than a variable: in portable mode
    convolutions go through ATen's im2col and MKL's pinned GEMM (``convolution_libraries``), and
    ``sqrt`` is correctly rounded (``correctly_rounded_sqrt``)."""
    convolution_libraries(enabled=mode != "portable")
    correctly_rounded_sqrt(enabled=mode == "portable")


def convolution_libraries(enabled: bool) -> None:
    """Whether CPU convolutions may use oneDNN's JIT kernels (which give other bits on other
    instruction sets) and NNPACK's (which pick their own for the CPU, for forward passes of 16
    images or more)."""
    import torch

    torch.backends.mkldnn.enabled = enabled
    torch.backends.nnpack.set_flags(enabled)


CORRECTLY_ROUNDED = ("sqrt",)  # torch ops that portable mode replaces (a field of the fingerprint)
_sqrt_library: Any = None  # the registration below while it is in force


def correctly_rounded_sqrt(enabled: bool) -> None:
    """Whether torch's CPU ``sqrt`` (every caller: the optimizers' single-tensor and foreach paths,
    ``sqrt_``, ``out=``) rounds the exact square root, as IEEE 754 specifies. torch's own float32
    kernel is MKL VML's, built on ``rsqrtps``, whose result each CPU maker chooses: Adam, AdamW,
    RMSprop and AdaGrad then differ between Intel and AMD in the last bit, and the runs diverge."""
    global _sqrt_library
    import torch

    if enabled and _sqrt_library is None:
        _sqrt_library = torch.library.Library("aten", "IMPL")
        _sqrt_library.impl("sqrt", _sqrt, "CPU")
        _sqrt_library.impl("sqrt_", lambda tensor: tensor.copy_(_sqrt(tensor)), "CPU")
        _sqrt_library.impl("sqrt.out", lambda tensor, *, out: out.resize_(tensor.shape).copy_(_sqrt(tensor)), "CPU")
    elif not enabled and _sqrt_library is not None:
        _sqrt_library._destroy()  # torch's own kernels again
        _sqrt_library = None


def _sqrt(tensor: Any) -> Any:
    """float64's square root, rounded to the tensor's type: exact for float32 (and narrower) since
    float64's is within one of its ulps, and 53 >= 2 * 24 + 2 bits make the second rounding
    innocuous (Figueroa, "When is double rounding innocuous?", 1995). float64 itself keeps torch's
    kernel. ``pow(x, 0.5)`` runs torch's sqrt kernel without calling ``sqrt`` (no recursion)."""
    import torch

    if tensor.dtype == torch.float64 or tensor.is_complex():
        return torch.pow(tensor, 0.5)
    dtype = tensor.dtype if tensor.is_floating_point() else torch.get_default_dtype()
    return torch.pow(tensor.to(torch.float64), 0.5).to(dtype)
