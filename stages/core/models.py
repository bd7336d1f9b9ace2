"""Architectures are data (hidden sizes and an activation); this module turns them into modules."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from stages.core.errors import PipelineError

IMAGE_SIZE = 28
INPUT_FEATURES = IMAGE_SIZE * IMAGE_SIZE
NUM_CLASSES = 10

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
}


@dataclass(frozen=True)
class Architecture:
    """An MLP 784 -> hidden... -> 10, one activation after every hidden layer."""

    name: str
    hidden: tuple[int, ...]
    activation: str

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        return (INPUT_FEATURES, *self.hidden, NUM_CLASSES)


def build_model(architecture: Architecture) -> nn.Sequential:
    """Layers are created input to output, as the tutorial's ``MNIST_DNN`` does, so one seed gives
    the tutorial's initial weights. ``Flatten`` lets the model take 28x28 images or 784-vectors."""
    sizes = architecture.layer_sizes
    layers: list[nn.Module] = [nn.Flatten()]
    for index, (inputs, outputs) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(inputs, outputs))
        if index < len(sizes) - 2:
            layers.append(ACTIVATIONS[architecture.activation]())
    return nn.Sequential(*layers)


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def load_model(path: Path, architecture: Architecture, device: torch.device) -> nn.Sequential:
    """The state dict that ``train`` saved, loaded without unpickling code, into ``architecture``."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise PipelineError(f"{path} not found: train a model first (dvc repro train)") from None
    model = build_model(architecture).to(device)
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise PipelineError(f"{path} does not fit architecture {architecture.name!r}; retrain it (dvc repro)") from None
    return model.eval()
