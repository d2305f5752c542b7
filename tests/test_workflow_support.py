"""The rules' wildcards, read by Snakemake itself, agree with the package's one definition of a job name.

The workflow is parsed in-process through Snakemake's API (no job runs) and each rule is asked whether
it produces a path: rule ``train``'s and ``evaluate_model``'s ``{job}`` must match exactly the names
that :meth:`mrsr.config.Job.from_name` accepts as a training job, and their seed and split folders
exactly what :mod:`mrsr.workflow_support` defines.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mrsr.config import Job, JobError, load_config, trainable
from mrsr.models import MODEL_REGISTRY
from mrsr.workflow_support import BY_PATIENT, seed_dir
from workflow_fixtures import RULE_COMMAND, STAGE_COMMANDS, code_deps


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


# --- what a code change reruns -----------------------------------------------------------------------

def _clear_source_caches() -> None:
    from mrsr import workflow_support as ws

    for cached in (ws.imported_modules, ws.import_closure, ws.command_sources, ws.source_digest):
        cached.cache_clear()


# Rules whose jobs each run one model: their code param is that model's (the job's, or bicubic).
PER_MODEL_RULES = {"train": None, "evaluate_model": None, "evaluate_bicubic": "bicubic"}


def test_each_rule_hashes_the_code_of_the_command_it_runs(workflow_rules):
    """Read by Snakemake: a rule running `mrsr COMMAND` lists code(COMMAND) as a param, and no other; a
    rule running one model per job lists that model's code (code(COMMAND, MODEL))."""
    from types import SimpleNamespace

    from mrsr.workflow_support import source_digest

    commands = {}
    for name, rule in workflow_rules.items():
        words = (rule.shellcmd or "").split()
        if words[:1] == ["mrsr"]:
            commands[name] = words[1]
            assert rule.params._names["code"], name
            code = rule.params.code
            if name in PER_MODEL_RULES:
                for job in ("srcnn_x2", "proposed_multi_x3"):
                    model = PER_MODEL_RULES[name] or Job.from_name(job).model
                    got = code(SimpleNamespace(job=job)) if callable(code) else code
                    assert got == source_digest(words[1], model), f"rule {name}: not code({words[1]!r}, {model!r})"
            else:
                assert code == source_digest(words[1]), f"rule {name}: its code param is not code({words[1]!r})"
        else:
            assert "code" not in rule.params._names, f"rule {name} runs no mrsr command but lists code"
    assert commands == RULE_COMMAND


def test_dvc_code_deps_are_the_sources_of_each_stages_commands(root):
    """dvc.yaml as written (tests/test_workflow.py checks the stages' commands against Snakemake's DAG)."""
    from mrsr.workflow_support import command_sources

    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    assert set(stages) == set(STAGE_COMMANDS)
    for name, commands in STAGE_COMMANDS.items():
        sources = {f"src/mrsr/{p}" for command in commands for p in command_sources(command)}
        assert code_deps(root, stages[name]["deps"]) == sources, f"stage {name}: code deps differ from {sorted(sources)}"


# Imports each module named on its command line with no mrsr module loaded (third-party ones stay
# cached, so one interpreter serves all) and prints, per module, the mrsr modules that import loaded.
LOADED_BY_IMPORT = """
import importlib, json, sys
loaded = {}
for name in sys.argv[1:]:
    for key in [k for k in sys.modules if k == "mrsr" or k.startswith("mrsr.")]:
        del sys.modules[key]
    importlib.import_module(name)
    loaded[name] = sorted(k for k in sys.modules if k == "mrsr" or k.startswith("mrsr."))
print(json.dumps(loaded))
"""


