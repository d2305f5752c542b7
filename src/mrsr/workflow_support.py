"""What the Snakemake workflow (Snakefile, workflow/rules/*.smk) takes from the package, besides the
commands its rules run: the wildcard patterns and path segments of job outputs, the check that a run's
configuration is one profile file, and what a job depends on beyond its files.

- Job outputs: each (model, strategy, scale) is a training job named by :class:`mrsr.config.Job`
  (``proposed_multi_x2``); :func:`job_pattern` is the rules' ``{job}`` wildcard constraint, made
  from that one definition and the model spec (:mod:`mrsr.modelspec`), so a wildcard matches exactly the names
  ``Job.from_name`` accepts. Seeds and the split-leakage check add folder levels (:data:`SEED_DIR`,
  :data:`BY_PATIENT`) with constraints of their own (:data:`SEED_RE`, :data:`SPLIT_DIR_RE`).
- :func:`profile_file`: a run's configuration is exactly one profile file, which every job reads.
- Snakemake's params rerun trigger compares, job by job, what each rule lists as params; two of them
  come from here. Snakemake's own ``code`` trigger sees only a rule's shell command, not the package
  it calls; each rule lists ``code(command)`` (:func:`source_digest`) among its params, a digest of
  the files of :func:`command_sources`: the import closure of the module of the ``mrsr`` command it
  runs, derived from the source, so a change to the code a command runs reruns that command's jobs
  and no others. A rule whose jobs each run one model (train, evaluate) lists ``code(command,
  model)``: the closure through that model's module only, and of the model spec that model's entry,
  so editing one model's file reruns that model's jobs and those over every model. dvc.yaml's stages depend on the same files (tests/test_workflow.py checks that each
  stage's code deps are the union of its rules' command sources), so `dvc repro` and Snakemake
  agree on what a code change invalidates. The ingest rule's input is
  a folder of source data, whose own modification time says little (a fresh clone gives every file
  a new one): :func:`folder_fingerprint` (every file's relative path and size) reruns ingest when
  files are added, removed, renamed or resized.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from mrsr.config import ConfigError, Job
from mrsr.modelspec import MODEL_SPECS

# --- job outputs: wildcard patterns and path segments ---------------------------------------------

# Where one seed's run of a job lives: a folder level, so job names (proposed_multi_x2) stay the
# same everywhere: models/<profile>/seed0/proposed_multi_x2.safetensors,
# results/<profile>/metrics/per_image/seed0/proposed_multi_x2.csv. The workflow's rules use
# SEED_DIR as their path segment (its {seed} is the wildcard) and SEED_RE as its constraint.
SEED_DIR = "seed{seed}"
SEED_RE = "[0-9]+"
# The split-leakage check's files (config key ``leakage``) are the profile's own paths with
# BY_PATIENT inserted after the stage's folder: data/prepared/<profile>/by-patient/split.csv,
# models/<profile>/by-patient/seed0/proposed_multi_x2.safetensors. The rules' {splitdir} wildcard
# is "" (the profile's split) or BY_PATIENT; SPLIT_DIR_RE is its constraint.
BY_PATIENT = "by-patient/"
SPLIT_DIR_RE = f"({BY_PATIENT})?"


def seed_dir(seed: int) -> str:
    """The folder of one training seed's outputs, e.g. ``seed0``."""
    return SEED_DIR.format(seed=int(seed))


@lru_cache(maxsize=None)
def job_pattern() -> str:
    """The rules' ``{job}`` wildcard constraint: every training job's name, and nothing else.

    Each (model, strategy, scale) of the model spec whose model has learned parameters, named by
    :attr:`mrsr.config.Job.name`, so a path matches a rule exactly when ``Job.from_name`` accepts
    its stem as a training job (tests/test_workflow_support.py checks this through Snakemake).
    """
    names = [Job(model, strategy, scale).name for model, spec in MODEL_SPECS.items() if spec.trainable
             for strategy in spec.strategies for scale in spec.scales]
    return "|".join(map(re.escape, sorted(names)))


