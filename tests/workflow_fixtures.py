"""Running the workflow in tests: Snakemake and DVC as subprocesses, a minimal copy of the repository
to run them in, and the mrsr command each rule runs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

SNAKEMAKE = [sys.executable, "-m", "snakemake"]
DVC = [sys.executable, "-m", "dvc"]


def run(cmd: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``cmd`` in ``cwd`` with this interpreter's scripts (snakemake, mrsr) first on PATH."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def copy_workflow(root: Path, work: Path, config: dict, dvc_profiles: dict[str, str] | None = None) -> None:
    """A minimal checkout of the workflow in ``work`` (its own git repo, for DVC) using ``config``.

    dvc.yaml's profiles are ``config`` (as config.yaml) and ``dvc_profiles`` (name -> file), on the sample."""
    work.mkdir(parents=True)
    for item in ("Snakefile", "workflow", "profiles", "dvc.yaml", "src", ".dvc", ".dvcignore"):
        src = root / item
        if src.is_dir():
            shutil.copytree(src, work / item, ignore=shutil.ignore_patterns("tmp", "cache", "__pycache__"))
        else:
            shutil.copy2(src, work / item)
    (work / "data").mkdir()
    shutil.copytree(root / "data" / "btp-sample", work / "data" / "btp-sample")
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    # dvc.yaml covers the profiles of this copy: config.yaml's (and those asked for), not the repository's.
    entries = {config["profile"]: "config.yaml", **(dvc_profiles or {})}
    lines = "".join(f"      {name}: {{config: {file}, data: data/btp-sample}}\n" for name, file in entries.items())
    dvc_yaml = (work / "dvc.yaml").read_text()
    start = dvc_yaml.index("  - profiles:\n") + len("  - profiles:\n")
    (work / "dvc.yaml").write_text(dvc_yaml[:start] + lines + dvc_yaml[dvc_yaml.index("stages:\n"):])
    assert run(["git", "init", "-q"], work).returncode == 0


def planned_jobs(work: Path, *args: str) -> dict[str, int]:
    """rule -> number of jobs a dry run of ``all`` plans (empty: nothing to do)."""
    result = run([*SNAKEMAKE, "all", "-n", "--cores", "2", *args], work)  # targets first: --configfile takes several
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout + result.stderr
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:")[1].split("Reasons:")[0]
    rows = [m.groups() for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)]
    return {rule: int(n) for rule, n in rows if rule not in ("total", "all")}


# Snakemake rule -> the mrsr command it runs, for every rule with outputs; tests/test_workflow_support.py
# checks it against each rule's shell command and code param.
RULE_COMMAND = {"download_tcia": "download", "ingest": "ingest", "split": "split", "patches": "patches", "train": "train",
                "evaluate_bicubic": "evaluate", "evaluate_model": "evaluate", "summarize": "summarize",
                "timing": "timing", "report": "report"}


def code_deps(root: Path, deps: list[str]) -> set[str]:
    """The files under src/mrsr that dvc.yaml ``deps`` name (a folder: every file in it)."""
    files = set()
    for dep in deps:
        if dep.startswith("src/"):
            path = root / dep
            found = [p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts] if path.is_dir() else [path]
            files.update(p.relative_to(root).as_posix() for p in found)
    return files

# dvc.yaml stage -> the mrsr commands of the rules its target runs (beyond earlier stages');
# tests/test_workflow.py checks it against Snakemake's DAG.
STAGE_COMMANDS = {"prepare": ("ingest", "split", "patches"), "train": ("train",), "evaluate": ("evaluate", "summarize"),
                  "timing": ("timing",), "report": ("report",)}
