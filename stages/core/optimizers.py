"""One registry from the ``type`` named in catalog.yaml to a torch optimizer class."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from stages.core.keywords import Keyword, keywords

OPTIMIZER_TYPES: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adagrad": torch.optim.Adagrad,
    "rmsprop": torch.optim.RMSprop,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
}


@dataclass(frozen=True)
class OptimizerSpec:
    """A named optimizer configuration: ``momentum`` is ``type: sgd`` with ``momentum: 0.9``."""

    name: str
    type: str
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)


def hyperparameters(optimizer_type: str) -> dict[str, Keyword]:
    """The keyword arguments of the torch class, which are exactly what catalog.yaml may set."""
    return keywords(OPTIMIZER_TYPES[optimizer_type], exclude={"params"})


def build_optimizer(spec: OptimizerSpec, parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    values = {key: tuple(value) if isinstance(value, list) else value for key, value in spec.hyperparameters.items()}
    return OPTIMIZER_TYPES[spec.type](parameters, **values)
