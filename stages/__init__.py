"""DVC stages of the MNIST pipeline: each module is one stage, run as ``python -m stages.<name>``.

Importing this package takes DVC's repository lock when DVC runs the stage (``errors.hold_dvc_lock``),
then pins torch's CPU numerics (``numerics: portable`` in params.yaml, the default) before anything
imports torch: every process that computes a result imports it first.
"""

from stages.core import numerics
from stages.core.errors import hold_dvc_lock

hold_dvc_lock()  # first: before params.yaml is read, and a tenth of a second after DVC unlocks, not torch's seconds
numerics.pin_from_argv()
