"""Classify digits with the trained model: image files of your own, or test-set images by index.

Not a DVC stage but a command, run from the project root after ``dvc repro``:

    python -m stages predict my_digit.png photo.jpg --index 2 --index 7 [--json] [--max-pixels N]

An image file may be any size up to --max-pixels, dark ink on light paper or light ink on dark,
or ink on a transparent background; it is brought to MNIST's form first
(stages/core/preprocess.py). A test-set image shows its true label too.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from stages.core import data, models, runtime
from stages.core.errors import PipelineError, run_stage
from stages.core.params import load_params
from stages.core.preprocess import MAX_PIXELS, load_digit
from stages.core.training import probabilities

TOP = 3


@dataclass(frozen=True)
class Prediction:
    input: str
    digit: int
    top: list[dict[str, int | float]]
    """The most probable digits, most probable first, as ``{"digit": d, "probability": p}``."""
    label: int | None = None
    """The true digit, where the input is a test-set image."""

    @classmethod
    def from_probabilities(cls, name: str, probs: torch.Tensor, label: int | None) -> Prediction:
        values, digits = probs.topk(TOP)
        top = [{"digit": d, "probability": p} for d, p in zip(digits.tolist(), values.tolist(), strict=True)]
        return cls(name, digits[0].item(), top, label)

    def line(self) -> str:
        truth = "" if self.label is None else f" (true {self.label})"
        top = ", ".join(f"{entry['digit']} {entry['probability']:.1%}" for entry in self.top)
        return f"{self.input}: {self.digit}{truth}   top {TOP}: {top}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="*", type=Path, help="image files (PNG, JPEG, ...)")
    parser.add_argument("--index", type=int, action="append", default=[], help="a test-set image, by position")
    parser.add_argument("--json", action="store_true", help="print JSON instead of one line per input")
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=MAX_PIXELS,
        help=f"refuse larger images, as a small file can decode into gigabytes (default {MAX_PIXELS:,}, Pillow's)",
    )
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--split", type=Path, default=Path("data/split"), help="folder of the split stage")
    parser.add_argument("--model", type=Path, default=Path("models/model.pt"))
    args = parser.parse_args()
    if not args.images and not args.index:
        parser.error("give at least one image file or --index")
    if args.max_pixels < 1:
        raise PipelineError(f"--max-pixels {args.max_pixels} is invalid: give a number of pixels >= 1")

    params = load_params(args.params)
    device = runtime.configure(params.threads, params.device, params.numerics)
    inputs = [(str(path), load_digit(path, args.max_pixels), None) for path in args.images]
    if args.index:
        test = data.load_subset(args.split / "test.pt")
        inputs += [(f"test[{index}]", *test_set_image(test, index)) for index in args.index]
    recipe = params.recipe()
    model = models.load_for(args.model, device, recipe.architecture, recipe.digest, params.source).model

    images = torch.stack([image for _, image, _ in inputs])
    probs = probabilities(model, data.as_features(images, device))
    predictions = [
        Prediction.from_probabilities(name, row, label) for (name, _, label), row in zip(inputs, probs, strict=True)
    ]
    if args.json:
        print(json.dumps([asdict(prediction) for prediction in predictions], indent=2))
    else:
        print("\n".join(prediction.line() for prediction in predictions))


def test_set_image(test: data.Subset, index: int) -> tuple[torch.Tensor, int]:
    """The image and its true label; an index outside the test set is the user's to fix."""
    if not 0 <= index < len(test):
        raise PipelineError(
            f"--index {index} is out of range: the test set has {len(test):,} images (0 to {len(test) - 1})"
        )
    return test.images[index], test.labels[index].item()


if __name__ == "__main__":
    run_stage(main)
