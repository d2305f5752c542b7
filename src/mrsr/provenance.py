"""What a workflow job depends on besides its files: the package code it runs and its source folder.

Snakemake's params rerun trigger compares, job by job, what each rule lists as params; two of them
come from here:

- Snakemake's own ``code`` trigger sees only a rule's shell command, not the package it calls; each
  rule lists ``code(step)`` among its params, so a change to the code a step runs reruns that
  step's jobs and no others. dvc.yaml's stages depend on the same files (tests/test_workflow.py
  checks that each stage's deps are the union of its steps' sources), so `dvc repro` and Snakemake
  agree on what a code change invalidates.
- The ingest rule's input is a folder of source data, whose own modification time says little
  (a fresh clone gives every file a new one): :func:`folder_fingerprint` (every file's relative
  path and size) reruns ingest when files are added, removed, renamed or resized.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent

# step (a rule, or rules sharing code) -> files or folders under src/mrsr that it runs.
STEP_SOURCES: dict[str, tuple[str, ...]] = {
    "ingest": ("data/ingest.py", "data/dicom.py", "data/dicom_header.py", "data/dicom_pixels.py", "data/store.py", "data/tcia.py", "limits.py"),
    "split": ("data/split.py",),
    "patches": ("data/patches.py", "data/resize.py", "data/split.py"),
    "train": ("train.py", "models", "data/resize.py"),
    "evaluate": ("evaluate.py", "metrics.py", "inference.py", "machine.py", "models", "data/resize.py",
                 "data/split.py"),
    "timing": ("timing.py", "inference.py", "machine.py", "table3.py", "models", "data/resize.py", "data/split.py"),
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


def folder_fingerprint(folder: str | os.PathLike) -> str:
    """12 hex digits of SHA-256 over every file's relative path and size under ``folder``.

    Sizes, not contents: hashing a user's folder of many GB at every workflow start would cost
    minutes, and a DICOM or NIfTI file edited in place to the very same size is rare. (DVC hashes
    the contents of the sample folder it tracks.) An unreadable sub-folder counts as its name.
    """
    digest = hashlib.sha256()
    for path, dirs, names in os.walk(folder, onerror=lambda exc: digest.update(f"!{exc.filename}".encode())):
        dirs.sort()
        for name in sorted(names):
            full = os.path.join(path, name)
            try:
                size = os.stat(full).st_size
            except OSError:
                size = -1
            digest.update(f"{os.path.relpath(full, folder)}\0{size}\0".encode())
    return digest.hexdigest()[:12]
