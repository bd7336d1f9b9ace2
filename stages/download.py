"""Stage ``download``: the four MNIST files, verified, into ``data/raw/``.

Mirrors are tried in order: ``MNIST_MIRRORS`` (comma-separated base URLs, ``file://`` allowed)
first, then the ``mirrors`` of data/mnist.yaml. A response is read no further than the MNIST
file it stands for, so a gzip bomb or an endless stream is skipped like any bad mirror. The files
are replaced together once all four are verified: a failed download keeps the previous ones.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stages.core import mirrors
from stages.core.errors import PipelineError, run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=Path("data/mnist.yaml"), help="checksums and mirrors")
    parser.add_argument("--out", type=Path, default=Path("data/raw"), help="folder for the IDX files")
    args = parser.parse_args()
    source = mirrors.load_source(args.source)

    def unchanged() -> None:  # DVC records the file as it is when the stage ends
        if mirrors.load_source(args.source) != source:
            raise PipelineError(f"{args.source} changed while this stage ran: nothing written; run it again")

    mirrors.download_all(source.files, mirrors.mirrors_to_try(source.mirrors), args.out, unchanged)


if __name__ == "__main__":
    run_stage(main)
