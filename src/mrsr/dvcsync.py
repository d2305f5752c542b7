"""``mrsr dvc-commit``: record the workflow's outputs in dvc.lock after a Snakemake run.

dvc.yaml's stages call Snakemake targets, so the DAG is defined once (in the Snakefile). When the
workflow runs through Snakemake directly (the README's main job), this records the outputs it built
as the stages' results, so that `dvc status` then says the pipeline is up to date and `dvc push`
can share data and weights.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import yaml

from mrsr.errors import existing_file


def stage_names(dvc_yaml: str = "dvc.yaml") -> list[str]:
    with open(dvc_yaml, encoding="utf-8") as fh:
        return list(yaml.safe_load(fh)["stages"])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dvc-yaml", default="dvc.yaml", type=existing_file,
                        help="DVC pipeline whose stages to commit (default: dvc.yaml)")


def run(args: argparse.Namespace) -> int:
    stages = stage_names(args.dvc_yaml)
    result = subprocess.run([sys.executable, "-m", "dvc", "commit", "--force", "--quiet", *stages])
    if result.returncode != 0:
        print("warning: `dvc commit` failed; the outputs are built but dvc.lock was not updated", file=sys.stderr)
    return result.returncode
