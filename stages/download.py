"""Stage ``download``: the four MNIST files, verified, into ``data/raw/``.

Mirrors are tried in order: ``MNIST_MIRRORS`` (comma-separated base URLs, ``file://`` allowed)
first, then ``mnist_mirrors`` from catalog.yaml. A response is read no further than the MNIST
file it stands for, so a gzip bomb or an endless stream is skipped like any bad mirror. The files
are replaced together once all four are verified: a failed download keeps the previous ones.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stages.core import mirrors
from stages.core.errors import run_stage
from stages.core.params import check_unchanged, load_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", type=Path, default=Path("data/raw"), help="folder for the IDX files")
    args = parser.parse_args()
    params = load_params(args.params)
    urls = mirrors.mirrors_to_try(params.download.mirrors)
    mirrors.download_all(params.download.sha256, urls, args.out, lambda: check_unchanged(params))


if __name__ == "__main__":
    run_stage(main)
