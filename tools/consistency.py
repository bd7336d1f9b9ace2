"""Whether a set of results belongs together, checked once for every tool that reports results.

A stage records where its results came from: ``logs/train.json`` the params digest and the SHA-256
of the model it wrote, ``logs/evaluate.json`` those of the model it tested, each grid run's
``log.json`` its recipe's digest, and every log the numerics fingerprint. A set belongs together
when these agree with each other and with what they claim to describe (the model file on disk,
the params.yaml beside them). Each check raises ``PipelineError`` with one line naming the files
that disagree and what to run, so a report never shows figures of one run beside another's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stages.core.errors import PipelineError
from stages.core.models import sha256
from stages.core.params import CATALOG, load_params, parse_params
from tools import vcs

TRAIN_LOG = "logs/train.json"
EVALUATE_LOG = "logs/evaluate.json"
MODEL = "models/model.pt"
PARAMS = vcs.PARAMS
DIGEST_CODE = ("stages/core",)
"""The code a params digest is computed by: a revision's recorded digest is compared with the digest
this code computes of its params.yaml only where this code is the revision's own."""
REPRO = "run `dvc repro`"


def check_single(
    train_log: Mapping[str, Any],
    evaluate_log: Mapping[str, Any],
    *,
    where: str = "",
    params_digest: str | None = None,
    model_sha256: str | None = None,
    fix: str = REPRO,
) -> None:
    """The single configuration's logs agree with each other on the params and the model; with
    ``params_digest`` (of params.yaml) and ``model_sha256`` (of models/model.pt), with those too.
    ``where`` follows each file name (``" at main"``); ``fix`` ends the line."""
    train, evaluate, params = f"{TRAIN_LOG}{where}", f"{EVALUATE_LOG}{where}", f"{PARAMS}{where}"
    for name, log in ((train, train_log), (evaluate, evaluate_log)):
        missing = [key for key in ("params_digest", "model_sha256") if not log.get(key)]
        if missing:
            raise PipelineError(f"{name} records no {' or '.join(missing)}, so its results cannot be checked: {fix}")
    if train_log["params_digest"] != evaluate_log["params_digest"]:
        raise PipelineError(
            f"{evaluate} tested a model of other params (digest {evaluate_log['params_digest']}) than {train} "
            f"trained (digest {train_log['params_digest']}): {fix}"
        )
    if train_log["model_sha256"] != evaluate_log["model_sha256"]:
        raise PipelineError(
            f"{evaluate} tested another model (sha256 {evaluate_log['model_sha256'][:12]}) than {train} "
            f"trained ({train_log['model_sha256'][:12]}): {fix}"
        )
    if params_digest is not None and params_digest != train_log["params_digest"]:
        raise PipelineError(
            f"{train} was made with other params than {params} (digest {train_log['params_digest']}, "
            f"{PARAMS}'s {params_digest}): {fix}"
        )
    if model_sha256 is not None and model_sha256 != train_log["model_sha256"]:
        raise PipelineError(
            f"{MODEL}{where} (sha256 {model_sha256[:12]}) is not the model {train} trained "
            f"({train_log['model_sha256'][:12]}): {fix} (or `dvc checkout {MODEL}`)"
        )


def check_workspace(root: str | Path = ".", params: str = PARAMS) -> tuple[dict[str, Any], dict[str, Any]]:
    """The workspace's single configuration: both logs, the model file when it is there, and the
    params digest of params.yaml as it is now. Returns the two logs."""
    root = Path(root)
    train_log, evaluate_log = (_json(root / path, path) for path in (TRAIN_LOG, EVALUATE_LOG))
    model = root / MODEL
    check_single(
        train_log,
        evaluate_log,
        params_digest=load_params(root / params).recipe().digest,
        model_sha256=sha256(model.read_bytes()) if model.is_file() else None,
    )
    return train_log, evaluate_log


def check_revision(rev: str, name: str, fix: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The single configuration as committed at ``rev`` (named ``name`` in messages): both logs, and
    params.yaml's digest where the code that computes it is the revision's own (otherwise a digest
    computed here could differ from the one the revision's code recorded, for the same params).
    The model is in DVC's cache, not in git, so it is not checked. Returns the two logs."""
    if rev == vcs.WORKSPACE:
        return check_workspace()
    where = f" at {name}"
    train_log, evaluate_log = (vcs.json_at(rev, path, name) for path in (TRAIN_LOG, EVALUATE_LOG))
    digest = None
    if not vcs.changed_since(rev, *DIGEST_CODE):
        digest = parse_params(vcs.params_at(rev, name), f"{PARAMS}{where}", f"{CATALOG}{where}").recipe().digest
    check_single(train_log, evaluate_log, where=where, params_digest=digest, fix=fix or f"run `dvc repro` on {name}")
    return train_log, evaluate_log


def check_grid_run(log: Mapping[str, Any], expected_digest: str, folder: str, recipe: str) -> None:
    """A grid run's log against the digest catalog.yaml's recipe gives for that seed now."""
    if log.get("params_digest") != expected_digest:
        raise PipelineError(
            f"{folder} was made with other params than catalog.yaml's grid.recipes.{recipe}: "
            "run `dvc repro grid/dvc.yaml`"
        )


def check_fingerprints(
    fingerprints: Mapping[str, str],
    fix: str = "rerun the recipes of the odd fingerprint on machines like the others (docs/many-hosts.md), "
    "or `dvc repro -f grid/dvc.yaml` on one machine",
) -> None:
    """Runs labelled by where they are (e.g. their folders): all computed with the same numerics
    fingerprint, or one line naming two that were not."""
    first = next(iter(fingerprints.items()), None)
    for label, fingerprint in fingerprints.items():
        if fingerprint != first[1]:
            raise PipelineError(
                f"{first[0]} was computed as {first[1]} but {label} as {fingerprint}, so their figures do not "
                f"compare bit for bit: {fix}"
            )


def _json(path: Path, name: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise PipelineError(f"{name} not found: {REPRO}") from None
    except ValueError as error:
        raise PipelineError(f"{name} is not valid JSON ({error}): {REPRO}") from None
