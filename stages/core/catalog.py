"""What catalog.yaml's entries may hold, torch-free: architectures (families ``mlp`` and ``cnn``), and
each optimizer and schedule type's keywords, exactly its torch class's (tests/test_params.py checks).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import annotated_types as at
from pydantic import Field

from stages.core.schema import Flag, Registry, adapter, choice, integer, number, said, typed

IMAGE_SIZE = 28
ACTIVATIONS = {"relu": "ReLU", "sigmoid": "Sigmoid", "tanh": "Tanh", "gelu": "GELU"}  # torch.nn's classes
Activation = choice(*ACTIVATIONS)
Size = integer(1, 10**9)
Side = integer(0, IMAGE_SIZE)
Fraction = number("a number from 0 to below 1", at.Ge(0), at.Lt(1))
Rate = number("a number > 0", at.Gt(0))
NonNegative = number("a number >= 0", at.Ge(0))
Degrees = number("a number of degrees from 0 to 180", at.Ge(0), at.Le(180))
Betas = said(Annotated[list[Fraction], at.Len(2, 2)], "expected a list of 2 numbers from 0 to below 1")


@typed
class MLP:
    """784 -> hidden... -> 10, the activation (then dropout, if any) after every hidden layer."""

    name: Annotated[str, Field(exclude=True)]  # the entry's key in catalog.yaml
    hidden: tuple[Size, ...]
    activation: Activation
    dropout: Fraction = 0.0
    family: Literal["mlp"] = "mlp"


@typed
class ConvBlock:
    """Conv2d -> [BatchNorm2d] -> activation -> [MaxPool2d] -> [Dropout]; 0 turns a part off."""

    channels: integer(1, 4096)
    kernel: integer(1, IMAGE_SIZE)
    padding: Side = 0
    stride: integer(1, IMAGE_SIZE) = 1
    batch_norm: Flag = False
    pool: Side = 0
    dropout: Fraction = 0.0


@typed
class Head:
    """After the blocks: Flatten, per hidden size Linear -> [BatchNorm1d] -> activation -> [Dropout]; Linear -> 10."""

    hidden: tuple[Size, ...] = ()
    batch_norm: Flag = False
    dropout: Fraction = 0.0


@typed
class CNN:
    name: Annotated[str, Field(exclude=True)]
    activation: Activation
    blocks: Annotated[tuple[ConvBlock, ...], at.MinLen(1)]
    head: Head = Head()
    family: Literal["cnn"] = "cnn"

    def __post_init__(self) -> None:
        self.feature_maps()

    def feature_maps(self) -> list[tuple[int, int]]:
        """(channels, side) entering each block and leaving the last; a ValueError names a block that does not fit."""
        shapes = [(1, IMAGE_SIZE)]
        for index, block in enumerate(self.blocks):
            side = (shapes[-1][1] + 2 * block.padding - block.kernel) // block.stride + 1
            if side < 1:
                raise ValueError(
                    f"blocks[{index}]: kernel {block.kernel} does not fit a {shapes[-1][1]}x{shapes[-1][1]} map"
                )
            if block.pool:
                if side < block.pool:
                    raise ValueError(f"blocks[{index}]: pool {block.pool} does not fit a {side}x{side} map")
                side //= block.pool
            shapes.append((block.channels, side))
        return shapes


Architecture = MLP | CNN
ARCHITECTURE_FAMILIES: dict[str, type] = {"mlp": MLP, "cnn": CNN}  # each with its builder in models.FAMILIES


def to_dict(architecture: Architecture) -> dict[str, Any]:
    """Plain data, as catalog.yaml spells it and a saved model carries it (lists, no name)."""
    return adapter(type(architecture)).dump_python(architecture, mode="json")


@dataclasses.dataclass(frozen=True)
class Spec:
    """A named optimizer or schedule (``momentum``: ``type: sgd``, ``momentum: 0.9``), keywords as written."""

    name: str
    type: str
    hyperparameters: Mapping[str, Any] = dataclasses.field(default_factory=dict)


OptimizerSpec = ScheduleSpec = Spec


# Each type's keywords: its torch class's own, but those the loop sets; ranges as torch checks them.
@typed
class Optimizer:
    type: str
    lr: Rate  # required: the one number a reader looks for
    weight_decay: NonNegative = 0.0
    maximize: Flag = False
    foreach: Flag | None = None
    differentiable: Flag = False


@typed
class SGD(Optimizer):
    momentum: NonNegative = 0.0
    dampening: number("a finite number") = 0.0
    nesterov: Flag = False
    fused: Flag | None = None

    def __post_init__(self) -> None:
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum > 0 and a dampening of 0")


@typed
class Adagrad(Optimizer):
    lr_decay: NonNegative = 0.0
    initial_accumulator_value: NonNegative = 0.0
    eps: NonNegative = 1e-10
    fused: Flag | None = None


@typed
class RMSprop(Optimizer):
    alpha: NonNegative = 0.99
    eps: NonNegative = 1e-8
    momentum: NonNegative = 0.0
    centered: Flag = False
    capturable: Flag = False


@typed
class AdamW(Optimizer):
    betas: Betas = (0.9, 0.999)
    eps: NonNegative = 1e-8
    weight_decay: NonNegative = 0.01
    amsgrad: Flag = False
    capturable: Flag = False
    fused: Flag | None = None


@typed
class Adam(AdamW):
    weight_decay: NonNegative = 0.0
    decoupled_weight_decay: Flag = False


@typed
class Schedule:
    type: str


@typed
class Step(Schedule):
    step_size: integer(1)
    gamma: Rate = 0.1


@typed
class Cosine(Schedule):
    eta_min: NonNegative = 0.0  # T_max: the loop's, the epochs


@typed
class OneCycle(Schedule):  # total_steps: the loop's, epochs x batches
    max_lr: Rate
    pct_start: number("a number from 0 to 1", at.Ge(0), at.Le(1)) = 0.3
    anneal_strategy: choice("cos", "linear") = "cos"
    cycle_momentum: Flag = True
    base_momentum: NonNegative = 0.85
    max_momentum: NonNegative = 0.95
    div_factor: Rate = 25.0
    final_div_factor: Rate = 1e4
    three_phase: Flag = False


# The torch class of each type: optimizers.OPTIMIZER_TYPES and schedules.SCHEDULE_TYPES.
OPTIMIZER_KEYWORDS: dict[str, type] = {"sgd": SGD, "adagrad": Adagrad, "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW}
SCHEDULE_KEYWORDS: dict[str, type] = {"none": Schedule, "step": Step, "cosine": Cosine, "onecycle": OneCycle}


def _spec(name: str, raw: Mapping[str, Any], entry: Any) -> Spec:
    return Spec(name, entry.type, {key: getattr(entry, key) for key in raw if key != "type"})


Architectures = Annotated[dict[str, Architecture], Registry("family", ARCHITECTURE_FAMILIES)]
Optimizers = Annotated[dict[str, Spec], Registry("type", OPTIMIZER_KEYWORDS, _spec)]
Schedules = Annotated[dict[str, Spec], Registry("type", SCHEDULE_KEYWORDS, _spec)]
