"""One registry from the ``type`` named in params.yaml to a torch optimizer class."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

OPTIMIZER_TYPES: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adagrad": torch.optim.Adagrad,
    "rmsprop": torch.optim.RMSprop,
    "adam": torch.optim.Adam,
}


@dataclass(frozen=True)
class OptimizerSpec:
    """A named optimizer configuration: ``momentum`` is ``type: sgd`` with ``momentum: 0.9``."""

    name: str
    type: str
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)


def hyperparameter_names(optimizer_type: str) -> list[str]:
    """The keyword arguments of the torch class, which are exactly what params.yaml may set."""
    signature = inspect.signature(OPTIMIZER_TYPES[optimizer_type])
    return [name for name in signature.parameters if name != "params"]


def build_optimizer(spec: OptimizerSpec, parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    return OPTIMIZER_TYPES[spec.type](parameters, **spec.hyperparameters)
