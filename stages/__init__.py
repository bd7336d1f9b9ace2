"""DVC stages of the MNIST pipeline: each module is one stage, run as ``python -m stages.<name>``.

Importing this package pins torch's CPU numerics (``numerics: portable`` in params.yaml, the
default) before anything imports torch: every process that computes a result imports it first.
"""

from stages.core import numerics

numerics.pin_from_argv()
