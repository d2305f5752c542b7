"""Profiles, provenance and DVC/Snakemake agreement, through the real tools.

- A profile is a complete statement: Snakemake's own config (after its merge) is exactly the profile
  file with the schema's defaults filled in, as every job loads it, for both shipped profiles, and the
  jobs read that file.
- A dry run of another profile changes nothing a finished run's jobs read.
- After a change to one experiment, `dvc repro` reruns that experiment's jobs and what depends on
  them, and leaves every other weight file byte-identical; files restored with new modification
  times (dvc checkout; a fresh clone's `mrsr dvc-restore --pull`) rerun nothing; a partial
  Snakemake target exits 0 and leaves stale stages unrecorded.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mrsr.config import load_config
from workflow_fixtures import DVC, SNAKEMAKE, copy_workflow, planned_jobs, run

def snapshot(work: Path, folders: tuple[str, ...] = ("data/prepared", "models", "results", "reports")) -> dict:
    """path -> (mtime_ns, sha256) of every file under ``folders``."""
    out = {}
    for folder in folders:
        for path in sorted((work / folder).rglob("*")):
            if path.is_file():
                out[str(path.relative_to(work))] = (path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
    return out


# Appended to the copied Snakefile: writes the `config` Snakemake built (after its own merge of
# --configfile over the workflow's configfile:, and the Snakefile's validation, which fills in the
# schema's defaults), the dict every rule's params use.
DUMP_RULE = """

rule dump_config:
    output:
        "snakemake-config.yaml",
    run:
        import yaml

        with open(output[0], "w") as fh:
            yaml.safe_dump(config, fh)