def test_the_closure_holds_every_module_a_command_imports(root):
    """Ground truth from Python itself: every mrsr module loaded by importing a command's module is in
    the closure read from the source (which also follows the deferred imports no import runs)."""
    from mrsr.cli import COMMANDS
    from mrsr.workflow_support import import_closure

    modules = sorted({module for module, _ in COMMANDS.values()})
    result = subprocess.run([sys.executable, "-c", LOADED_BY_IMPORT, *modules], capture_output=True, text=True,
                            cwd=root, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for module, loaded in json.loads(result.stdout).items():
        assert module in loaded and set(loaded) <= import_closure(module), (module, set(loaded) - import_closure(module))


def test_command_sources_follow_imports_and_leave_out_plumbing():
    from mrsr.cli import COMMANDS
    from mrsr.workflow_support import PLUMBING, command_sources

    assert {"data/patches.py", "metrics.py"} <= set(command_sources("evaluate"))  # degrade makes the LR inputs
    assert {"data/testset.py", "metrics.py"} <= set(command_sources("timing"))
    assert not {"report/table3.py", "evaluate.py"} & set(command_sources("timing"))  # the report's table; another command
    assert {"report/table3.py", "report/recipes.py", "paper.py", "report/templates/report.html.j2"} <= set(command_sources("report"))
    assert "metrics.py" in command_sources("train")
    assert command_sources("evaluate") == command_sources("summarize")  # one module, two commands
    plumbing = {m.split(".", 1)[-1].replace(".", "/") + ".py" for m in PLUMBING - {"mrsr"}} | {"__init__.py"}
    for command in COMMANDS:
        assert not plumbing & set(command_sources(command)), command


def test_every_package_file_is_a_module_or_declared_data(root):
    """A data file a module reads must be in PACKAGE_DATA, or editing it would rerun nothing."""
    from mrsr.workflow_support import PACKAGE, PACKAGE_DATA, _module_file

    declared = {(_module_file(module).parent / relative).resolve() for module, folders in PACKAGE_DATA.items()
                for relative in folders}
    for path in PACKAGE.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".py":
            # The schema's defaults reach each job through its rule's config params instead.
            assert path.name == "config.schema.yaml" or any(path.is_relative_to(d) for d in declared), path


# A one-line edit of a file (or, for modelspec.py, of one model's entry) -> the digests it must change,
# as (command, model) with model None for the digest over every model; every other digest of
# DIGESTS must stay. Written out by hand from what each command runs, not from command_sources.
DIGESTS = [(c, None) for c in ("ingest", "split", "patches", "train", "evaluate", "summarize", "timing", "report")] + [
    (c, m) for c in ("train", "evaluate") for m in ("srcnn", "proposed")] + [("evaluate", "bicubic")]
EVERY_MODEL = {("train", None), ("evaluate", None), ("summarize", None), ("timing", None), ("report", None)}
EDITS = {
    # one model's class: its own jobs and those over every model; no data preparation, no other model
    "models/srcnn.py": EVERY_MODEL | {("train", "srcnn"), ("evaluate", "srcnn")},
    "models/onednn.py": EVERY_MODEL | {("train", "proposed"), ("evaluate", "proposed")},  # the proposed net's CPU path
    # what every model shares
    "models/base.py": EVERY_MODEL | {(c, m) for c in ("train", "evaluate") for m in ("srcnn", "proposed")}
                      | {("evaluate", "bicubic")},
    # patches: making them, and the LR inputs that evaluation, timing and the report's figures degrade alike
    "data/patches.py": {("patches", None), ("evaluate", None), ("summarize", None), ("timing", None), ("report", None),
                        ("evaluate", "srcnn"), ("evaluate", "proposed"), ("evaluate", "bicubic")},
    # the report's own modules: the report alone
    "report/table3.py": {("report", None)},
    "report/figures.py": {("report", None)},
    "paper.py": {("report", None)},
}


def _digests(ws) -> dict[tuple[str, str | None], str]:
    ws.source_digest.cache_clear()
    return {key: ws.source_digest(*key) for key in DIGESTS}


def test_a_planted_edit_changes_exactly_the_digests_of_the_jobs_that_run_it(tmp_path, monkeypatch):
    """Each file of EDITS edited in a copy of the package: exactly the digests it names change. The
    same for one model's entry in the model spec, and for adding a model to it."""
    from mrsr import modelspec
    from mrsr import workflow_support as ws

    copy = tmp_path / "mrsr"
    shutil.copytree(ws.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(ws, "PACKAGE", copy)
    _clear_source_caches()
    try:
        before = _digests(ws)
        for relative, expected in EDITS.items():
            path = copy / relative
            original = path.read_bytes()
            path.write_bytes(original + b"\nEDITED = 1\n")
            changed = {key for key, digest in _digests(ws).items() if digest != before[key]}
            path.write_bytes(original)
            assert changed == expected, relative
        # The spec counts entry by entry: renaming SRCNN reruns its jobs and those over every model.
        specs = dict(modelspec.MODEL_SPECS)
        monkeypatch.setitem(modelspec.MODEL_SPECS, "srcnn", dataclasses.replace(specs["srcnn"], display="SRCNN-915"))
        changed = {key for key, digest in _digests(ws).items() if digest != before[key]}
        assert changed == EVERY_MODEL | {("train", "srcnn"), ("evaluate", "srcnn")}
        monkeypatch.setitem(modelspec.MODEL_SPECS, "srcnn", specs["srcnn"])
        monkeypatch.setitem(modelspec.MODEL_SPECS, "toy", modelspec.ModelSpec("toy", "mrsr.models.srcnn", "SRCNN", "Toy"))
        _clear_source_caches()
        changed = {key for key, digest in _digests(ws).items() if digest != before[key]}
        assert changed == EVERY_MODEL
    finally:
        _clear_source_caches()


def test_every_module_of_the_package_imports():
    """The fast tier loads every module (most through the tests of their command), and this says so
    for each: a module no test imports would be found here, not in a slow run."""
    import importlib

    from mrsr.workflow_support import PACKAGE

    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        importlib.import_module(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
