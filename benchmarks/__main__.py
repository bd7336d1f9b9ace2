"""``python -m benchmarks <name> [arguments]``: a benchmark with the numerics of its ``--numerics``
or params.yaml set before torch loads, as ``python -m stages`` does for the stages."""

from stages.__main__ import run
from stages.core.errors import run_stage

COMMANDS = (
    "bench_cluster",
    "bench_grid",
    "bench_numerics",
    "bench_queue",
    "bench_startup",
    "bench_threads",
    "bench_training",
)

run_stage(lambda: run("benchmarks", COMMANDS))