"""


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["config.yaml", "config/paper.yaml"])
def test_snakemake_config_is_exactly_the_profile_file(root, tmp_path, profile):
    work = tmp_path / "repo"
    copy_workflow(root, work, yaml.safe_load((root / "config.yaml").read_text()))
    (work / "config").mkdir()
    shutil.copy(root / "config/paper.yaml", work / "config/paper.yaml")
    with open(work / "Snakefile", "a") as fh:
        fh.write(DUMP_RULE)
    extra = [] if profile == "config.yaml" else ["--configfile", profile]
    result = run([*SNAKEMAKE, "snakemake-config.yaml", "--cores", "1", *extra], work)
    assert result.returncode == 0, result.stderr[-3000:]
    given = yaml.safe_load((work / profile).read_text())
    # nothing leaks in, nothing lost: the file as a job's load_config reads it (the schema's defaults filled in)
    assert yaml.safe_load((work / "snakemake-config.yaml").read_text()) == load_config(work / profile)
    # ... and the jobs read that very file.
    dry = run([*SNAKEMAKE, "all", "-n", "-p", "--forceall", *extra], work)
    commands = [line for line in dry.stdout.splitlines() if " mrsr train " in line]
    assert commands and all(f"--config {profile} " in line for line in commands)
    assert all(f"models/{given['profile']}/" in line for line in commands)
    if profile != "config.yaml":
        assert "residual_init" not in str(given["model"])  # the quick profile's courtesy init stays there


@pytest.mark.slow
def test_overrides_and_merged_profiles_are_refused(root, tmp_path, default_config):
    work = tmp_path / "repo"
    copy_workflow(root, work, default_config)
    (work / "other.yaml").write_text(yaml.safe_dump(default_config))
    for extra, message in ((["--config", "profile=x"], "a profile is one complete file"),
                           (["--configfile", "config.yaml", "other.yaml"], "give one profile file")):
        result = run([*SNAKEMAKE, "all", "-n", *extra], work)
        text = result.stdout + result.stderr
        assert result.returncode != 0 and message in text, text


def test_a_job_refuses_a_profile_edited_after_planning(root, tmp_path, default_config):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(default_config))
    env = {**os.environ, "MRSR_CONFIG_SHA256": hashlib.sha256(path.read_bytes()).hexdigest()}
    ok = subprocess.run([sys.executable, "-m", "mrsr.cli", "check-config", str(path)], env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    path.write_text(path.read_text() + "# edited\n")
    edited = subprocess.run([sys.executable, "-m", "mrsr.cli", "check-config", str(path)], env=env, capture_output=True, text=True)
    assert edited.returncode == 2 and "changed after this workflow run was planned" in edited.stdout + edited.stderr


@pytest.mark.slow
def test_a_user_profile_is_complete_too(root, tmp_path, default_config):
    """A user's profile missing a section is refused (no silent fill-in from config.yaml)."""
    work = tmp_path / "repo"
    copy_workflow(root, work, default_config)
    mine = copy.deepcopy(default_config)
    mine["profile"] = "mine"
    del mine["evaluate"]
    (work / "mine.yaml").write_text(yaml.safe_dump(mine))
    result = run([*SNAKEMAKE, "all", "-n", "--configfile", "mine.yaml"], work)
    text = result.stdout + result.stderr
    assert result.returncode != 0 and "evaluate" in text and "missing key" in text, text[-2000:]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, default_config) -> Path:
    """A finished tiny run with two experiments (proposed multi x2, srcnn x2), recorded in dvc.lock."""
    cfg = copy.deepcopy(default_config)
    cfg["profile"] = "test"
    cfg["scales"] = [2]
    cfg["model"]["proposed"].update(features=8, units=2)
    cfg["experiments"] = [{"model": "proposed", "strategy": "multi", "scales": [2]},
                          {"model": "srcnn", "scales": [2], "train": {"steps_per_epoch": 3}}]
    cfg["train"].update(epochs=1, steps_per_epoch=3, batch_size=8, val_slices=1, threads=1)
    cfg["evaluate"]["max_test_slices"] = 2
    cfg["timing"].update(runs=1, warmup=0, slices=1, sizes=["native"], dtypes=["fp32"], bf16_jobs=[], roofline_n=256)
    work = tmp_path_factory.mktemp("profiles") / "repo"
    copy_workflow(Path(__file__).resolve().parents[1], work, cfg)
    (work / "config").mkdir()
    shutil.copy(Path(__file__).resolve().parents[1] / "config/paper.yaml", work / "config/paper.yaml")
    result = run([*SNAKEMAKE, "--cores", "2", "all"], work, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert run(["git", "add", "-A"], work).returncode == 0
    return work


@pytest.mark.slow
def test_a_dry_run_of_another_profile_changes_nothing(finished_run):
    work = finished_run
    before = snapshot(work)
    assert planned_jobs(work, "--configfile", "config/paper.yaml")  # the paper profile has work to do...
    assert snapshot(work) == before  # ...and planning it touched nothing of the finished run
    assert planned_jobs(work) == {}
    status = run([*DVC, "status"], work)
    assert "up to date" in status.stdout, status.stdout + status.stderr


@pytest.mark.slow
def test_dvc_and_snakemake_reports_work_offline(finished_run, tmp_path):
    """`dvc metrics show` is a few readable columns; `dvc plots show` draws loss and PSNR apart with
    no network; `snakemake --report` holds the report and tables."""
    import zipfile

    from browser_fixtures import Links

    work = finished_run
    metrics = run([*DVC, "metrics", "show"], work)
    assert metrics.returncode == 0, metrics.stderr
    header = metrics.stdout.splitlines()[0].split()
    assert header[0] == "Path" and len(header) <= 10 and "x2.psnr" in header and "x2.gain_db" in header

    plots = run([*DVC, "plots", "show", "-o", str(tmp_path / "plots")], work)
    assert plots.returncode == 0, plots.stderr
    page = tmp_path / "plots" / "index.html"
    links = Links()
    links.feed(page.read_text())
    assert sorted(Path(r).name.split("_", 1)[-1] for r in links.resources if r.endswith(".png")) == [
        "reports_test_figures_training_loss.png", "reports_test_figures_validation_psnr.png"]
    assert not [r for r in links.resources if re.match(r"\s*['\"]?(https?:)?//", r)], links.resources

    archive = work / "snakemake-report.zip"
    made = run([*SNAKEMAKE, "--report", str(archive)], work)
    assert made.returncode == 0, made.stderr[-3000:]
    names = [Path(n).name for n in zipfile.ZipFile(archive).namelist()]
    assert {"report.html", "summary.csv", "table3.csv", "training_loss.png", "validation_psnr.png"} <= set(names)
    ours = [n for n in zipfile.ZipFile(archive).namelist() if n.endswith("/report.html") and "/data/raw/" in n]
    assert ours and "Table 2" in zipfile.ZipFile(archive).read(ours[0]).decode()


@pytest.mark.slow
def test_dvc_plots_render_offline_in_chromium(finished_run, tmp_path):
    """The page of `dvc plots show`, rendered by headless Chromium with no network, shows curves."""
    from PIL import Image

    from browser_fixtures import CHROMIUM, FLAGS, require_chromium

    require_chromium()
    plots = run([*DVC, "plots", "show", "-o", str(tmp_path / "plots")], finished_run)
    assert plots.returncode == 0, plots.stderr
    shot = tmp_path / "plots.png"
    result = subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,1600",
                             f"--screenshot={shot}", (tmp_path / "plots" / "index.html").as_uri()],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    pixels = Image.open(shot).convert("L")
    assert pixels.getextrema()[0] < 128  # something dark was drawn: curves and axes, not a blank page


