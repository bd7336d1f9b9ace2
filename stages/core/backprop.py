"""The gradients of the tutorial's loss, taken by hand: the ATen kernels that ``loss.backward()``
runs for an MLP, called the same way in the same order, without autograd's bookkeeping.

At MNIST's sizes, recording and walking autograd's graph (about fifteen nodes a step) is a fair
share of a step: taken by hand, a training step is about 1.1x (relu) and 1.25x (sigmoid) faster on
the CPU (``benchmarks/bench_training.py`` prints it as autograd/by-hand). The
gradients are bitwise autograd's: ``tests/test_backprop.py`` checks every activation and
``tests/test_equivalence.py`` whole runs against the tutorial's loop. Each formula is the one
``torch/csrc/autograd/FunctionsManual.cpp`` and ``derivatives.yaml`` give for that operation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

aten = torch.ops.aten

MEAN = 1  # ATen's enum value for reduction="mean", the loss the tutorial takes
IGNORE_INDEX = -100  # cross_entropy's default: no label is ignored

ActivationGradient = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
ACTIVATION_GRADIENTS: dict[type[nn.Module], ActivationGradient] = {
    # (layer, gradient of its output, its input, its output) -> gradient of its input
    nn.ReLU: lambda layer, grad, inputs, outputs: aten.threshold_backward(grad, outputs, 0),
    nn.Sigmoid: lambda layer, grad, inputs, outputs: aten.sigmoid_backward(grad, outputs),
    nn.Tanh: lambda layer, grad, inputs, outputs: aten.tanh_backward(grad, outputs),
    nn.GELU: lambda layer, grad, inputs, outputs: aten.gelu_backward(grad, inputs, approximate=layer.approximate),
}


@torch.no_grad()
def cross_entropy_gradients(model: nn.Sequential, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sets each parameter's ``.grad`` as ``zero_grad(set_to_none=True)`` and then
    ``F.cross_entropy(model(features), labels).backward()`` would, and returns that loss.
    ``model`` is a stack of ``nn.Linear`` layers and the activations above, as ``build_model`` makes."""
    activations = [features]
    for layer in model:
        activations.append(layer(activations[-1]))
    log_probabilities = torch.log_softmax(activations[-1], dim=1)
    loss, total_weight = aten.nll_loss_forward(log_probabilities, labels, None, MEAN, IGNORE_INDEX)
    grad = aten.nll_loss_backward(
        torch.ones_like(loss), log_probabilities, labels, None, MEAN, IGNORE_INDEX, total_weight
    )
    grad = aten._log_softmax_backward_data(grad, log_probabilities, 1, log_probabilities.dtype)
    for index, layer in reversed(list(enumerate(model))):
        inputs, outputs = activations[index], activations[index + 1]
        if isinstance(layer, nn.Linear):
            layer.weight.grad = grad.t().mm(inputs)
            layer.bias.grad = grad.sum(0)
            if index:  # the images need no gradient
                grad = grad.mm(layer.weight)
        else:
            grad = ACTIVATION_GRADIENTS[type(layer)](layer, grad, inputs, outputs)
    return loss
