"""One registry from the ``type`` named in catalog.yaml to a torch optimizer class."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from stages.core.errors import PipelineError
from stages.core.keywords import Keyword, keywords
from stages.core.schema import Section

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


def parse_optimizer(name: str, section: Section) -> OptimizerSpec:
    """One entry of catalog.yaml's ``optimizers``, checked by torch itself on a throwaway parameter."""
    optimizer_type = section.choice("type", OPTIMIZER_TYPES)
    values = section.keywords(hyperparameters(optimizer_type))
    if "lr" not in values:
        section.get("lr")  # every entry says its learning rate: the one number a reader looks for
    if not values["lr"] > 0:
        section.fail("lr", values["lr"], "a learning rate must be a number > 0")
    spec = OptimizerSpec(name=name, type=optimizer_type, hyperparameters=values)
    try:  # torch's own checks (negative momentum, betas outside [0, 1), ...), once, at the edge
        build_optimizer(spec, [torch.nn.Parameter(torch.zeros(1))])
    except (TypeError, ValueError, RuntimeError) as error:
        raise PipelineError(f"{section.where()}: {error}") from None
    return spec