# A planted one-line edit of a module -> what the finished run (proposed multi x2 with its leakage run
# on the split by patient, srcnn x2) must redo: Snakemake's plan (rule -> jobs) and the stages
# `dvc repro --dry` would run. Written out by hand from the run's jobs, not derived from the code.
PLANTED = {
    # one model: its training and evaluation, and the jobs over every model; no ingest, split or patches
    "models/srcnn.py": ({"train": 1, "evaluate_model": 1, "summarize": 1, "timing": 1, "report": 1},
                        {"train", "evaluate", "timing", "report"}),
    # patches of both splits, so every training; evaluation and timing degrade their LR inputs with it
    "data/patches.py": ({"patches": 2, "train": 3, "evaluate_bicubic": 2, "evaluate_model": 3, "summarize": 1,
                         "timing": 1, "report": 1}, {"prepare", "evaluate", "timing", "report"}),
    # the report's own modules: the report alone
    "report/figures.py": ({"report": 1}, {"report"}),
    "report/table3.py": ({"report": 1}, {"report"}),
}


def dvc_dry_stages(work: Path) -> set[str]:
    """The stages `dvc repro --dry` would run."""
    result = run([*DVC, "repro", "--dry"], work)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return set(re.findall(r"Running stage '([\w@-]+)'", result.stdout + result.stderr))


@pytest.mark.slow
def test_a_code_change_reruns_exactly_the_jobs_that_run_it(finished_run, monkeypatch):
    """A one-line edit of srcnn's class reruns srcnn's jobs and those over every model, nothing else (no
    ingest, split, patches, no other model's training), in Snakemake's plan and `dvc repro --dry` alike;
    the same for data/patches.py and the report's modules."""
    work = finished_run
    monkeypatch.setenv("PYTHONPATH", str(work / "src"))  # the rules hash the copy's package, edited below
    for relative, (plan, stages) in PLANTED.items():
        path = work / "src/mrsr" / relative
        original = path.read_bytes()
        path.write_bytes(original + b"\nPLANTED = 1\n")
        try:
            assert planned_jobs(work) == plan, relative
            assert dvc_dry_stages(work) == stages, relative
        finally:
            path.write_bytes(original)
    assert planned_jobs(work) == {}


# Adding a model, as README's "Add or change a model" says: (1) its class file and its spec entry,
# (2) its experiment in the profile.
TOY_MODEL = '''"""A toy network: bicubic upscaling plus a learned two-layer residual."""

import torch
from torch import nn

from mrsr.data.resize import torch_upscale
from mrsr.models.base import SuperResolver
from mrsr.modelspec import MODEL_SPECS


class Toy(SuperResolver):
    """Bicubic plus ``conv3x3(relu(conv3x3(.)))`` in HR space.

    Args:
        scale: integer upscaling factor.
        strategy: ``None``.
        features: maps of the hidden layer.
    """

    spec = MODEL_SPECS["toy"]

    def __init__(self, scale: int, strategy: str | None = None, *, features: int = 4) -> None:
        super().__init__(scale, strategy)
        self.body = nn.Sequential(nn.Conv2d(1, features, 3, padding=1), nn.ReLU(), nn.Conv2d(features, 1, 3, padding=1))
        self.init_weights()

    def layer_groups(self) -> dict[str, list[nn.Module]]:
        return {"body": [self.body]}

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        up = torch_upscale(lr, self.scale)
        return up + self.body(up)
'''
TOY_SPEC = '''
register(ModelSpec("toy", "mrsr.models.toy", "Toy", "Toy net", scales=(2,), paper=None,
                   options={"features": {"type": "integer", "minimum": 1}}))
'''


