"""Stage ``split``: decode the IDX files; seeded train/validation split; the test set kept apart.

Writes ``train.pt``, ``valid.pt`` and ``test.pt`` (uint8 images, labels, and each image's index in
its source file), so later stages never split again, and a figure of the first training images.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stages.core import atomic, data, figures
from stages.core.errors import run_stage
from stages.core.params import check_unchanged, load_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--raw", type=Path, default=Path("data/raw"), help="folder with the IDX files")
    parser.add_argument("--out", type=Path, default=Path("data/split"), help="folder for the subsets")
    parser.add_argument("--samples", type=Path, default=Path("plots/samples.png"), help="figure of training images")
    args = parser.parse_args()
    params = load_params(args.params)
    train, valid = data.split_train_valid(
        data.read_mnist(args.raw, "train"), params.split.train_size, params.split.valid_size, params.split.seed
    )
    test = data.read_mnist(args.raw, "t10k")
    with atomic.Outputs() as outputs:
        for name, subset in zip(data.SUBSETS, (train, valid, test), strict=True):
            outputs.bytes(args.out / f"{name}.pt", data.subset_bytes(subset))
            print(f"{name}: {len(subset):,} images")
        outputs.bytes(args.samples, figures.png_bytes(figures.samples_figure(train.images, train.labels)))
        check_unchanged(params)


if __name__ == "__main__":
    run_stage(main)
