"""The model summary: torchsummary's table of layers, output shapes and parameter counts."""

from __future__ import annotations

import re
from collections import Counter

import pytest
import torch

from stages.core.models import build_model, summarize, summary_table
from stages.core.params import load_params
from tests.conftest import ROOT

ARCHITECTURES = load_params(ROOT / "params.yaml").architectures


@pytest.mark.parametrize(
    ("arch", "rows", "total"),
    [
        (
            "mlp_20_sigmoid",
            [("Linear-1", (20,), 15_700), ("Sigmoid-2", (20,), 0), ("Linear-3", (10,), 210)],
            "15,910",
        ),
        (
            "mlp_128_64_relu",
            [
                ("Linear-1", (128,), 100_480),
                ("ReLU-2", (128,), 0),
                ("Linear-3", (64,), 8_256),
                ("ReLU-4", (64,), 0),
                ("Linear-5", (10,), 650),
            ],
            "109,386",
        ),
        (
            "lenet5",
            [
                ("Unflatten-1", (1, 28, 28), 0),
                ("Conv2d-2", (6, 28, 28), 156),
                ("ReLU-3", (6, 28, 28), 0),
                ("MaxPool2d-4", (6, 14, 14), 0),
                ("Conv2d-5", (16, 10, 10), 2_416),
                ("ReLU-6", (16, 10, 10), 0),
                ("MaxPool2d-7", (16, 5, 5), 0),
                ("Flatten-8", (400,), 0),
                ("Linear-9", (120,), 48_120),
                ("ReLU-10", (120,), 0),
                ("Linear-11", (84,), 10_164),
                ("ReLU-12", (84,), 0),
                ("Linear-13", (10,), 850),
            ],
            "61,706",
        ),
    ],
)
def test_the_summary_lists_every_layer_and_the_tutorials_total(arch, rows, total):
    model = build_model(ARCHITECTURES[arch])
    assert [(layer.name, layer.output_shape, layer.num_params) for layer in summarize(model)] == rows
    table = summary_table(model)
    assert f"Total params: {total}" in table
    assert "Linear-1" in table and "[-1, 10]" in table


def test_the_train_stage_writes_the_summary_of_the_model_it_trained(reproduced):
    """Each layer's parameter count, output width and the total, read against the tensors of the
    model file that train wrote beside the summary, not against the code that wrote the summary."""
    summary = reproduced.read("models/summary.txt")
    weights = torch.load(reproduced.root / "models/model.pt", weights_only=True)["state_dict"]
    counts = Counter()  # layer position (1-based, as the summary names it) -> its parameters
    for name, tensor in weights.items():
        index, kind = name.split(".")
        if kind in ("weight", "bias"):  # parameters; batch norm's running statistics are buffers
            counts[int(index) + 1] += tensor.numel()
    rows = re.findall(r"^ +\w+-(\d+) +\[-1, (\d+)[\d, ]*\] +([\d,]+)$", summary, re.MULTILINE)
    listed = {int(position): (int(width), int(count.replace(",", ""))) for position, width, count in rows}
    assert sorted(listed) == list(range(1, len(listed) + 1)) and len(listed) >= len(counts) > 0
    for position, count in counts.items():
        assert listed[position] == (weights[f"{position - 1}.weight"].shape[0], count), position
    assert sum(count for _, count in listed.values()) == sum(counts.values())
    assert f"Total params: {sum(counts.values()):,}" in summary
