"""The everyday DVC flow, as a user types it: push, clone, plain ``dvc pull``, ``dvc status``."""

from __future__ import annotations


def test_a_fresh_clone_pulls_everything_and_has_nothing_to_reproduce(project):
    """The single configuration's data and model are in the DVC cache and go to the remote; the
    grid keeps no model and its results are small files in git, so ``dvc pull`` never needs it."""
    project.run("dvc", "push")
    # The default remote is a folder beside the repository, shared by clones beside it.
    assert any((project.root.parent / "mnist-dvc-remote").iterdir())

    clone = project.root.parent / "clone"
    project.run("git", "clone", "-q", str(project.root), str(clone))
    cloned = type(project)(clone, project.env)
    assert cloned.run("dvc", "pull").returncode == 0
    assert (clone / "models/model.pt").read_bytes() == (project.root / "models/model.pt").read_bytes()
    assert cloned.run("dvc", "status").stdout.strip() == "Data and pipelines are up to date."
    for pipeline in ("dvc.yaml", "grid/dvc.yaml"):
        assert "Running stage" not in cloned.run("dvc", "repro", pipeline).stdout
