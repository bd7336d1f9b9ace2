"""The training step captured as one CUDA graph and replayed for every full batch (docs/performance.md):
a small model's step is launch-bound. PyTorch's whole-network capture, with the warm-up steps that
capture needs undone, so a run trains from the state and draws the random numbers it would have.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable

import torch
from torch import nn

from stages.core.catalog import OPTIMIZER_KEYWORDS, OptimizerSpec

WARM_UP_STEPS = 3  # PyTorch's recipe: lazy state, cuBLAS handles and allocator pools before capture

Step = Callable[[nn.Module, torch.optim.Optimizer, torch.Tensor, torch.Tensor], torch.Tensor]


def optimizer_spec(spec: OptimizerSpec, device: torch.device, constant_rate: bool) -> OptimizerSpec:
    """Where a step will be replayed, an optimizer keeps its step count on the GPU if it can (else Adam's
    bias correction would be computed once on the host and replayed unchanged)."""
    can_keep = "capturable" in OPTIMIZER_KEYWORDS[spec.type].__pydantic_fields__  # the torch class's own keyword
    if device.type != "cuda" or not constant_rate or not can_keep or "capturable" in spec.hyperparameters:
        return spec
    return dataclasses.replace(spec, hyperparameters={**spec.hyperparameters, "capturable": True})


def replayable(device: torch.device, optimizer: torch.optim.Optimizer, constant_rate: bool) -> bool:
    """Whether a step of this run can be captured once and replayed."""
    stateless_on_host = type(optimizer) is torch.optim.SGD or optimizer.defaults.get("capturable") is True
    return device.type == "cuda" and constant_rate and stateless_on_host


class GraphedStep:
    """``step`` captured for batches of ``batch_size`` rows of ``width`` features."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, step: Step, batch_size: int, width: int):
        device = next(model.parameters()).device
        self.batch_size = batch_size
        self.features = torch.zeros(batch_size, width, device=device)
        self.labels = torch.zeros(batch_size, dtype=torch.long, device=device)
        before, rng = snapshot(model, optimizer), torch.cuda.get_rng_state(device)
        model.train()
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side), warnings.catch_warnings():  # capture needs its warm-up off the default stream
            warnings.filterwarnings("ignore", "This instance was constructed with capturable=True")  # it is, for this
            for _ in range(WARM_UP_STEPS):
                step(model, optimizer, self.features, self.labels)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        optimizer.zero_grad(set_to_none=True)  # so backward allocates the gradients in the graph's memory
        with torch.cuda.graph(self.graph):
            self.loss = step(model, optimizer, self.features, self.labels).detach()
        restore(model, optimizer, before)
        torch.cuda.set_rng_state(rng, device)

    def replay(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One step on this batch; returns its loss (a copy: the next replay overwrites the graph's)."""
        self.features.copy_(features)
        self.labels.copy_(labels)
        self.graph.replay()
        return self.loss.clone()


Snapshot = tuple[dict[str, torch.Tensor], dict[int, torch.Tensor]]


def snapshot(model: nn.Module, optimizer: torch.optim.Optimizer) -> Snapshot:
    """A copy of everything a step changes in place: weights, buffers, optimizer state."""
    weights = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    return weights, {id(tensor): tensor.clone() for tensor in _optimizer_tensors(optimizer)}


def restore(model: nn.Module, optimizer: torch.optim.Optimizer, saved: Snapshot) -> None:
    """Everything back as ``snapshot`` found it, in place (a graph holds these very tensors); optimizer
    state created since is zeroed, as torch's optimizers here start it."""
    weights, state = saved
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            tensor.copy_(weights[name])
        for tensor in _optimizer_tensors(optimizer):
            if id(tensor) in state:
                tensor.copy_(state[id(tensor)])
            else:
                tensor.zero_()


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [value for state in optimizer.state.values() for value in state.values() if torch.is_tensor(value)]
