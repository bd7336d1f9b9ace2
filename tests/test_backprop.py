"""Gradients taken by hand are autograd's, bit for bit, for every activation an architecture may name."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from stages.core import runtime
from stages.core.backprop import cross_entropy_gradients
from stages.core.models import ACTIVATIONS, Architecture, build_model


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_gradients_and_loss_are_bitwise_autograds(activation):
    runtime.configure(seed=0, threads=1, device="cpu")
    model = build_model(Architecture("mlp", (32, 16), activation))
    features, labels = torch.randn(37, 784), torch.randint(0, 10, (37,))  # a batch size that divides nothing

    loss = F.cross_entropy(model(features), labels)
    loss.backward()
    autograd = [parameter.grad.clone() for parameter in model.parameters()]
    by_hand_loss = cross_entropy_gradients(model, features, labels)

    assert torch.equal(by_hand_loss, loss.detach())
    for (name, parameter), expected in zip(model.named_parameters(), autograd, strict=True):
        assert parameter.grad is not None and parameter.grad.count_nonzero() > 0, name
        assert torch.equal(parameter.grad, expected), f"{name}: gradient differs from autograd's"


def test_gradients_replace_the_previous_steps():
    """As after ``zero_grad(set_to_none=True)``: nothing accumulates from one step to the next."""
    runtime.configure(seed=0, threads=1, device="cpu")
    model = build_model(Architecture("mlp", (8,), "relu"))
    first, second = ((torch.randn(5, 784), torch.randint(0, 10, (5,))) for _ in range(2))
    cross_entropy_gradients(model, *second)
    second_alone = [parameter.grad.clone() for parameter in model.parameters()]
    cross_entropy_gradients(model, *first)
    cross_entropy_gradients(model, *second)
    for parameter, grad in zip(model.parameters(), second_alone, strict=True):
        assert torch.equal(parameter.grad, grad)
