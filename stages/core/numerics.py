"""Which CPU kernels torch uses, so that a result means the same bits on every machine the docs promise.

torch's CPU results depend on more than its inputs: ATen's vectorised kernels on the instruction
set (``ATEN_CPU_CAPABILITY``), MKL's matrix products on its code path (``MKL_CBWR``) and on how
many threads it allows itself (``MKL_DYNAMIC``), convolutions on oneDNN's JIT kernels. ``portable``
pins each to a choice every x86-64 CPU with AVX2 makes alike, Intel or AMD, with or without
AVX-512, and replaces the one kernel a recipe reaches whose result the CPU maker chooses: float32
``sqrt`` (``correctly_rounded_sqrt``). ``native`` leaves the machine's fastest kernels, whose
results are tied to that CPU. docs/reproducibility.md lists every op of every recipe and why each
gives the same bits everywhere.

The variables are read when torch loads, so ``pin_from_argv`` runs when the ``stages`` package is
imported, before anything imports torch. This module must not import torch at import time.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import MutableMapping, Sequence
from pathlib import Path
from typing import Any

MODES = ("portable", "native")
DEFAULT_MODE = "portable"
PORTABLE_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",  # the widest instruction set every promised CPU has
    "MKL_CBWR": "COMPATIBLE",  # the one MKL branch Intel documents as equal on Intel and AMD CPUs
    "MKL_DYNAMIC": "FALSE",  # MKL must use the threads it is given, whatever the machine's cores
    "OMP_DYNAMIC": "FALSE",
}
PORTABLE_CAPABILITY = "AVX2"
MKL_BRANCHES = {1: "OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 8: "SSE4_2", 9: "AVX", 10: "AVX2", 12: "AVX512"}


def requested_mode(argv: Sequence[str]) -> str:
    """The mode a command names with ``--numerics`` (the benchmarks do), else the ``numerics`` key of
    the params file it was started with (``--params``, else ./params.yaml); the default when there
    is none or it is not a mode (validation says so later)."""
    options = dict(_options(argv))
    if options.get("--numerics") in MODES:
        return options["--numerics"]
    path = Path(options.get("--params", "params.yaml"))
    try:
        import yaml

        mode = (yaml.safe_load(path.read_text()) or {}).get("numerics", DEFAULT_MODE)
    except (OSError, ValueError, AttributeError):  # no file, not YAML, not a mapping: params.py reports it
        return DEFAULT_MODE
    return mode if mode in MODES else DEFAULT_MODE


def _options(argv: Sequence[str]) -> list[tuple[str, str]]:
    """``--name value`` and ``--name=value`` pairs, read before argparse (and torch) runs."""
    pairs = [tuple(arg.split("=", 1)) for arg in argv if arg.startswith("--") and "=" in arg]
    pairs += [(arg, value) for arg, value in itertools.pairwise(argv) if arg.startswith("--")]
    return pairs


def pin(mode: str, environ: MutableMapping[str, str] = os.environ) -> None:
    """Set the variables ``mode`` needs; ``native`` leaves the environment as the user set it."""
    if mode == "portable":
        environ.update(PORTABLE_ENV)


def pin_from_argv() -> None:
    if "torch" not in sys.modules:  # too late otherwise; ``check`` then says so in one line
        pin(requested_mode(sys.argv))


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
        "must be set before torch is imported; start it as `python -m stages.<name>` or `python -m tools.<name>`"
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
