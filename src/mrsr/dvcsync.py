"""``mrsr dvc-commit``: record in dvc.lock the stages a Snakemake run left up to date.

dvc.yaml's stages call Snakemake targets, so the DAG is defined once (in the Snakefile). When the
workflow runs through Snakemake directly (the README's main job), this records the outputs it built
as the stages' results, so that `dvc status` then says the pipeline is up to date and `dvc push`
can share data and weights.

A stage is recorded only when Snakemake itself plans nothing for any of its outputs (one
``snakemake --summary all`` of the default profile): after a partial target (``snakemake
train_all``) the stages downstream are stale and stay unrecorded, so `dvc status` keeps saying so
instead of vouching for outputs built from older inputs. Runs of another profile than the one
dvc.yaml tracks record nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

from mrsr.errors import UsageError, existing_file


def tracked_profile(dvc_yaml: Path) -> str | None:
    """The profile whose folders dvc.yaml's stages name (its ``vars: [{profile: ...}]``)."""
    for entry in yaml.safe_load(dvc_yaml.read_text(encoding="utf-8")).get("vars", []):
        if isinstance(entry, dict) and "profile" in entry:
            return str(entry["profile"])
    return None


def snakemake_plan() -> dict[str, str]:
    """output file -> Snakemake's plan for it ("no update", "update pending", ...), default profile."""
    result = subprocess.run([sys.executable, "-m", "snakemake", "--summary", "all"],
                            capture_output=True, text=True, check=True)
    rows = [line.split("\t") for line in result.stdout.splitlines() if "\t" in line]
    header = rows[0]
    return {cols[0]: cols[header.index("plan")] for cols in rows[1:]}


def up_to_date_stages(outs_by_stage: dict[str, list[str]], plan: dict[str, str]) -> list[str]:
    """Stages whose every output exists and whose files Snakemake plans no update for.

    Args:
        outs_by_stage: stage name -> its outs (files or folders), as DVC resolved them.
        plan: output file -> Snakemake's plan (from ``snakemake --summary``).
    """
    done = []
    for stage, outs in outs_by_stage.items():
        files = [f for f in plan if any(f == o or f.startswith(o.rstrip("/") + "/") for o in outs)]
        if files and all(Path(o).exists() for o in outs) and all(plan[f] == "no update" for f in files):
            done.append(stage)
    return done


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dvc-yaml", default="dvc.yaml", type=existing_file,
                        help="DVC pipeline whose stages to commit (default: dvc.yaml)")
    parser.add_argument("--profile", help="the profile the workflow just ran (nothing is recorded for another "
                                          "profile than the one dvc.yaml tracks)")


def run(args: argparse.Namespace) -> int:
    from dvc.repo import Repo

    tracked = tracked_profile(args.dvc_yaml)
    if args.profile and args.profile != tracked:
        print(f"dvc-commit: dvc.yaml tracks profile {tracked!r}, not {args.profile!r}: nothing recorded")
        return 0
    with Repo(str(args.dvc_yaml.parent)) as repo:
        outs_by_stage = {stage.name: [str(o) for o in stage.outs] for stage in repo.index.stages}
    stages = up_to_date_stages(outs_by_stage, snakemake_plan())
    skipped = sorted(set(outs_by_stage) - set(stages))
    if skipped:
        print(f"dvc-commit: not recorded (Snakemake has work left for them): {', '.join(skipped)}")
    if not stages:
        return 0
    result = subprocess.run([sys.executable, "-m", "dvc", "commit", "--force", "--quiet", *stages])
    if result.returncode != 0:
        print("warning: `dvc commit` failed; the outputs are built but dvc.lock was not updated", file=sys.stderr)
    return result.returncode


def add_dvc_restore_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pull", action="store_true", help="fetch from the DVC remote first (`dvc pull`), "
                                                            "else restore from the local cache (`dvc checkout`)")


def run_dvc_restore(args: argparse.Namespace) -> int:
    """Restore the tracked outputs with DVC, then bring Snakemake's records in line with them.

    DVC restores files with new modification times and without Snakemake's records of the jobs
    that made them (a fresh clone has none; an older revision's files do not match the newer
    records). Once `dvc status` confirms that the files are what dvc.lock says the current
    configuration and code produce, ``snakemake --touch`` marks them up to date in DAG order and
    records each job's current params, so `snakemake -n all` has nothing to do and a later change
    still reruns exactly its jobs.
    """
    restore = [sys.executable, "-m", "dvc", "pull" if args.pull else "checkout", "--quiet"]
    if subprocess.run(restore).returncode != 0:
        raise UsageError(f"`{' '.join(restore[2:])}` failed; nothing else was changed")
    status = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], capture_output=True, text=True,
                            check=True)
    stale = sorted(json.loads(status.stdout or "{}"))
    if stale:
        raise UsageError(f"dvc status: {', '.join(stale)} not up to date with dvc.lock (changed configuration, "
                         "code or data); run `dvc repro` instead")
    touch = subprocess.run([sys.executable, "-m", "snakemake", "--touch", "--cores", "1", "--quiet", "all"])
    if touch.returncode != 0:
        print("error: `snakemake --touch all` failed; Snakemake may rerun restored jobs", file=sys.stderr)
        return 1
    print("dvc-restore: outputs restored and recorded; `snakemake -n all` has nothing to do")
    return 0
