"""Which CPU kernels torch uses, so that a result means the same bits on every machine the docs promise.

torch's CPU results depend on more than its inputs: ATen's vectorised kernels on the instruction
set (``ATEN_CPU_CAPABILITY``), MKL's on its code path (``MKL_CBWR``) and on how many threads it
allows itself (``MKL_DYNAMIC``), convolutions on oneDNN's JIT kernels. ``portable`` pins each to a
choice every x86-64 CPU with AVX2 makes alike, Intel or AMD, with or without AVX-512, and replaces
the kernels whose result the CPU maker chooses or that pinning would slow down: float32 ``sqrt``
(``correctly_rounded_sqrt``) and the matrix products (``pinned_products``). ``native`` leaves the
machine's fastest kernels, whose results are tied to that CPU. docs/reproducibility.md lists every
op of every recipe and why each gives the same bits everywhere.

The variables are read when torch loads: ``pin`` is the one place that sets them, called by
``python -m stages`` before torch loads. This module must not import torch or numpy at import time
(tests set the variables from it before torch loads).
"""

from __future__ import annotations

import ctypes
import os
from functools import cache
from pathlib import Path
from typing import Any

MODES = ("portable", "native")
PORTABLE_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",  # the widest instruction set every promised CPU has
    "MKL_CBWR": "COMPATIBLE",  # the one MKL branch Intel documents as equal on Intel and AMD CPUs
    "MKL_DYNAMIC": "FALSE",  # MKL must use the threads it is given, whatever the machine's cores
    "OMP_DYNAMIC": "FALSE",
    "OPENBLAS_CORETYPE": "Haswell",  # numpy's OpenBLAS: the products' one kernel (``pinned_products``)
    # Its idle threads sleep at once rather than spin against torch's (2 threads on 2 cores: epochs 4x slower).
    "OPENBLAS_THREAD_TIMEOUT": "4",
}
PORTABLE_CAPABILITY = "AVX2"
PORTABLE_BLAS_KERNEL = PORTABLE_ENV["OPENBLAS_CORETYPE"]
MKL_BRANCHES = {1: "OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 8: "SSE4_2", 9: "AVX", 10: "AVX2", 12: "AVX512"}


def pin(mode: str | None) -> None:
    """Where ``portable`` takes effect: sets its variables, which torch, MKL and numpy's OpenBLAS read
    when they load. ``python -m stages`` calls it before anything imports torch; tests/__init__.py
    sets them itself; any other process that computes in portable mode must inherit them, or
    ``check`` stops it. ``native`` leaves the environment as the user set it."""
    if mode == "portable":
        os.environ.update(PORTABLE_ENV)


def mkl_branch() -> str:
    """The MKL code path in effect (``AUTO`` unless pinned), read from the MKL that torch links."""
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
    capability, branch, kernel = torch.backends.cpu.get_cpu_capability(), mkl_branch(), blas().split()[-1]
    if capability == PORTABLE_CAPABILITY and branch == "COMPATIBLE" and kernel == PORTABLE_BLAS_KERNEL:
        return None
    if branch == "none" or (capability == "DEFAULT" and os.environ.get("ATEN_CPU_CAPABILITY") == "avx2"):
        return (
            f"numerics: portable needs an x86-64 CPU with AVX2 and torch's MKL build (here: ATen {capability}, "
            f"MKL {branch}); set numerics: native to run with this machine's own kernels"
        )
    return (
        f"numerics: portable, but this process runs ATen {capability}, MKL branch {branch} and OpenBLAS kernel "
        f"{kernel}: the variables must be set before torch is imported; start it as `python -m stages <command>` "
        f"(which sets them), or export {' '.join(f'{key}={value}' for key, value in PORTABLE_ENV.items())}"
    )


def configure_torch(mode: str, threads: int) -> None:
    """The part of a mode that is a torch setting rather than a variable: in portable mode
    convolutions go through ATen's im2col (``convolution_libraries``), matrix products through the
    pinned OpenBLAS kernel (``pinned_products``) and ``sqrt`` is correctly rounded."""
    convolution_libraries(enabled=mode != "portable")
    correctly_rounded_sqrt(enabled=mode == "portable")
    pinned_products(enabled=mode == "portable", threads=threads)


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
    kernel (``pow(x, 0.5)``'s too) is MKL VML's, built on ``rsqrtps``, whose result each CPU maker
    chooses: Adam, AdamW, RMSprop and AdaGrad then differ between Intel and AMD in the last bit."""
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
    """numpy's square root for float32 and float64: its loops use the CPU's ``sqrtps``/``sqrtpd``,
    which IEEE 754 defines as correctly rounded. Other types: float64's root rounded to the type
    (exact for narrower ones: 53 >= 2 * 24 + 2 bits make the second rounding innocuous; Figueroa,
    "When is double rounding innocuous?", 1995), integers promoted as torch's are."""
    import numpy
    import torch

    if tensor.dtype not in (torch.float32, torch.float64):
        if tensor.is_complex():
            return torch.pow(tensor, 0.5)
        dtype = tensor.dtype if tensor.is_floating_point() else torch.get_default_dtype()
        return _sqrt(tensor.to(torch.float64)).to(dtype)
    out = torch.empty_like(tensor)
    with numpy.errstate(invalid="ignore"):  # a negative's root is NaN, as torch's, without a warning
        numpy.sqrt(tensor.detach().numpy(), out=out.numpy())
    return out


_products_library: Any = None


def pinned_products(enabled: bool, threads: int = 1) -> None:
    """Whether torch's CPU matrix products run on numpy's OpenBLAS with its kernel pinned
    (``stages/core/products.py``), with ``threads`` threads (how OpenBLAS splits a product is part
    of its bits, as MKL's is)."""
    global _products_library
    import torch

    if enabled:
        _openblas("set_num_threads64_", threads)
    if enabled and _products_library is None:
        from stages.core import products

        _products_library = torch.library.Library("aten", "IMPL")
        products.register(_products_library)
    elif not enabled and _products_library is not None:
        _products_library._destroy()
        _products_library = None


def blas(kernel: str | None = None) -> str:
    """The BLAS that portable products run on and its kernel (this process's, or ``kernel``), e.g.
    ``OpenBLAS 0.3.31 Haswell``."""
    config = _openblas("get_config64_", restype=ctypes.c_char_p).decode().split()
    return f"{config[0]} {config[1]} {kernel or _openblas('get_corename64_', restype=ctypes.c_char_p).decode()}"


def _openblas(function: str, *args: int, restype: Any = None) -> Any:
    call = getattr(_openblas_library(), f"scipy_openblas_{function}")
    call.restype = restype
    return call(*args)


@cache
def _openblas_library() -> ctypes.CDLL:
    import numpy

    (path,) = (Path(numpy.__file__).parent.parent / "numpy.libs").glob("libscipy_openblas64_*.so")
    return ctypes.CDLL(str(path))  # the copy numpy loaded
