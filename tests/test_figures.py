"""The figures the stages draw: PNGs of a fixed size (byte-identical when a stage runs again:
test_pipeline.py)."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from stages.core.figures import most_confident_mistakes
from stages.core.results import confusion_matrix

# Pixel sizes (width, height): figure size in inches times the fixed dpi, whatever the data.
FIGURES = {
    "plots/samples.png": (600, 650),
    "plots/curves.png": (1000, 400),
    "plots/confusion.png": (700, 600),
    "plots/predictions.png": (1000, 700),
}


@pytest.mark.parametrize("path", FIGURES)
def test_each_figure_is_a_png_of_its_fixed_size(reproduced, path):
    with Image.open(reproduced.root / path) as image:
        assert image.format == "PNG"
        assert image.size == FIGURES[path]
        image.verify()


def test_the_confusion_matrix_counts_actual_by_predicted():
    labels, predictions = torch.tensor([0, 0, 1, 9]), torch.tensor([0, 1, 1, 0])
    counts = confusion_matrix(labels, predictions)
    assert counts.shape == (10, 10)
    assert (counts[0, 0], counts[0, 1], counts[1, 1], counts[9, 0]) == (1, 1, 1, 1)
    assert counts.sum() == 4


def test_the_most_confident_mistakes_come_first_and_ties_go_to_the_earlier_image():
    labels = torch.tensor([1, 2, 3, 4, 5])
    predictions = torch.tensor([1, 0, 0, 0, 0])
    confidences = torch.tensor([0.99, 0.6, 0.9, 0.6, 0.7])
    assert most_confident_mistakes(labels, predictions, confidences, count=3) == [2, 4, 1]


def test_dvc_plots_show_renders_every_figure_as_an_image(reproduced):
    result = reproduced.run("dvc", "plots", "show", "--json")
    plots = json.loads(result.stdout)["data"]
    assert all([entry["type"] for entry in plots[path]] == ["image"] for path in FIGURES)
