"""Architectures are data, in two families (``mlp`` and ``cnn``); this module turns them into modules,
summarises them, and saves and loads trained models together with the architecture they have."""

from __future__ import annotations

import hashlib
import io
import itertools
import pickle
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stages.core import schema
from stages.core.catalog import ACTIVATIONS, CNN, IMAGE_SIZE, MLP, Architecture, Architectures, to_dict
from stages.core.errors import PipelineError
from stages.core.params import CATALOG

INPUT_FEATURES = IMAGE_SIZE * IMAGE_SIZE
NUM_CLASSES = 10
MODEL_FORMAT = "mnist-dvc-model/1"
MAX_MODEL_BYTES = 64 * 2**20  # far above any model here: /dev/zero or a huge file is refused, not read to the end
MAX_PARAMETERS = 10**8  # 400 MB of weights: far above any MNIST model, far below a machine's memory


def build_model(architecture: Architecture) -> nn.Sequential:
    """Layers created input to output, as the tutorial's ``MNIST_DNN``, so one seed gives its initial
    weights. Inputs are rows of 784 pixels; a CNN views them as 1x28x28 images first."""
    with torch.device("meta"):  # counted without allocating: a typo of hidden: [1000000000] is 3 TB
        count = count_parameters(FAMILIES[architecture.family](architecture))
    if count > MAX_PARAMETERS:
        raise PipelineError(
            f"{CATALOG}: architectures.{architecture.name} has {count:,} parameters; at most {MAX_PARAMETERS:,} "
            "are allowed"
        )
    return FAMILIES[architecture.family](architecture)


def _mlp(architecture: MLP) -> nn.Sequential:
    activation = getattr(nn, ACTIVATIONS[architecture.activation])
    return nn.Sequential(*_dense(INPUT_FEATURES, architecture.hidden, activation, False, architecture.dropout))


def _cnn(architecture: CNN) -> nn.Sequential:
    activation = getattr(nn, ACTIVATIONS[architecture.activation])
    shapes = architecture.feature_maps()
    layers: list[nn.Module] = [nn.Unflatten(1, (1, IMAGE_SIZE, IMAGE_SIZE))]
    for (channels, _), block in zip(shapes[:-1], architecture.blocks, strict=True):
        layers.append(
            nn.Conv2d(channels, block.channels, block.kernel, block.stride, block.padding, bias=not block.batch_norm)
        )
        layers += [nn.BatchNorm2d(block.channels)] if block.batch_norm else []
        layers.append(activation())
        layers += [nn.MaxPool2d(block.pool)] if block.pool else []
        layers += [nn.Dropout(block.dropout)] if block.dropout else []
    (channels, side), head = shapes[-1], architecture.head
    dense = _dense(channels * side * side, head.hidden, activation, head.batch_norm, head.dropout)
    return nn.Sequential(*layers, nn.Flatten(), *dense)


def _dense(inputs: int, hidden: tuple[int, ...], activation: type, batch_norm: bool, dropout: float) -> list[nn.Module]:
    """Per hidden size Linear -> [BatchNorm1d] -> activation -> [Dropout], then Linear -> 10: an MLP, a CNN's head."""
    sizes, layers = (inputs, *hidden), []
    for inputs, outputs in itertools.pairwise(sizes):
        layers.append(nn.Linear(inputs, outputs, bias=not batch_norm))
        layers += [nn.BatchNorm1d(outputs)] if batch_norm else []
        layers.append(activation())
        layers += [nn.Dropout(dropout)] if dropout else []
    return [*layers, nn.Linear(sizes[-1], NUM_CLASSES)]


FAMILIES: dict[str, Callable[[Any], nn.Sequential]] = {"mlp": _mlp, "cnn": _cnn}


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


@dataclass(frozen=True)
class LayerSummary:
    name: str  # class name and 1-based position, as torchsummary names layers: ``Linear-2``
    output_shape: tuple[int, ...]
    num_params: int


@torch.inference_mode()
def summarize(model: nn.Sequential) -> list[LayerSummary]:
    """Each layer's output shape, found by passing two blank images through the layers in turn
    (two, so batch norm in training mode has a batch to normalise), in eval mode."""
    training = model.training
    model.eval()
    activations = torch.zeros(2, INPUT_FEATURES, device=next(model.parameters()).device)
    layers = []
    for position, layer in enumerate(model, start=1):
        activations = layer(activations)
        layers.append(
            LayerSummary(f"{type(layer).__name__}-{position}", tuple(activations.shape[1:]), count_parameters(layer))
        )
    model.train(training)
    return layers


