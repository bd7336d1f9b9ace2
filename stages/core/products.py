"""Portable numerics' matrix products: every product a recipe computes, on numpy's OpenBLAS with its
kernel pinned (``OPENBLAS_CORETYPE=Haswell``, numerics.PORTABLE_ENV). MKL's GEMM gives other bits on
other CPUs unless held to its COMPATIBLE branch, which uses no wide vector instructions (2-3x
slower); OpenBLAS's Haswell kernel runs the same instructions in the same order on every CPU with
AVX2 and FMA, at MKL's native speed for these shapes. Registered for torch's CPU ``mm``, ``addmm``
and ``bmm`` (Linear, forward and backward) and for convolutions, whose slow path calls the BLAS
directly (``numerics.pinned_products``). Proof: tests/other_cpus.py, tests/test_numerics.py.
"""

from __future__ import annotations

from typing import Any

import numpy
import torch
import torch.nn.functional as F


def register(library: torch.library.Library) -> None:
    library.impl("mm", mm, "CPU")
    library.impl("bmm", mm, "CPU")
    library.impl("addmm", addmm, "CPU")
    library.impl("convolution", convolution, "AutogradCPU")  # training and no_grad: keeps columns for backward
    library.impl("_slow_conv2d_forward", _inference_convolution, "CPU")  # under inference_mode


def mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``mm`` and ``bmm``: numpy's matmul calls the BLAS once per matrix."""
    out = a.new_empty((*a.shape[:-1], b.shape[-1]))
    with numpy.errstate(all="ignore"):  # an overflow is an inf, as in torch's own: the loop reports divergence
        numpy.matmul(_array(a), _array(b), out=out.numpy())
    return out


def addmm(bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor, *, beta: float = 1, alpha: float = 1) -> torch.Tensor:
    product = mm(a, b)
    if alpha != 1:
        product.mul_(alpha)
    return product if beta == 0 else product.add_(bias if beta == 1 else bias * beta)


def _array(tensor: torch.Tensor) -> numpy.ndarray:
    """``tensor`` as an array numpy's matmul hands to the BLAS as it is (rows or columns contiguous);
    any other layout would take numpy's own loop, which is neither fast nor pinned."""
    rows, columns = tensor.stride()[-2:]
    height, width = tensor.shape[-2:]
    if not ((columns == 1 and rows >= max(width, 1)) or (rows == 1 and columns >= max(height, 1))):
        tensor = tensor.contiguous()
    return tensor.detach().numpy()


def convolution(
    image: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: list[int], padding: list[int],
    dilation: list[int], transposed: bool, output_padding: list[int], groups: int,
) -> torch.Tensor:  # fmt: skip
    if transposed or groups != 1 or set(dilation) != {1} or image.dim() != 4:
        raise NotImplementedError(
            "portable numerics compute 2-d convolutions without groups, dilation or transposition"
        )
    return _Convolution.apply(image, weight, bias, stride, padding)


def _inference_convolution(image, weight, kernel, bias, stride, padding) -> torch.Tensor:  # noqa: ANN001
    return _forward(_Windows(image.shape, weight.shape, stride, padding), image, weight, bias)[0]


def _forward(shape: _Windows, image: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> tuple:
    """One product for the whole batch, weight (K x CRS) @ columns (CRS x NHW'); and the columns."""
    columns = shape.columns(image)
    product = mm(weight.flatten(1), columns).view(weight.shape[0], *shape.rows)
    out = product[..., : shape.out[1]].transpose(0, 1).contiguous()  # N x K x H x W
    return (out if bias is None else out.add_(bias.view(1, -1, 1, 1))), columns


class _Convolution(torch.autograd.Function):
    """A convolution whose backward pass uses the columns of its forward pass, and the same layout:
    the gradient's rows get zeros in the extra columns, which add exactly nothing."""

    @staticmethod
    def forward(ctx: Any, image, weight, bias, stride, padding) -> torch.Tensor:  # noqa: ANN001
        ctx.shape = _Windows(image.shape, weight.shape, stride, padding)
        out, columns = _forward(ctx.shape, image, weight, bias)
        ctx.save_for_backward(columns, weight)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        columns, weight = ctx.saved_tensors
        shape = ctx.shape
        rows = grad.new_zeros((grad.shape[1], *shape.rows))
        rows[..., : shape.out[1]] = grad.transpose(0, 1)
        rows = rows.flatten(1)  # K x NHW'
        grad_weight = mm(rows, columns.t()).view_as(weight) if ctx.needs_input_grad[1] else None
        grad_image = shape.col2im(mm(weight.flatten(1).t(), rows)) if ctx.needs_input_grad[0] else None
        grad_bias = grad.sum((0, 2, 3)) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_image, grad_weight, grad_bias, None, None


class _Windows:
    """im2col with long copies. The image is zero-padded to H' x W' (W' a multiple of the column
    stride, one more row for the last windows' overhang) and flattened: the window of output
    (h, w) at kernel offset (r, s) starts at r W' + s + (h sh W' + w sw), so for each (c, r, s, n)
    the columns are one strided run over all (h, w < W'/sw), not one short run per output row as
    in ATen's im2col, which copies element by element. Outputs w >= W are computed and dropped."""

    def __init__(self, image: torch.Size, weight: torch.Size, stride: list[int], padding: list[int]):
        self.n, self.c, self.height, self.width = image
        self.kernel, self.stride, self.padding = weight[2:], stride, padding
        sides = zip(image[2:], padding, weight[2:], stride, strict=True)
        self.out = [(size + 2 * pad - k) // step + 1 for size, pad, k, step in sides]
        self.padded_width = -(-(self.width + 2 * padding[1]) // stride[1]) * stride[1]
        self.padded_height = self.height + 2 * padding[0] + 1
        self.rows = (self.n, self.out[0], self.padded_width // stride[1])  # per kernel offset: N x H x W'/sw

    def _view(self, flat: torch.Tensor, channel_stride: int, image_stride: int) -> torch.Tensor:
        """The windows of ``flat`` (padded images) as C x R x S x N x H x W'/sw, a strided view."""
        width = self.padded_width
        sizes = (self.c, *self.kernel, *self.rows)
        strides = (channel_stride, width, 1, image_stride, self.stride[0] * width, self.stride[1])
        return flat.as_strided(sizes, strides)

    def columns(self, image: torch.Tensor) -> torch.Tensor:
        (top, left), area = self.padding, self.padded_height * self.padded_width
        right, bottom = self.padded_width - self.width - left, self.padded_height - self.height - top
        padded = F.pad(image, (left, right, top, bottom))
        return self._view(padded, area, self.c * area).reshape(self.c * self.kernel[0] * self.kernel[1], -1)

    def col2im(self, columns: torch.Tensor) -> torch.Tensor:
        """The image gradient: each kernel offset's columns added at its place, offsets in order."""
        area = self.padded_height * self.padded_width
        out = columns.new_zeros((self.c, self.n, self.padded_height, self.padded_width))
        windows = self._view(out, self.n * area, area)
        for r in range(self.kernel[0]):
            for s in range(self.kernel[1]):
                windows[:, r, s] += columns.view(self.c, *self.kernel, *self.rows)[:, r, s]
        top, left = self.padding
        return out[:, :, top : top + self.height, left : left + self.width].transpose(0, 1).contiguous()
