"""The whole pipeline as a user runs it: ``dvc repro``, experiments, comparisons, failures."""

from __future__ import annotations

import json


def test_stages_run_by_hand_learn_the_synthetic_digits(project):
    for stage in ("download", "split", "train", "evaluate"):
        project.stage(stage)
    train = json.loads(project.read("metrics/train.json"))
    assert train["valid_accuracy"] > 0.9
    evaluate = json.loads(project.read("metrics/evaluate.json"))
    assert evaluate["test_accuracy"] > 0.9
