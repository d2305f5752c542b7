"""Where a result came from: the git revision of the code, the versions of the libraries and the
machine. Training records the revision in each weights sidecar; the report prints all three.
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from mrsr.machine import cpu_model

LIBRARIES = ["torch", "numpy", "scikit-image", "pandas", "pydicom", "snakemake", "dvc", "jinja2", "safetensors", "nibabel"]


def git_revision(cwd: str | Path | None = None) -> str:
    """The current git commit (with ``-dirty`` when the tree has changes), or ``unknown``."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True
        ).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = "not installed"
    return out


def hardware() -> dict[str, str]:
    """The machine the report was built on: CPU model (:func:`mrsr.machine.cpu_model`), cores, platform."""
    return {"cpu": cpu_model(), "cores": str(os.cpu_count()), "machine": platform.machine(),
            "system": platform.platform()}