def summary_table(model: nn.Sequential) -> str:
    """torchsummary's table (batch dimension shown as -1), so the tutorial's output can be compared."""
    rule, double = "-" * 64, "=" * 64
    body = [f"{row.name:>20}  {str([-1, *row.output_shape]):>25} {row.num_params:>15,}" for row in summarize(model)]
    total = count_parameters(model)
    trainable = sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)
    counts = {"Total": total, "Trainable": trainable, "Non-trainable": total - trainable}
    header = f"{'Layer (type)':>20}  {'Output Shape':>25} {'Param #':>15}"
    return "\n".join(
        [rule, header, double, *body, double, *(f"{k} params: {n:,}" for k, n in counts.items()), rule, ""]
    )


@dataclass(frozen=True)
class TrainedModel:
    """A model as ``train`` saved it: the weights with the architecture they belong to, and the run
    (its params and their digest) they came from."""

    model: nn.Sequential
    architecture: Architecture
    run: Mapping[str, Any]
    params_digest: str
    sha256: str  # of the file's bytes: what evaluate records as the model it tested


def model_bytes(model: nn.Module, architecture: Architecture, run: Mapping[str, Any], params_digest: str) -> bytes:
    """The file ``train`` writes: plain data and tensors (it loads with ``weights_only=True``), saved into
    memory and with the weights on the CPU, so the bytes depend on neither the file's name nor the device."""
    weights = model.state_dict()  # kept as it is: its _metadata (module versions) is saved too
    weights.update({name: tensor.cpu() for name, tensor in weights.items()})
    buffer, spec = io.BytesIO(), {"name": architecture.name, **to_dict(architecture)}
    payload = {"format": MODEL_FORMAT, "architecture": spec, "run": dict(run), "params_digest": params_digest}
    torch.save({**payload, "state_dict": weights}, buffer)
    return buffer.getvalue()


def load_for(
    path: Path, device: torch.device, architecture: Architecture, digest: str, source: str = "params.yaml"
) -> TrainedModel:
    """The model in ``path``, if it was trained with this architecture and the params of this digest
    (a recipe's): any other model answers for a run that ``source`` no longer describes."""
    trained = load_trained(path, device, expected=architecture)
    if trained.params_digest != digest:
        raise PipelineError(
            f"{path} was trained with other params than {source}'s (params digest {trained.params_digest}, "
            f"now {digest}): retrain it (dvc repro train)"
        )
    return trained


def load_trained(path: Path, device: torch.device, expected: Architecture | None = None) -> TrainedModel:
    """The model in ``path``, without unpickling code; with ``expected``, a model of any other
    architecture is an error naming both."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_MODEL_BYTES + 1)
    except FileNotFoundError:
        raise PipelineError(f"{path} not found: train a model first (dvc repro train)") from None
    except IsADirectoryError:
        raise PipelineError(f"{path} is a directory, not a model file") from None
    if len(data) > MAX_MODEL_BYTES:
        raise PipelineError(
            f"{path} is over {MAX_MODEL_BYTES:,} bytes, so not a model saved by this project's train stage: "
            "retrain it (dvc repro train)"
        )
    try:
        saved = torch.load(io.BytesIO(data), map_location=device, weights_only=True)
        if not isinstance(saved, dict) or saved.get("format") != MODEL_FORMAT:
            raise ValueError("not a model file of this project")
        spec = dict(saved["architecture"])
        name = spec.pop("name")
        architecture = schema.validate(Architectures, {name: spec}, str(path))[name]
        if expected is None or architecture == expected:
            model = build_model(architecture).to(device)
            model.load_state_dict(saved["state_dict"])
    except (RuntimeError, ValueError, KeyError, TypeError, EOFError, PipelineError, pickle.UnpicklingError,
            zipfile.BadZipFile):  # fmt: skip
        raise PipelineError(
            f"{path} is not a model saved by this project's train stage (empty, truncated or foreign): "
            "retrain it (dvc repro train)"
        ) from None
    if expected is not None and architecture != expected:
        raise PipelineError(
            f"{path} holds architecture {architecture.name!r}, but params.yaml asks for {expected.name!r} "
            f"({_difference(architecture, expected)}): retrain it (dvc repro), or restore the params it was "
            "trained with"
        )
    return TrainedModel(model.eval(), architecture, saved["run"], saved["params_digest"], sha256(data))


def _difference(saved: Architecture, expected: Architecture) -> str:
    old, new = to_dict(saved), to_dict(expected)
    keys = [key for key in old | new if old.get(key) != new.get(key)]
    return "; ".join(f"{key}: {old.get(key)} in the file, {new.get(key)} in {CATALOG}" for key in keys) or "same layers"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
