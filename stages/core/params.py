"""params.yaml, validated once into typed objects; every stage reads its params through here.

A bad value raises ``PipelineError`` with one line naming the key, the value and what is allowed,
before any stage writes anything.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from stages.core.errors import PipelineError
from stages.core.models import ACTIVATIONS, Architecture
from stages.core.optimizers import OPTIMIZER_TYPES, OptimizerSpec, build_optimizer, hyperparameter_names

MNIST_FILES = {  # params.yaml key -> file name on the mirrors (without .gz)
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N, mps"


@dataclass(frozen=True)
class DownloadParams:
    mirrors: tuple[str, ...]
    sha256: Mapping[str, str]
    """Keyed by file name, e.g. ``train-images-idx3-ubyte``."""


@dataclass(frozen=True)
class SplitParams:
    train_size: int
    valid_size: int


@dataclass(frozen=True)
class TrainParams:
    epochs: int
    batch_size: int


@dataclass(frozen=True)
class EvaluateParams:
    batch_size: int


@dataclass(frozen=True)
class Params:
    arch: str
    optimizer: str
    seed: int
    device: str
    threads: int
    download: DownloadParams
    split: SplitParams
    train: TrainParams
    evaluate: EvaluateParams
    architectures: Mapping[str, Architecture]
    optimizers: Mapping[str, OptimizerSpec]

    @property
    def architecture(self) -> Architecture:
        return self.architectures[self.arch]

    @property
    def optimizer_spec(self) -> OptimizerSpec:
        return self.optimizers[self.optimizer]


def load_params(path: str | Path = "params.yaml", **choices: str | None) -> Params:
    """``choices`` (``arch=``, ``optimizer=``) replace those keys before validation, so a stage run
    for one cell of the grid is checked exactly as params.yaml is; ``None`` keeps the file's value."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise PipelineError(f"{path} not found: run from the project root or pass --params") from None
    except yaml.YAMLError as error:
        raise PipelineError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from None
    if isinstance(raw, dict):
        raw.update({key: value for key, value in choices.items() if value is not None})
    return parse_params(raw, source=str(path))


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    root = _Section(raw, source, "")
    architectures = {
        name: _architecture(name, section) for name, section in root.mapping("architectures").items()
    }
    optimizers = {name: _optimizer(name, section) for name, section in root.mapping("optimizers").items()}
    split, train, evaluate = (root.section(key) for key in ("split", "train", "evaluate"))
    device = root.get("device")
    if not isinstance(device, str) or not DEVICE_PATTERN.fullmatch(device):
        root.fail("device", device, f"choose one of: {DEVICE_CHOICES}")
    return Params(
        arch=root.choice("arch", architectures),
        optimizer=root.choice("optimizer", optimizers),
        seed=root.integer("seed", minimum=0),
        device=device,
        threads=root.integer("threads", minimum=1),
        download=DownloadParams(
            mirrors=tuple(root.string_list("mnist_mirrors")),
            sha256=_checksums(root.section("mnist_sha256")),
        ),
        split=SplitParams(
            train_size=split.integer("train_size", minimum=1),
            valid_size=split.integer("valid_size", minimum=1),
        ),
        train=TrainParams(
            epochs=train.integer("epochs", minimum=1),
            batch_size=train.integer("batch_size", minimum=1),
        ),
        evaluate=EvaluateParams(batch_size=evaluate.integer("batch_size", minimum=1)),
        architectures=architectures,
        optimizers=optimizers,
    )


def _architecture(name: str, section: _Section) -> Architecture:
    hidden = section.integer_list("hidden", minimum=1)
    activation = section.choice("activation", ACTIVATIONS)
    section.reject_unknown({"hidden", "activation"})
    return Architecture(name=name, hidden=tuple(hidden), activation=activation)


def _optimizer(name: str, section: _Section) -> OptimizerSpec:
    optimizer_type = section.choice("type", OPTIMIZER_TYPES)
    allowed = hyperparameter_names(optimizer_type)
    section.reject_unknown({"type", *allowed})
    lr = section.number("lr")
    if not lr > 0:
        section.fail("lr", lr, "a learning rate must be a number > 0")
    hyperparameters = {key: value for key, value in section.raw.items() if key != "type"}
    spec = OptimizerSpec(name=name, type=optimizer_type, hyperparameters=hyperparameters)
    try:  # torch's own checks (negative momentum, betas outside [0, 1), ...), once, at the edge
        build_optimizer(spec, [torch.nn.Parameter(torch.zeros(1))])
    except (TypeError, ValueError) as error:
        raise PipelineError(f"{section.where()}: {error}") from None
    return spec


def _checksums(section: _Section) -> dict[str, str]:
    section.reject_unknown(set(MNIST_FILES))
    checksums = {}
    for key, file_name in MNIST_FILES.items():
        value = section.string(key).lower()
        if not re.fullmatch(r"[0-9a-f]{64}", value):
            section.fail(key, value, "expected a SHA-256 as 64 hex digits")
        checksums[file_name] = value
    return checksums


class _Section:
    """A mapping in params.yaml that knows its own dotted path, for error messages."""

    def __init__(self, raw: Any, source: str, prefix: str):
        if not isinstance(raw, Mapping):
            where = f"{source}: {prefix.rstrip('.')}" if prefix else source
            raise PipelineError(f"{where} must be a mapping of keys to values, got {raw!r}")
        self.raw, self.source, self.prefix = raw, source, prefix

    def where(self, key: str = "") -> str:
        return f"{self.source}: {(self.prefix + key).rstrip('.')}"

    def fail(self, key: str, value: Any, expected: str) -> None:
        raise PipelineError(f"{self.where(key)} = {value!r} is invalid; {expected}")

    def get(self, key: str) -> Any:
        if key not in self.raw:
            raise PipelineError(f"{self.where(key)} is missing")
        return self.raw[key]

    def section(self, key: str) -> _Section:
        return _Section(self.get(key), self.source, f"{self.prefix}{key}.")

    def mapping(self, key: str) -> dict[str, _Section]:
        sections = self.section(key)
        if not sections.raw:
            raise PipelineError(f"{self.where(key)} is empty")
        return {str(name): sections.section(name) for name in sections.raw}

    def reject_unknown(self, allowed: set[str]) -> None:
        for key in self.raw:
            if key not in allowed:
                self.fail(key, self.raw[key], f"unknown key; valid keys: {', '.join(sorted(allowed))}")

    def choice(self, key: str, choices: Mapping[str, Any]) -> str:
        value = self.get(key)
        if value not in choices:
            self.fail(key, value, f"choose one of: {', '.join(sorted(choices))}")
        return value

    def string(self, key: str) -> str:
        value = self.get(key)
        if not isinstance(value, str) or not value:
            self.fail(key, value, "expected a non-empty string")
        return value

    def string_list(self, key: str) -> list[str]:
        value = self.get(key)
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            self.fail(key, value, "expected a list of strings")
        return value

    def integer(self, key: str, minimum: int) -> int:
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(key, value, f"expected an integer >= {minimum}")
        return value

    def integer_list(self, key: str, minimum: int) -> list[int]:
        value = self.get(key)
        if not isinstance(value, list) or not all(
            isinstance(item, int) and not isinstance(item, bool) and item >= minimum for item in value
        ):
            self.fail(key, value, f"expected a list of integers >= {minimum}")
        return value

    def number(self, key: str) -> float:
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(key, value, "expected a finite number")
        return value
