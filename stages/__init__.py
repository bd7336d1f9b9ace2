"""DVC stages of the MNIST pipeline: each module is one stage, run as ``python -m stages.<name>``.

Importing this package under DVC takes DVC's repository lock for the rest of the stage's run
(``errors.hold_dvc_lock``): here, a tenth of a second after DVC releases it, rather than after the
seconds torch takes to import. Numerics are pinned later, in ``runtime.configure``
(docs/reproducibility.md, where portable takes effect).
"""

from stages.core.errors import hold_dvc_lock

hold_dvc_lock()
