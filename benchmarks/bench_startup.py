"""What a command costs to start: ``python -m stages predict`` on one image against a bare
``python -c "import torch"``, each a process of its own started as from a shell without the
numerics variables, taking turns. Run from a project after ``dvc repro`` (it needs the model).

    python -m benchmarks bench_startup --repeats 10
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

from benchmarks import common
from stages.core import numerics
from testing.synthetic import draw_digit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10, help="timed runs of each, alternating")
    parser.add_argument("--params", default="params.yaml", help="the project's (predict's)")
    args, _ = parser.parse_known_args()  # a benchmark's common arguments are no concern here
    shell = {key: value for key, value in os.environ.items() if key not in numerics.PORTABLE_ENV}
    with tempfile.TemporaryDirectory() as folder:
        image = Path(folder) / "seven.png"
        Image.fromarray((255 - draw_digit(7)).numpy()).save(image)  # dark ink on light paper
        commands = {
            "import torch": [sys.executable, "-c", "import torch"],
            "predict": [sys.executable, "-m", "stages", "predict", str(image), "--params", args.params],
        }
        runs = {
            name: lambda _, command=command: subprocess.run(command, env=shell, check=True, capture_output=True)
            for name, command in commands.items()
        }
        times = common.alternate(runs, args.repeats)
    bare, predict = (times[name] for name in commands)
    print(f"start-up, median of {args.repeats}: import torch {statistics.median(bare):.2f} s, predict of one image "
          f"{statistics.median(predict):.2f} s ({common.ratio(predict, bare):.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
