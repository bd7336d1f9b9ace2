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
    the tutorial's initial weights. Inputs are 784-vectors (``data.as_rows`` flattens once):
    a ``Flatten`` layer would cost a module call at every step."""
    sizes = architecture.layer_sizes
    layers: list[nn.Module] = []
    for index, (inputs, outputs) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(inputs, outputs))
        if index < len(sizes) - 2:
            layers.append(ACTIVATIONS[architecture.activation]())
    return nn.Sequential(*layers)


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


@dataclass(frozen=True)
class LayerSummary:
    name: str
    """Class name and 1-based position, as torchsummary names layers: ``Linear-2``."""
    output_shape: tuple[int, ...]
    num_params: int


@torch.inference_mode()
def summarize(model: nn.Sequential) -> list[LayerSummary]:
    """Each layer's output shape, found by passing one dummy image through the layers in turn."""
    device = next(model.parameters()).device
    activations = torch.zeros(1, INPUT_FEATURES, device=device)
    layers = []
    for position, layer in enumerate(model, start=1):
        activations = layer(activations)
        layers.append(
            LayerSummary(f"{type(layer).__name__}-{position}", tuple(activations.shape[1:]), count_parameters(layer))
        )
    return layers


def summary_table(model: nn.Sequential) -> str:
    """torchsummary's table (batch dimension shown as -1), so the tutorial's output can be compared."""
    rule, double = "-" * 64, "=" * 64
    header = f"{'Layer (type)':>20}  {'Output Shape':>25} {'Param #':>15}"
    body = [
        f"{layer.name:>20}  {str([-1, *layer.output_shape]):>25} {layer.num_params:>15,}" for layer in summarize(model)
    ]
    total = count_parameters(model)
    trainable = sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)
    return "\n".join(
        [
            rule,
            header,
            double,
            *body,
            double,
            f"Total params: {total:,}",
            f"Trainable params: {trainable:,}",
            f"Non-trainable params: {total - trainable:,}",
            rule,
            "",
        ]
    )


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
