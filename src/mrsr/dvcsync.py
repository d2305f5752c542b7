"""``mrsr dvc-commit``: record in dvc.lock the stages a Snakemake run left up to date.

dvc.yaml's stages call Snakemake targets, so the DAG is defined once (in the Snakefile). When the
workflow runs through Snakemake directly (the README's main job), this records the outputs it built
as the stages' results, so that `dvc status` then says the pipeline is up to date and `dvc push`
can share data and weights.

dvc.yaml's stages are ``foreach`` stages over its ``profiles`` (``STAGE@NAME``, one line per profile:
``NAME: {config: FILE, data: FOLDER}``); a run records only the stages of the profile it ran. A
stage is recorded only when Snakemake itself plans nothing for any of its outputs (one ``snakemake
--summary all`` of that profile): after a partial target (``snakemake train_all``) the stages
downstream are stale and stay unrecorded, so `dvc status` keeps saying so instead of vouching for
outputs built from older inputs. A run of a profile file that dvc.yaml does not list records nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

from mrsr.errors import UsageError, existing_file


def dvc_profiles(dvc_yaml: Path) -> dict[str, dict[str, str]]:
    """dvc.yaml's profiles (its ``vars: [{profiles: ...}]``): name -> {config: file, data: folder}."""
    for entry in yaml.safe_load(dvc_yaml.read_text(encoding="utf-8")).get("vars", []):
        if isinstance(entry, dict) and "profiles" in entry:
            return {str(name): dict(item) for name, item in entry["profiles"].items()}
    return {}


def profile_name(dvc_yaml: Path, configfile: str | Path) -> str | None:
    """The name under which dvc.yaml lists the profile file ``configfile`` (None: not listed).

    Raises:
        UsageError: the entry's name is not the file's ``profile:`` (the stages' outs would name
            other folders than the ones the workflow writes).
    """
    root = dvc_yaml.resolve().parent
    for name, item in dvc_profiles(dvc_yaml).items():
        if (root / item["config"]).resolve() == Path(configfile).resolve():
            declared = (yaml.safe_load(Path(configfile).read_text(encoding="utf-8")) or {}).get("profile")
            if declared != name:
                raise UsageError(f"{dvc_yaml}: profiles.{name} names {item['config']}, whose profile is {declared!r}; "
                                 f"the entry's name must be the file's profile: name")
            return name
    return None


def snakemake_plan(configfile: str | Path) -> dict[str, str]:
    """output file -> Snakemake's plan for it ("no update", "update pending", ...), for that profile."""
    result = subprocess.run([sys.executable, "-m", "snakemake", "--summary", "all", "--configfile", str(configfile)],
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
    parser.add_argument("--configfile", default="config.yaml", type=existing_file,
                        help="the profile file the workflow just ran (default: config.yaml); its stages are "
                             "recorded when dvc.yaml lists it under profiles")


def run(args: argparse.Namespace) -> int:
    from dvc.repo import Repo

    name = profile_name(args.dvc_yaml, args.configfile)
    if name is None:
        print(f"dvc-commit: dvc.yaml lists no profile with file {args.configfile}: nothing recorded "
              "(docs/workflow.md: add it under profiles)")
        return 0
    with Repo(str(args.dvc_yaml.parent)) as repo:
        outs_by_stage = {stage.name: [str(o) for o in stage.outs] for stage in repo.index.stages
                         if stage.name.endswith(f"@{name}")}
    stages = up_to_date_stages(outs_by_stage, snakemake_plan(args.configfile))
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
    parser.add_argument("--configfile", default="config.yaml", type=existing_file,
                        help="the profile file whose outputs to restore (default: config.yaml), listed under "
                             "dvc.yaml's profiles")


def run_dvc_restore(args: argparse.Namespace) -> int:
    """Restore one profile's tracked outputs with DVC, then bring Snakemake's records in line with them.

    DVC restores files with new modification times and without Snakemake's records of the jobs
    that made them (a fresh clone has none; an older revision's files do not match the newer
    records). Once `dvc status` confirms that the files are what dvc.lock says the current
    configuration and code produce, ``snakemake --touch`` marks them up to date in DAG order and
    records each job's current params, so `snakemake -n all` has nothing to do and a later change
    still reruns exactly its jobs.
    """
    name = profile_name(Path("dvc.yaml"), args.configfile)
    if name is None:
        raise UsageError(f"dvc.yaml lists no profile with file {args.configfile}; nothing to restore")
    stages = [f"{stage}@{name}" for stage in yaml.safe_load(Path("dvc.yaml").read_text(encoding="utf-8"))["stages"]]
    restore = [sys.executable, "-m", "dvc", "pull" if args.pull else "checkout", "--quiet", *stages]
    if subprocess.run(restore).returncode != 0:
        raise UsageError(f"`{' '.join(restore[2:5])} ...` failed; nothing else was changed")
    status = subprocess.run([sys.executable, "-m", "dvc", "status", "--json", *stages], capture_output=True,
                            text=True, check=True)
    stale = sorted(json.loads(status.stdout or "{}"))
    if stale:
        raise UsageError(f"dvc status: {', '.join(stale)} not up to date with dvc.lock (changed configuration, "
                         f"code or data); run `dvc repro report@{name}` instead")
    # --forceall: every job records its params, not only those whose restored files look stale by their
    # modification times (a job without a record is never rerun for a changed setting)
    touch = subprocess.run([sys.executable, "-m", "snakemake", "--touch", "--forceall", "--cores", "1", "--quiet", "all",
                            "--configfile", str(args.configfile)])
    if touch.returncode != 0:
        print("error: `snakemake --touch all` failed; Snakemake may rerun restored jobs", file=sys.stderr)
        return 1
    print(f"dvc-restore: outputs of profile {name} restored and recorded; `snakemake -n all` has nothing to do")
    return 0