@pytest.mark.slow
def test_a_model_added_in_two_steps_reaches_table_2(finished_run, tmp_path, monkeypatch):
    work = tmp_path / "repo"
    shutil.copytree(finished_run, work, symlinks=True)
    monkeypatch.setenv("PYTHONPATH", str(work / "src"))
    (work / "src/mrsr/models/toy.py").write_text(TOY_MODEL)  # step 1: the class and its spec entry
    with open(work / "src/mrsr/modelspec.py", "a") as fh:
        fh.write(TOY_SPEC)
    cfg = yaml.safe_load((work / "config.yaml").read_text())  # step 2: its experiment
    cfg["experiments"].append({"model": "toy", "scales": [2], "train": {"steps_per_epoch": 3}})
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    # the new model's jobs and those over every model; no other model retrains
    assert planned_jobs(work) == {"train": 1, "evaluate_model": 1, "summarize": 1, "timing": 1, "report": 1}
    result = run([*SNAKEMAKE, "--cores", "2", "all"], work, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    html = (work / "reports/test/report.html").read_text()
    table2 = html[html.index('<h2 id="table2">'):html.index('<h2 id="table3">')]
    assert "Toy net" in table2, table2[:3000]


@pytest.mark.slow
def test_dvc_repro_reruns_only_the_changed_experiment(finished_run):
    work = finished_run
    before = snapshot(work)
    cfg = yaml.safe_load((work / "config.yaml").read_text())
    cfg["experiments"][1]["train"]["steps_per_epoch"] = 4
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    # Snakemake and DVC agree on what the change invalidates: srcnn's job and what depends on it.
    plan = planned_jobs(work)
    assert plan == {"train": 1, "evaluate_model": 1, "summarize": 1, "timing": 1, "report": 1}
    repro = run([*DVC, "repro"], work, timeout=900)
    assert repro.returncode == 0, repro.stdout[-3000:] + repro.stderr[-3000:]
    after = snapshot(work)
    for name in ("proposed_multi_x2.safetensors", "proposed_multi_x2.json", "proposed_multi_x2.history.csv"):
        assert after[f"models/test/seed0/{name}"] == before[f"models/test/seed0/{name}"], name  # untouched, not even rewritten
    assert after["models/test/seed0/srcnn_x2.safetensors"][1] != before["models/test/seed0/srcnn_x2.safetensors"][1]
    leak = "models/test/by-patient/seed0/proposed_multi_x2.safetensors"  # the leakage check's run: untouched too
    assert after[leak] == before[leak]
    assert after["results/test/metrics/per_image/bicubic_x2.csv"] == before["results/test/metrics/per_image/bicubic_x2.csv"]
    assert planned_jobs(work) == {}
    assert "up to date" in run([*DVC, "status"], work).stdout

    # Restored files get new modification times, in no order (dvc checkout / pull): nothing reruns.
    for path in ("data/prepared/test/patches/x2.npz", "models/test/seed0/srcnn_x2.safetensors"):
        (work / path).unlink()
    checkout = run([*DVC, "checkout"], work)
    assert checkout.returncode == 0, checkout.stderr
    assert planned_jobs(work) == {}
    # As in a fresh clone after `dvc pull`: no Snakemake records at all. Restoring through mrsr
    # records them (after checking `dvc status`), so Snakemake has nothing to do either.
    for folder in (".snakemake", "data/prepared", "models", "results", "reports"):
        shutil.rmtree(work / folder)
    restore = run([sys.executable, "-m", "mrsr.cli", "dvc-restore"], work)
    assert restore.returncode == 0, restore.stdout + restore.stderr
    assert planned_jobs(work) == {}
    assert after["models/test/seed0/srcnn_x2.safetensors"][1] == snapshot(work)["models/test/seed0/srcnn_x2.safetensors"][1]

    # A partial target exits 0; the stages it left stale stay unrecorded, so DVC still says so.
    cfg["experiments"][1]["train"]["steps_per_epoch"] = 5
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    partial = run([*SNAKEMAKE, "--cores", "2", "train_all"], work, timeout=900)
    assert partial.returncode == 0, partial.stderr[-3000:]
    status = run([*DVC, "status"], work).stdout
    assert "evaluate:" in status and "train:" not in status, status
