"""Helpers for tests that run Snakemake on a copy of the workflow (not a test module: tests import it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def run(cmd: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def copy_workflow(root: Path, work: Path, config: dict) -> None:
    """A minimal checkout of the workflow in ``work`` (its own git repo, for DVC) using ``config``."""
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
    # dvc.yaml tracks the profile named in its vars: the one this copy's config.yaml runs.
    dvc_yaml = (work / "dvc.yaml").read_text()
    (work / "dvc.yaml").write_text(dvc_yaml.replace("  - profile: quick\n", f"  - profile: {config['profile']}\n"))
    assert run(["git", "init", "-q"], work).returncode == 0
