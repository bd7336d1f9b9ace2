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
from pathlib import Path
from typing import Any

MODES = ("portable", "native")
PORTABLE_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",  # the widest instruction set every promised CPU has
    "MKL_CBWR": "COMPATIBLE",  # the one MKL branch Intel documents as equal on Intel and AMD CPUs
    "MKL_DYNAMIC": "FALSE",  # MKL must use the threads it is given, whatever the machine's cores
    "OMP_DYNAMIC": "FALSE",
    "OPENBLAS_CORETYPE": "Haswell",  # numpy's OpenBLAS: the products' one kernel (``pinned_products``)
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


# Matrix products. MKL's GEMM gives other bits on other CPUs unless pinned to its COMPATIBLE branch,
# which uses no wide vector instructions (2-3x slower). numpy's OpenBLAS, with its kernel pinned by
# OPENBLAS_CORETYPE, runs the same instructions in the same order on every CPU with AVX2 and FMA, at
# MKL's native speed. In portable mode every product a recipe computes goes there: torch's ``mm``,
# ``addmm`` and ``bmm`` (Linear, forward and backward) and its slow convolution, whose im2col
# products call the BLAS directly (proof: docs/reproducibility.md, tests/other_cpus.py).
PINNED_PRODUCTS = ("mm", "addmm", "bmm", "_slow_conv2d_forward", "_slow_conv2d_backward")
_products_library: Any = None


def pinned_products(enabled: bool, threads: int = 1) -> None:
    """Whether torch's CPU matrix products (``PINNED_PRODUCTS``) run on numpy's OpenBLAS, with
    ``threads`` threads (how OpenBLAS splits a product is part of its bits, as MKL's is)."""
    global _products_library
    import torch

    if enabled:
        _openblas("set_num_threads64_", threads)
    if enabled and _products_library is None:
        _products_library = torch.library.Library("aten", "IMPL")
        for name, kernel in (("mm", _mm), ("addmm", _addmm), ("bmm", _mm), ("_slow_conv2d_forward", _conv),
                             ("_slow_conv2d_backward.output_mask", _conv_backward)):  # fmt: skip
            _products_library.impl(name, kernel, "CPU")
    elif not enabled and _products_library is not None:
        _products_library._destroy()
        _products_library = None


def blas(kernel: str | None = None) -> str:
    """The BLAS that portable products run on and its kernel (this process's, or ``kernel``), e.g.
    ``OpenBLAS 0.3.31 Haswell``."""
    config = _openblas("get_config64_", restype=ctypes.c_char_p).decode().split()
    return f"{config[0]} {config[1]} {kernel or _openblas('get_corename64_', restype=ctypes.c_char_p).decode()}"


def _openblas(function: str, *args: int, restype: Any = None) -> Any:
    import numpy

    (path,) = (Path(numpy.__file__).parent.parent / "numpy.libs").glob("libscipy_openblas64_*.so")
    call = getattr(ctypes.CDLL(str(path)), f"scipy_openblas_{function}")  # the copy numpy loaded
    call.restype = restype
    return call(*args)


def _array(tensor: Any) -> Any:
    """``tensor`` as a numpy array that numpy's matmul hands to the BLAS as it is (rows or columns
    contiguous); anything else would take numpy's own loop, which is neither fast nor pinned."""
    rows, columns = tensor.stride()[-2:]
    height, width = tensor.shape[-2:]
    if not ((columns == 1 and rows >= max(width, 1)) or (rows == 1 and columns >= max(height, 1))):
        tensor = tensor.contiguous()
    return tensor.detach().numpy()


def _mm(a: Any, b: Any) -> Any:
    """``mm`` and ``bmm`` (and a matrix times a stack): numpy's matmul calls the BLAS once per matrix."""
    import numpy
    import torch

    out = a.new_empty((*torch.broadcast_shapes(a.shape[:-2], b.shape[:-2]), a.shape[-2], b.shape[-1]))
    numpy.matmul(_array(a), _array(b), out=out.numpy())
    return out


def _addmm(bias: Any, a: Any, b: Any, *, beta: float = 1, alpha: float = 1) -> Any:
    product = _mm(a, b)
    if alpha != 1:
        product.mul_(alpha)
    return product if beta == 0 else product.add_(bias if beta == 1 else bias * beta)


