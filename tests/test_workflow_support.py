"""The rules' wildcards, read by Snakemake itself, agree with the package's one definition of a job name.

The workflow is parsed in-process through Snakemake's API (no job runs) and each rule is asked whether
it produces a path: rule ``train``'s and ``evaluate_model``'s ``{job}`` must match exactly the names
that :meth:`mrsr.config.Job.from_name` accepts as a training job, and their seed and split folders
exactly what :mod:`mrsr.workflow_support` defines.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mrsr.config import Job, JobError, load_config, trainable
from mrsr.models import MODEL_REGISTRY
from mrsr.workflow_support import BY_PATIENT, seed_dir


@pytest.fixture(scope="module")
def workflow_rules(root: Path) -> dict:
    """Rule name -> Snakemake's Rule object of the repository's workflow (default profile)."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import OutputSettings, ResourceSettings

    cwd = os.getcwd()
    try:
        with SnakemakeApi(OutputSettings()) as api:
            workflow = api.workflow(snakefile=root / "Snakefile", workdir=root,
                                    resource_settings=ResourceSettings(cores=1))._workflow
            yield {rule.name: rule for rule in workflow.rules}
    finally:
        os.chdir(cwd)  # the API changes into the workflow's folder


def candidate_names() -> list[str]:
    """Names around every registered job: each model with every strategy and none, scales 1-5, and
    malformed names."""
    strategies = {s for spec in MODEL_REGISTRY.values() for s in spec.strategies} | {None, "triple"}
    names = [Job(model, strategy, scale).name for model in [*MODEL_REGISTRY, "vdsr"] for strategy in strategies
             for scale in range(1, 6)]
    return names + ["Proposed_multi_x2", "proposed_multi", "proposed_multi_x", "proposed_multi_x22", "proposed__x2",
                    "proposed_multi_x2_x2", "x2", "srcnn-x2", "srcnn_x2/srcnn_x2", "seed0/srcnn_x2"]


def training_job(name: str) -> bool:
    """Whether ``name`` is a training job by the package's definition."""
    try:
        return trainable(Job.from_name(name).model)
    except JobError:
        return False


def test_job_wildcards_match_exactly_the_training_jobs_job_from_name_accepts(root, workflow_rules):
    profile = load_config(root / "config.yaml")["profile"]
    train, evaluate = workflow_rules["train"], workflow_rules["evaluate_model"]
    names = candidate_names()
    accepted = [n for n in names if training_job(n)]
    assert len(accepted) == sum(len(s.strategies) * len(s.scales) for m, s in MODEL_REGISTRY.items() if trainable(m))
    for name in names:
        expected = name in accepted
        weights = f"models/{profile}/{seed_dir(0)}/{name}.safetensors"
        per_image = f"results/{profile}/metrics/per_image/{seed_dir(0)}/{name}.csv"
        assert train.is_producer(weights) == expected, f"rule train and Job.from_name disagree on {name!r}"
        assert evaluate.is_producer(per_image) == expected, f"rule evaluate_model and Job.from_name disagree on {name!r}"


def test_seed_and_split_folders_are_the_packages(root, workflow_rules):
    train = workflow_rules["train"]
    models = f"models/{load_config(root / 'config.yaml')['profile']}"
    assert train.is_producer(f"{models}/{seed_dir(12)}/srcnn_x2.safetensors")
    assert train.is_producer(f"{models}/{BY_PATIENT}{seed_dir(0)}/proposed_multi_x2.safetensors")
    for wrong in ("seedx/srcnn_x2", "seed/srcnn_x2", "srcnn_x2", "by-series/seed0/srcnn_x2", "seed0/seed0/srcnn_x2"):
        assert not train.is_producer(f"{models}/{wrong}.safetensors"), wrong