# --- the profile file -------------------------------------------------------------------------------

def profile_file(configfiles: list[Path], overrides: dict[str, Any], config: dict[str, Any]) -> str:
    """The one file that states a Snakemake run's configuration, which every job then reads.

    Args:
        configfiles: the run's ``--configfile`` paths (empty: config.yaml, the default profile).
        overrides: the run's ``--config key=value`` settings.
        config: the configuration Snakemake built from them.

    Raises:
        ConfigError: several profile files or command-line overrides (a profile is a complete
            statement: write one file), or ``config`` differs from the file.
    """
    if overrides:
        raise ConfigError(f"--config {' '.join(sorted(overrides))}=...: a profile is one complete file; copy "
                          "config.yaml, edit it and pass it with --configfile instead")
    if len(configfiles) > 1:
        raise ConfigError(f"--configfile {' '.join(map(str, configfiles))}: give one profile file (a complete "
                          "configuration), not several to merge")
    path = str(configfiles[0]) if configfiles else "config.yaml"
    if yaml.safe_load(Path(path).read_text(encoding="utf-8")) != config:
        raise ConfigError(f"config file {path}: Snakemake's configuration differs from the file")
    return os.path.relpath(path) if Path(path).is_absolute() and Path(path).is_relative_to(Path.cwd()) else path


# --- what a job depends on besides its files ------------------------------------------------------

PACKAGE = Path(__file__).resolve().parent

# Modules left out of every command's code set, so editing them reruns nothing: none can change what
# a command writes. ``mrsr`` (the package's __init__: the version string, which no output records),
# mrsr.cli (finds the command's module and calls it) and mrsr.errors (exception classes and argparse
# checks of paths: they decide whether a command runs, never what it writes). mrsr.io is not here:
# its write_json and write_csv decide the bytes of the outputs.
PLUMBING = frozenset({"mrsr", "mrsr.cli", "mrsr.errors"})

# Files other than Python modules that a module reads when it runs (a folder: every file in it),
# relative to the module's package folder. The config schema (config.schema.yaml) is not one: the
# defaults it fills in reach each job through the config sections its rule lists as params, and
# dvc.yaml's stages depend on it by name (tests/test_workflow_support.py checks that every other
# file of the package is here).
# Relative to the folder of the module's file (a package's: its own folder). The report's template
# (mrsr.report, a package: src/mrsr/report/templates) is read by mrsr report only; the shipped networks
# (mrsr.zoo's weights, sidecars and manifest) by mrsr upscale and mrsr models only.
PACKAGE_DATA: dict[str, tuple[str, ...]] = {"mrsr.report": ("templates",), "mrsr.zoo": (".",)}


def _module_file(module: str) -> Path | None:
    """The source file of ``module`` (``mrsr.data.split``) under :data:`PACKAGE`; None if not a module."""
    folder = PACKAGE.joinpath(*module.split(".")[1:])
    for candidate in (folder / "__init__.py", folder.with_name(folder.name + ".py")):
        if candidate.is_file():
            return candidate
    return None


