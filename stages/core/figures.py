"""The pipeline's figures, as pure functions: tensors in, a matplotlib ``Figure`` out (no pyplot, so no
global state and no display), PNG bytes last, the same on a rerun.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import torch
from matplotlib.figure import Figure

from stages.core import atomic
from stages.core.models import NUM_CLASSES
from stages.core.training import EpochResult

DPI = 100
SAMPLES = 16
SHOWN_PREDICTIONS = 24
SHOWN_MISTAKES = 8
GRID_COLUMNS = 8
WRONG, RIGHT = "tab:red", "black"


def png_bytes(figure: Figure) -> bytes:
    """Every figure's bytes, stages' and tools' alike, of the data alone: no ``Software`` entry (it names
    matplotlib's version), no ``bbox_inches="tight"`` (the pixel size would depend on the text)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def write_png(path: str | os.PathLike, figure: Figure) -> None:
    """A tool's figure, replaced in one rename (a stage's goes to its ``atomic.Outputs`` with its results)."""
    atomic.write(path, png_bytes(figure))


def samples_figure(images: torch.Tensor, labels: torch.Tensor) -> Figure:
    """The first 16 images with their labels, as the tutorial looks at its data first."""
    figure = Figure(figsize=(6, 6.5), layout="constrained")
    figure.suptitle("First 16 training images")
    _image_grid(figure, images[:SAMPLES], [str(label) for label in labels[:SAMPLES].tolist()], [RIGHT] * SAMPLES, 4)
    return figure


def curves_figure(history: Sequence[EpochResult], kept_epoch: int | None = None) -> Figure:
    """Losses, and validation accuracy on axes of their own; a dotted line marks a kept epoch not the last."""
    figure = Figure(figsize=(10, 4), layout="constrained")
    loss, accuracy = figure.subplots(1, 2)
    epochs = [result.epoch for result in history]
    loss.plot(epochs, [result.train_loss for result in history], marker="o", label="train")
    loss.plot(epochs, [result.valid_loss for result in history], marker="o", label="validation")
    loss.set(title="Loss", xlabel="epoch", ylabel="cross-entropy loss")
    accuracy.plot(epochs, [result.valid_accuracy for result in history], marker="o", color="tab:green")
    accuracy.set(title="Validation accuracy", xlabel="epoch", ylabel="accuracy")
    for axes in (loss, accuracy):
        if kept_epoch is not None and kept_epoch != epochs[-1]:
            axes.axvline(kept_epoch, color="gray", linestyle=":", label=f"kept (epoch {kept_epoch})")
        axes.grid(alpha=0.3)
        axes.xaxis.get_major_locator().set_params(integer=True)
    loss.legend()
    return figure


def confusion_figure(counts: torch.Tensor) -> Figure:
    """``confusion_matrix``'s counts as a heatmap, each written in its cell: colour alone hides the few mistakes."""
    figure = Figure(figsize=(7, 6), layout="constrained")
    axes = figure.subplots()
    image = axes.imshow(counts.numpy(), cmap="Blues")
    figure.colorbar(image, ax=axes, label="images")
    threshold = counts.max().item() / 2
    for actual in range(NUM_CLASSES):
        for predicted in range(NUM_CLASSES):
            count = counts[actual, predicted].item()
            colour = "white" if count > threshold else "black"
            axes.text(predicted, actual, str(count), ha="center", va="center", fontsize=8, color=colour)
    digits = range(NUM_CLASSES)
    axes.set(xticks=digits, yticks=digits, xlabel="predicted", ylabel="actual")
    axes.set_title(f"Test set: {(counts.trace() / counts.sum()).item():.2%} correct")
    return figure


def predictions_figure(
    images: torch.Tensor, labels: torch.Tensor, predictions: torch.Tensor, confidences: torch.Tensor
) -> Figure:
    """The first test images with predicted and true label (mistakes in red), then the surest mistakes."""
    figure = Figure(figsize=(10, 7), layout="constrained")
    first, worst = figure.subfigures(2, 1, height_ratios=(3, 1.25))
    first.suptitle(f"First {SHOWN_PREDICTIONS} test images: predicted (true); red = misclassified")
    shown = range(min(SHOWN_PREDICTIONS, len(labels)))
    titles = [f"{predictions[i].item()} ({labels[i].item()})" for i in shown]
    _image_grid(first, images[: len(shown)], titles, [WRONG if predictions[i] != labels[i] else RIGHT for i in shown])
    mistakes = most_confident_mistakes(labels, predictions, confidences)
    worst.suptitle("Most confident mistakes: predicted (true), confidence" if mistakes else "No mistakes")
    if mistakes:
        titles = [f"{predictions[i].item()} ({labels[i].item()}) {confidences[i].item():.0%}" for i in mistakes]
        _image_grid(worst, images[mistakes], titles, [WRONG] * len(mistakes))
    return figure


def most_confident_mistakes(
    labels: torch.Tensor, predictions: torch.Tensor, confidences: torch.Tensor, count: int = SHOWN_MISTAKES
) -> list[int]:
    """Indices of misclassified images, surest first; ties go to the earlier image."""
    wrong = (predictions != labels).nonzero().flatten().tolist()
    return sorted(wrong, key=lambda index: (-confidences[index].item(), index))[:count]


def _image_grid(
    figure: Figure, images: torch.Tensor, titles: Sequence[str], colours: Sequence[str], columns: int = GRID_COLUMNS
) -> None:
    """Images as MNIST shows them (white ink on black), one title each, in rows of ``columns``."""
    rows = -(-len(images) // columns)
    for index, axes in enumerate(figure.subplots(rows, columns, squeeze=False).flat):
        axes.set_axis_off()
        if index < len(images):
            axes.imshow(images[index].numpy(), cmap="gray", vmin=0, vmax=255)
            axes.set_title(titles[index], fontsize=9, color=colours[index])
