"""Which package source each workflow step runs, and a digest of it.

Snakemake's own ``code`` rerun trigger sees only a rule's shell command, not the package it calls;
each rule therefore lists ``code(step)`` among its params, so a change to the code a step runs reruns
that step's jobs and no others. dvc.yaml's stages depend on the same files (tests/test_workflow.py
checks that each stage's deps are the union of its steps' sources), so `dvc repro` and Snakemake
agree on what a code change invalidates.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent

# step (a rule, or rules sharing code) -> files or folders under src/mrsr that it runs.
STEP_SOURCES: dict[str, tuple[str, ...]] = {
    "ingest": ("data/ingest.py", "data/dicom.py", "data/store.py", "data/tcia.py"),
    "split": ("data/split.py",),
    "patches": ("data/patches.py", "data/resize.py"),
    "train": ("train.py", "models", "data/resize.py"),
    "evaluate": ("evaluate.py", "metrics.py", "models", "data/resize.py"),
    "timing": ("timing.py", "benchmark.py", "table3.py", "models", "data/resize.py"),
    "report": ("report.py", "paper.py", "templates"),
}


def _files(relative: str) -> list[Path]:
    path = PACKAGE / relative
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return [path]


@lru_cache(maxsize=None)
def source_digest(step: str) -> str:
    """12 hex digits of SHA-256 over the names and bytes of the files ``step`` runs.

    Raises:
        KeyError: ``step`` is not in STEP_SOURCES.
    """
    digest = hashlib.sha256()
    for relative in STEP_SOURCES[step]:
        for path in _files(relative):
            digest.update(path.relative_to(PACKAGE).as_posix().encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]
