"""The CPU reference run (docs/reference/cpu): its profile is config/paper.yaml at the common budget and
nothing else, and what is committed is complete per job and agrees with its per-image evaluations."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mrsr import reference

ROOT = Path(__file__).resolve().parents[1]


def mrsr(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["mrsr", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_committed_profile_is_config_paper_at_the_budget(tmp_path):
    """config/paper-cpu.yaml is what `mrsr reference profile` makes of config/paper.yaml; an edit of
    config/paper.yaml that is not carried over is reported (exit 1)."""
    assert mrsr("reference", "profile", "--check", cwd=ROOT).returncode == 0
    (tmp_path / "config").mkdir()
    shutil.copy(ROOT / "config" / "paper-cpu.yaml", tmp_path / "config")
    paper = (ROOT / "config" / "paper.yaml").read_text()
    (tmp_path / "config" / "paper.yaml").write_text(paper.replace("  batch_size: 128", "  batch_size: 64"))
    stale = mrsr("reference", "profile", "--check", cwd=tmp_path)
    assert stale.returncode == 1 and "out of date" in stale.stdout


def test_profile_differs_from_the_paper_only_by_budget_seed_validation_and_leakage():
    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    cpu = yaml.safe_load((ROOT / "config" / "paper-cpu.yaml").read_text())
    assert cpu["profile"] == "paper-cpu" and cpu["leakage"] is None
    assert cpu["train"] == {**paper["train"], "seeds": [0], "val_slices": 16}
    assert len(cpu["experiments"]) == len(paper["experiments"])
    for mine, theirs in zip(cpu["experiments"], paper["experiments"]):
        train, original = dict(mine["train"]), dict(theirs.get("train") or {})
        assert train.pop("epochs") == 20
        schedule = original.get("schedule", paper["train"]["schedule"])
        if schedule == "step":  # the paper's lr / 10 every 20 of 100 epochs: every 4 of 20
            assert train.pop("lr_step_epochs") == 4
        assert train == original and {k: v for k, v in mine.items() if k != "train"} == {
            k: v for k, v in theirs.items() if k != "train"}


def test_committed_reference_is_consistent():
    """Every committed job has all five files, its budget is the reference's, and summary.csv's rows
    are the means of the committed per-image CSVs."""
    assert reference.check(ROOT) == []


def test_check_finds_a_summary_that_disagrees_and_a_job_half_committed(tmp_path):
    if not reference.done_jobs(ROOT):
        pytest.skip("no job committed in docs/reference/cpu yet")
    shutil.copytree(ROOT / "docs" / "reference", tmp_path / "docs" / "reference")
    shutil.copytree(ROOT / "config", tmp_path / "config")
    shutil.copytree(ROOT / "data" / "btp-sample", tmp_path / "data" / "btp-sample")
    assert reference.check(tmp_path) == []
    job = reference.done_jobs(tmp_path)[0]
    summary = tmp_path / reference.REFERENCE_DIR / "summary.csv"
    table = pd.read_csv(summary, keep_default_na=False)
    table.loc[table["job"] == job, "psnr"] += 0.01
    table.to_csv(summary, index=False)
    assert any(f"{job}'s PSNR" in p for p in reference.check(tmp_path))
    (tmp_path / reference.committed(reference.workflow_files(job)["history"])).unlink()
    assert any(p.startswith(f"{job}: only") for p in reference.check(tmp_path))


def _snakemake(repo: Path, *args: str) -> subprocess.CompletedProcess:
    # targets before --configfile, which takes every value after it
    return subprocess.run(["snakemake", "--cores", "2", *args, "--configfile", "config/paper-cpu.yaml"], cwd=repo,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_restored_jobs_are_done_for_snakemake_and_the_rest_is_planned(tmp_path):
    """In a fresh copy with the data prepared, `mrsr reference restore` makes a committed job's training
    and evaluation done for Snakemake (rerun triggers: mtime), while a job not committed is planned;
    the same files copied before the data was prepared (older than the patches) would be retrained."""
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    for name in ("Snakefile", "config.yaml", "config", "workflow", "data/btp-sample"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, repo / name)
    prepared = _snakemake(repo, "data/prepared/paper-cpu/patches/x2.npz")
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    job = "fsrcnn_x2"
    for path in [*reference.workflow_files(job).values(), *reference.bicubic_files(2).values()]:
        target = repo / reference.committed(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"committed " + path.name.encode())
    assert reference.done_jobs(repo) == [job]
    restored = mrsr("reference", "restore", cwd=repo)
    assert restored.returncode == 0 and "restored 1 committed jobs" in restored.stdout
    assert (repo / reference.workflow_files(job)["weights"]).read_bytes() == b"committed fsrcnn_x2.safetensors"
    targets = [str(p) for p in (*reference.workflow_files(job).values(), *reference.bicubic_files(2).values())]
    dry = _snakemake(repo, "--rerun-triggers", "mtime", "-n", *targets)
    assert dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-2000:]
    other = _snakemake(repo, "--rerun-triggers", "mtime", "-n", "results/paper-cpu/metrics/per_image/seed0/srcnn_x2.csv")
    assert "rule train:" in other.stdout and "srcnn_x2" in other.stdout
    # The patches made after the committed files: the job is stale again (why restore comes after prepare).
    (repo / "data/prepared/paper-cpu/patches/x2.npz").touch()
    stale = _snakemake(repo, "--rerun-triggers", "mtime", "-n", *targets)
    assert "rule train:" in stale.stdout and job in stale.stdout
