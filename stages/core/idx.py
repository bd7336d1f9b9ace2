"""Decoding of the IDX format that MNIST ships in (big-endian header, then raw bytes)."""

from __future__ import annotations

import math
import struct

import torch

from stages.core.errors import PipelineError

UNSIGNED_BYTE = 0x08


def decode_idx(data: bytes, name: str = "IDX data") -> torch.Tensor:
    """Return a uint8 tensor of the declared shape; a wrong magic number or size is an error."""
    if len(data) < 4:
        raise PipelineError(f"{name}: {len(data)} bytes is too short for an IDX header")
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != UNSIGNED_BYTE or ndim == 0:
        raise PipelineError(f"{name}: not an unsigned-byte IDX file (magic {data[:4].hex()})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise PipelineError(f"{name}: truncated header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + math.prod(shape)
    if len(data) != expected:
        raise PipelineError(f"{name}: {len(data)} bytes, but its header {list(shape)} needs {expected}")
    return torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8).reshape(shape)


def encode_idx(array: torch.Tensor) -> bytes:
    """The inverse of ``decode_idx``; tests use it to make MNIST-format files of their own."""
    array = array.to(torch.uint8).contiguous()
    header = struct.pack(">HBB", 0, UNSIGNED_BYTE, array.dim()) + struct.pack(f">{array.dim()}I", *array.shape)
    return header + array.numpy().tobytes()
