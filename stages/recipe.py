"""Stage ``recipe``: the catalog.yaml entries params.yaml chooses, checked, in one file DVC tracks.

Reads params.yaml and catalog.yaml as every stage does, so an unknown ``arch``, ``optimizer`` or
``schedule`` (a typo in ``dvc exp run -S``) is one line naming the choices, before any training;
then writes the chosen architecture, optimizer and schedule under fixed keys (``recipe.yaml``).
The train and evaluate stages track that file's keys as params rather than catalog.yaml's
``optimizers.${optimizer}``: DVC, looking up an entry that is not there, would fail first with a
message that names no choices; and an experiment's row in ``dvc exp show`` has ``optimizer.lr``
whichever optimizer it chose, not a column per optimizer.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stages.core.errors import run_stage
from stages.core.params import check_unchanged, load_params
from stages.core.schema import write_yaml

CHOSEN = ("architecture", "optimizer", "schedule")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", type=Path, default=Path("recipe.yaml"), help="the chosen entries, for DVC")
    args = parser.parse_args()

    params = load_params(args.params)
    resolved = params.recipe().as_dict()
    # The names are params.yaml's own keys (its columns already); here only what the entries hold.
    chosen = {key: {name: value for name, value in resolved[key].items() if name != "name"} for key in CHOSEN}
    check_unchanged(params)
    write_yaml(args.out, chosen)
    print(f"{args.out}: architecture {params.arch}, optimizer {params.optimizer}, schedule {params.schedule}")


if __name__ == "__main__":
    run_stage(main)