def _conv(image: Any, weight: Any, kernel: list[int], bias: Any, stride: list[int], padding: list[int]) -> Any:
    """A convolution as one product for the whole batch, weight (K x CRS) @ columns (CRS x NHW')."""
    shape = _Windows(image.shape, weight.shape, stride, padding)
    product = _mm(weight.flatten(1), shape.columns(image)).view(weight.shape[0], *shape.rows)
    out = product[..., : shape.out[1]].transpose(0, 1).contiguous()  # N x K x H x W
    return out if bias is None else out.add_(bias.view(1, -1, 1, 1))


def _conv_backward(
    grad: Any, image: Any, weight: Any, kernel: list[int], stride: list[int], padding: list[int], mask: list[bool]
) -> tuple[Any, Any, Any]:
    """The gradients with the same layout: zeros in the rows' extra columns add exactly nothing."""
    shape = _Windows(image.shape, weight.shape, stride, padding)
    rows = grad.new_zeros((grad.shape[1], *shape.rows))
    rows[..., : shape.out[1]] = grad.transpose(0, 1)
    rows = rows.flatten(1)  # K x NHW'
    grad_weight = _mm(rows, shape.columns(image).t()).view_as(weight) if mask[1] else None
    grad_image = shape.col2im(_mm(weight.flatten(1).t(), rows)) if mask[0] else None
    return grad_image, grad_weight, grad.sum((0, 2, 3)) if mask[2] else None


class _Windows:
    """im2col with long copies. The image is zero-padded to H' x W' (W' a multiple of the column
    stride, one more row for the last windows' overhang) and flattened: the window of output
    (h, w) at kernel offset (r, s) starts at r W' + s + (h sh W' + w sw), so for each (c, r, s, n)
    the columns are one strided run over all (h, w < W'/sw), not one short run per output row as
    in ATen's im2col, which copies element by element. Outputs w >= W are computed and dropped."""

    def __init__(self, image: tuple[int, ...], weight: tuple[int, ...], stride: list[int], padding: list[int]):
        self.n, self.c, self.height, self.width = image
        self.kernel, self.stride, self.padding = weight[2:], stride, padding
        self.out = [
            (size + 2 * pad - k) // step + 1
            for size, pad, k, step in zip(image[2:], padding, weight[2:], stride, strict=True)
        ]
        self.padded_width = -(-(self.width + 2 * padding[1]) // stride[1]) * stride[1]
        self.padded_height = self.height + 2 * padding[0] + 1
        self.rows = (self.n, self.out[0], self.padded_width // stride[1])  # per kernel offset: N x H x W'/sw

    def _view(self, flat: Any, channel_stride: int, image_stride: int) -> Any:
        """The windows of ``flat`` (padded images) as C x R x S x N x H x W'/sw, a strided view."""
        width = self.padded_width
        sizes = (self.c, *self.kernel, *self.rows)
        strides = (channel_stride, width, 1, image_stride, self.stride[0] * width, self.stride[1])
        return flat.as_strided(sizes, strides)

    def columns(self, image: Any) -> Any:
        import torch.nn.functional as F

        (top, left), area = self.padding, self.padded_height * self.padded_width
        right, bottom = self.padded_width - self.width - left, self.padded_height - self.height - top
        padded = F.pad(image, (left, right, top, bottom))
        return self._view(padded, area, self.c * area).reshape(self.c * self.kernel[0] * self.kernel[1], -1)

    def col2im(self, columns: Any) -> Any:
        """The image gradient: each kernel offset's columns added at its place, offsets in order."""
        area = self.padded_height * self.padded_width
        out = columns.new_zeros((self.c, self.n, self.padded_height, self.padded_width))
        windows = self._view(out, self.n * area, area)
        for r in range(self.kernel[0]):
            for s in range(self.kernel[1]):
                windows[:, r, s] += columns.view(self.c, *self.kernel, *self.rows)[:, r, s]
        (top, left) = self.padding
        return out[:, :, top : top + self.height, left : left + self.width].transpose(0, 1).contiguous()
