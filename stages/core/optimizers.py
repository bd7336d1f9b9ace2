"""One registry from the ``type`` named in catalog.yaml to a torch optimizer class; its keywords are
declared in stages/core/catalog.py."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from stages.core.catalog import OptimizerSpec

OPTIMIZER_TYPES: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adagrad": torch.optim.Adagrad,
    "rmsprop": torch.optim.RMSprop,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
}


def build_optimizer(spec: OptimizerSpec, parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    values = {key: tuple(value) if isinstance(value, list) else value for key, value in spec.hyperparameters.items()}
    return OPTIMIZER_TYPES[spec.type](parameters, **values)