def _with_parents(module: str) -> set[str]:
    """``module`` and the packages above it (importing mrsr.data.split runs mrsr/data/__init__.py too)."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


# The model package imports each model's module by the name its spec entry gives
# (mrsr.models.MODEL_REGISTRY), which no import statement shows: these are its edges.
MODELS_PACKAGE = "mrsr.models"
SPEC_MODULE = "mrsr.modelspec"


@lru_cache(maxsize=None)
def imported_modules(module: str, model: str | None = None) -> frozenset[str]:
    """The modules of the package that ``module``'s source imports, anywhere in it.

    Read from the source with :mod:`ast`, not by importing it: ``import mrsr.x``, ``from mrsr.x
    import y`` (with ``mrsr.x.y`` when that is a module) and ``from mrsr import x``, at module level
    or inside functions (a deferred import runs when the function does), with the packages above
    each; for :data:`MODELS_PACKAGE`, the model modules its registry loads from
    :data:`mrsr.modelspec.MODEL_SPECS`. Relative imports are not followed: the package has none
    (tests/test_workflow_support.py compares the result with what importing loads).

    Args:
        module: a module of the package, e.g. ``mrsr.evaluate``.
        model: for one model's jobs: the registry's edge to that model's module only (a module that
            imports another model's module by name still depends on it); None: to every model's.
    """
    path = _module_file(module)
    if path is None:
        raise KeyError(f"{module}: no such module in {PACKAGE}")
    found: set[str] = set()
    if module == MODELS_PACKAGE:
        found.update(spec.module for name, spec in MODEL_SPECS.items() if model in (None, name))
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "mrsr")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "mrsr":
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names
                         if _module_file(f"{node.module}.{alias.name}") is not None)
    return frozenset(m for name in found for m in _with_parents(name))


@lru_cache(maxsize=None)
def import_closure(module: str, model: str | None = None) -> frozenset[str]:
    """``module``, its packages, and every package module they import, transitively.

    Args:
        module: a module of the package, e.g. ``mrsr.evaluate``.
        model: for one model's jobs (see :func:`imported_modules`); None: for any job.
    """
    seen: set[str] = set()
    todo = list(_with_parents(module))
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(imported_modules(name, model))
    return frozenset(seen)


def _command_modules(command: str, model: str | None) -> frozenset[str]:
    """The modules whose change can change what ``mrsr <command>`` writes (for ``model``'s jobs only,
    when given): the command module's import closure less :data:`PLUMBING`, and without :data:`SPEC_MODULE` when the command builds no model
    (then the spec only validates its configuration, as mrsr.errors's checks decide whether it runs)."""
    from mrsr.cli import COMMANDS

    modules = import_closure(COMMANDS[command][0], model) - PLUMBING
    return modules if MODELS_PACKAGE in modules else modules - {SPEC_MODULE}


@lru_cache(maxsize=None)
def command_sources(command: str, model: str | None = None) -> tuple[str, ...]:
    """The files under src/mrsr whose change can change what ``mrsr <command>`` writes (for ``model``'s
    jobs, when given), relative to the package folder and sorted: the files of :func:`_command_modules`
    and the :data:`PACKAGE_DATA` of those modules.

    Args:
        command: a command of mrsr.cli.COMMANDS, e.g. ``evaluate``.
        model: a model of :data:`mrsr.modelspec.MODEL_SPECS`: the sources of that model's jobs only,
            so editing one model's file reruns that model's jobs; None: of every job of the command.

    Raises:
        KeyError: ``command`` is not an mrsr command.
    """
    files: set[Path] = set()
    for module in _command_modules(command, model):
        path = _module_file(module)
        files.add(path)
        for relative in PACKAGE_DATA.get(module, ()):
            data = path.parent / relative
            files.update(p for p in data.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return tuple(sorted(p.relative_to(PACKAGE).as_posix() for p in files))


@lru_cache(maxsize=None)
def source_digest(command: str, model: str | None = None) -> str:
    """12 hex digits of SHA-256 over the code ``mrsr <command>`` runs for ``model``'s jobs (None: for
    any job): the names and bytes of its :func:`command_sources`, except that the model spec counts as
    the entries the jobs use (``model``'s; None: all, in order), so adding or editing one model's
    entry reruns only that model's jobs and those that list every model (summarize, timing, report).

    Raises:
        KeyError: ``command`` is not an mrsr command, or ``model`` not a registered model.
    """
    spec_file = _module_file(SPEC_MODULE).relative_to(PACKAGE).as_posix()
    digest = hashlib.sha256()
    for relative in command_sources(command, model):
        digest.update(relative.encode() + b"\0")
        if relative == spec_file:
            specs = [MODEL_SPECS[model]] if model else list(MODEL_SPECS.values())
            digest.update(json.dumps([dataclasses.asdict(spec) for spec in specs], sort_keys=True).encode())
        else:
            digest.update((PACKAGE / relative).read_bytes())
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
