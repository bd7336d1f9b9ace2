"""The CUDA-graph step (stages/core/graphs.py): which runs capture it, and the warm-up it undoes. The
capture itself needs a GPU: benchmarks/gpu_check.sh runs the pipeline with it twice and compares."""

from __future__ import annotations

import copy

import pytest
import torch

from stages.core import graphs, runtime
from stages.core.models import build_model
from stages.core.optimizers import OptimizerSpec, build_optimizer
from stages.core.params import load_params
from stages.core.training import step
from tests.conftest import ROOT

CUDA, CPU = torch.device("cuda"), torch.device("cpu")
PARAMS = load_params(ROOT / "params.yaml")


@pytest.mark.parametrize("name", ["adam", "adamw", "rmsprop", "sgd", "momentum", "adagrad"])
def test_on_cuda_the_optimizers_that_can_keep_their_state_on_the_gpu_do(name):
    """Only where the step will be replayed: a capturable optimizer stepped eagerly is slower."""
    spec = PARAMS.optimizers[name]
    on_cuda = graphs.optimizer_spec(spec, CUDA, constant_rate=True)
    assert on_cuda.hyperparameters.get("capturable") is (True if spec.type in ("adam", "adamw", "rmsprop") else None)
    assert graphs.optimizer_spec(spec, CUDA, constant_rate=False) == spec  # a schedule: eager steps
    assert graphs.optimizer_spec(spec, CPU, constant_rate=True) == spec
    chosen = OptimizerSpec(name, spec.type, {**spec.hyperparameters, "capturable": False})
    assert graphs.optimizer_spec(chosen, CUDA, constant_rate=True) == chosen  # a user's own choice stands


def test_a_step_is_replayed_only_on_cuda_with_a_constant_rate_and_state_on_the_gpu():
    weights = [torch.nn.Parameter(torch.zeros(2))]
    sgd, adam = torch.optim.SGD(weights, lr=0.1), torch.optim.Adam(weights, capturable=True)
    assert graphs.replayable(CUDA, sgd, constant_rate=True)
    assert graphs.replayable(CUDA, adam, constant_rate=True)
    assert not graphs.replayable(CUDA, adam, constant_rate=False)  # a schedule changes the rate
    assert not graphs.replayable(CUDA, torch.optim.Adam(weights), constant_rate=True)  # step count on the host
    assert not graphs.replayable(CUDA, torch.optim.Adagrad(weights), constant_rate=True)
    assert not graphs.replayable(CPU, sgd, constant_rate=True)


@pytest.mark.parametrize("name", ["adam", "rmsprop", "momentum", "nesterov"])
def test_warm_up_steps_undone_leave_the_run_as_if_they_were_never_taken(name):
    """cnn_small brings batch-norm buffers and dropout; the optimizers bring lazily created state."""
    runtime.configure(threads=1, device="cpu", mode="portable")
    torch.manual_seed(0)
    warmed = build_model(PARAMS.architectures["cnn_small"])
    fresh = copy.deepcopy(warmed)
    spec = PARAMS.optimizers[name]
    warmed_optimizer, fresh_optimizer = (build_optimizer(spec, model.parameters()) for model in (warmed, fresh))
    features, labels = torch.rand(16, 784), torch.randint(0, 10, (16,))
    saved = graphs.snapshot(warmed, warmed_optimizer)
    warmed.train()
    for _ in range(graphs.WARM_UP_STEPS):
        step(warmed, warmed_optimizer, features.flip(0), labels.flip(0))
    graphs.restore(warmed, warmed_optimizer, saved)
    for model, optimizer in ((warmed, warmed_optimizer), (fresh, fresh_optimizer)):
        torch.manual_seed(1)  # the same dropout masks
        model.train()
        for _ in range(3):
            step(model, optimizer, features, labels)
    for (key, a), b in zip(warmed.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), key
    for a, b in zip(warmed_optimizer.state.values(), fresh_optimizer.state.values(), strict=True):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[key], b[key]) for key in a)
