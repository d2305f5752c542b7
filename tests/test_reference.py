"""The CPU reference run (docs/reference/cpu): its profile is config/paper.yaml at the common budget and
nothing else, and what is committed is complete per job and agrees with its per-image evaluations."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import save_file

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


def _commit_fake_job(root: Path, job: str, psnrs: list[float], bicubic: list[float], epochs: int = 20) -> None:
    """A committed job as `mrsr reference collect` leaves it: five files, bicubic at its scale."""
    scale = int(job.rsplit("_x", 1)[1])
    files = reference.workflow_files(job)
    for kind in ("history", "example"):
        path = root / reference.committed(files[kind])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not read by the check")
    save_file({"w": torch.zeros(4)}, str(root / reference.committed(files["weights"])))  # read: fp32 or fp16?
    sidecar = {"model": job.rsplit("_x", 1)[0], "strategy": None, "scale": scale, "git_revision": "0" * 40,
               "recipe": {"epochs": epochs, "steps_per_epoch": 99, "batch_size": 128}}
    (root / reference.committed(files["sidecar"])).write_text(json.dumps(sidecar))

    def per_image(method: str, values: list[float], seed: str) -> pd.DataFrame:
        return pd.DataFrame({"method": method, "strategy": "", "scale": scale, "seed": seed,
                             "slice_id": [f"s:{i}" for i in range(len(values))], "psnr": values,
                             "ssim": 0.9, "psnr_fg": values})

    path = root / reference.committed(files["per_image"])
    path.parent.mkdir(parents=True, exist_ok=True)
    per_image(sidecar["model"], psnrs, "0").to_csv(path, index=False)
    for kind, bpath in reference.bicubic_files(scale).items():
        target = root / reference.committed(bpath)
        if kind == "per_image":
            per_image("bicubic", bicubic, "").to_csv(target, index=False)
        else:
            target.write_bytes(b"example")


def test_check_finds_a_summary_that_disagrees_a_job_half_committed_and_a_wrong_budget(tmp_path):
    shutil.copytree(ROOT / "config", tmp_path / "config")
    shutil.copytree(ROOT / "data" / "btp-sample", tmp_path / "data" / "btp-sample")
    _commit_fake_job(tmp_path, "fsrcnn_x2", [37.0, 38.0, 39.0], [35.0, 36.0, 37.0])
    reference.write_summary(tmp_path)
    assert reference.check(tmp_path) == []
    summary = pd.read_csv(tmp_path / reference.REFERENCE_DIR / "summary.csv", keep_default_na=False)
    row = summary.set_index("job").loc["fsrcnn_x2"]
    assert (row["psnr"], row["gain_db"], row["epochs"], row["samples"]) == (38.0, 2.0, 20, 20 * 99 * 128)
    table = summary.copy()
    table.loc[table["job"] == "fsrcnn_x2", "psnr"] += 0.01
    table.to_csv(tmp_path / reference.REFERENCE_DIR / "summary.csv", index=False)
    assert any("fsrcnn_x2's PSNR" in p for p in reference.check(tmp_path))
    reference.write_summary(tmp_path)
    tables = tmp_path / reference.REFERENCE_DIR / "tables.md"
    assert "| x2 | 20 epochs | 36.00 / 0.900 | 38.00 (+2.00) / 0.900 |" in tables.read_text()
    assert "- x2: FSRCNN 38.00 > bicubic 36.00" in tables.read_text()
    tables.write_text(tables.read_text().replace("38.00 (+2.00)", "38.01 (+2.01)"))
    assert reference.check(tmp_path) == [f"{tables}: not what summary.csv gives (mrsr reference collect writes both)"]
    _commit_fake_job(tmp_path, "srcnn_x2", [37.0], [35.0], epochs=100)
    reference.write_summary(tmp_path)
    assert reference.check(tmp_path) == ["srcnn_x2: trained 100 epochs, the reference budget is 20"]
    (tmp_path / reference.committed(reference.workflow_files("srcnn_x2")["history"])).unlink()
    assert any(p.startswith("srcnn_x2: only") for p in reference.check(tmp_path))


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


# --- shipping: the proposed net against the shipped FSRCNN, on validation and on test -------------
def _validation_rows(name: str, psnrs: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"name": name, "method": name.split("_")[0].split("-")[0], "strategy": "", "scale": 2,
                         "slice": range(len(psnrs)), "psnr": psnrs, "sha256": "0" * 64})


def _shipping_tree(root: Path, validation_gain: float, test_gain: float) -> None:
    """A reference with proposed_multi_x2 committed and the shipped fsrcnn-x2 evaluated, the candidate
    ahead by the given gains (slice by slice, with spread) on validation and test."""
    from mrsr.reference.validation import VALIDATION_CSV

    shutil.rmtree(root / reference.REFERENCE_DIR, ignore_errors=True)
    spread = [0.3, -0.3, 0.1, -0.1, 0.25, -0.25, 0.05, -0.05]  # mean 0: the gains are exact
    base = [37.0 + s for s in spread]
    _commit_fake_job(root, "proposed_multi_x2", [b + test_gain + s / 2 for b, s in zip(base, spread)], base)
    shipped = root / reference.shipped_csv("fsrcnn-x2")
    shipped.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"method": "fsrcnn", "strategy": "", "scale": 2, "seed": 0,
                  "slice_id": [f"s:{i}" for i in range(len(base))], "psnr": base, "ssim": 0.9}).to_csv(shipped, index=False)
    validation = pd.concat([_validation_rows("proposed_multi_x2", [b + validation_gain + s / 2 for b, s in zip(base * 2, spread * 2)]),
                            _validation_rows("fsrcnn-x2", base * 2)])
    validation.to_csv(root / VALIDATION_CSV, index=False)


def test_the_proposed_net_ships_only_where_it_beats_fsrcnn_on_validation_and_on_test(tmp_path):
    from mrsr.reference.validation import shipping_frame

    shutil.copytree(ROOT / "config", tmp_path / "config")
    _shipping_tree(tmp_path, validation_gain=0.4, test_gain=0.3)
    row = shipping_frame(tmp_path).iloc[0]
    assert (row["scale"], row["candidate"], row["incumbent"], row["validation_n"], row["test_n"]) == (
        2, "proposed_multi_x2", "fsrcnn-x2", 16, 8)
    assert row["validation_gain"] == pytest.approx(0.4) and row["test_gain"] == pytest.approx(0.3)
    assert row["validation_low"] > 0 and row["test_low"] > 0 and bool(row["ships"])
    for validation_gain, test_gain in ((0.4, -0.05), (0.0, 0.3)):  # ahead on one side only: it stays out
        _shipping_tree(tmp_path, validation_gain, test_gain)
        assert not bool(shipping_frame(tmp_path).iloc[0]["ships"]), (validation_gain, test_gain)


def test_validation_of_each_committed_job_is_what_its_training_measured_last():
    """validation.csv (mrsr reference validate, fp32, slice by slice) agrees with the mean validation
    PSNR each job's training recorded after its last epoch, on the same 16 slices (0.005 dB)."""
    from mrsr.reference.validation import VALIDATION_CSV

    validation = pd.read_csv(ROOT / VALIDATION_CSV, keep_default_na=False)
    for job in reference.done_jobs(ROOT):
        sidecar = json.loads((ROOT / reference.committed(reference.workflow_files(job)["sidecar"])).read_text())
        rows = validation[validation["name"] == job]
        assert len(rows) == 16, job
        assert rows["psnr"].mean() == pytest.approx(sidecar["final_val_psnr"], abs=0.005), job


def test_publish_waits_for_every_job_and_a_rendered_report(tmp_path):
    shutil.copytree(ROOT / "config", tmp_path / "config")
    _commit_fake_job(tmp_path, "fsrcnn_x2", [37.0], [35.0])
    with pytest.raises(reference.UsageError, match="publish: 17 jobs not committed yet"):
        reference.publish(tmp_path)
    for job in reference.ORDER:
        _commit_fake_job(tmp_path, job, [37.0], [35.0])
    with pytest.raises(reference.UsageError, match="render the report first"):
        reference.publish(tmp_path)


# --- fp16 copies: only where every test slice is reproduced -------------------------------------
@pytest.mark.slow
def test_compact_keeps_fp16_only_where_every_test_slice_is_reproduced(tmp_path, monkeypatch):
    """A committed job (the shipped fsrcnn-x2's weights and their own fp32 evaluation) becomes fp16
    when the fp16 copy gives every test slice's PSNR within 0.01 dB; with one slice of its committed
    evaluation 0.02 dB off the fp32 file stays; fp16 weights fp16.csv does not vouch for fail the check."""
    from mrsr.config import file_sha256
    from mrsr.reference import fp16

    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    for name in ("Snakefile", "config.yaml", "config", "workflow", "data/btp-sample"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, repo / name)
    profile = repo / "config" / "paper-cpu.yaml"
    profile.write_text(profile.read_text().replace("max_test_slices: null", "max_test_slices: 6"))
    assert _snakemake(repo, "data/prepared/paper-cpu/split.csv").returncode == 0
    job = "fsrcnn_x2"
    files = {k: repo / reference.committed(p) for k, p in reference.workflow_files(job).items()}
    _commit_fake_job(repo, job, [0.0], [35.0])
    shutil.copy(ROOT / "src/mrsr/zoo/fsrcnn-x2.safetensors", files["weights"])
    shutil.copy(ROOT / "src/mrsr/zoo/fsrcnn-x2.json", files["sidecar"])
    prepared = repo / "data/prepared/paper-cpu"
    evaluated = mrsr("evaluate", "--method", "fsrcnn", "--weights", str(files["weights"]), "--scale", "2",
                     "--store", str(prepared / "store"), "--split", str(prepared / "split.csv"),
                     "--config", str(profile), "--threads", "1", "--out", str(files["per_image"]), cwd=repo)
    assert evaluated.returncode == 0, evaluated.stderr
    fp32_sha, fp32_csv = file_sha256(files["weights"]), files["per_image"].read_text()
    monkeypatch.setattr(fp16, "MIN_BYTES", 0)

    # one slice of the committed evaluation 0.02 dB off: the fp16 copy does not reproduce it
    frame = pd.read_csv(files["per_image"])
    frame.loc[2, "psnr"] += 0.02
    frame.to_csv(files["per_image"], index=False)
    row = fp16.compact(repo).iloc[0]
    assert not row["kept_fp16"] and 0.01 < row["max_abs_psnr_diff_db"] < 0.03 and row["slices"] == 6
    assert file_sha256(files["weights"]) == fp32_sha and not fp16.is_half(files["weights"])

    (repo / fp16.FP16_CSV).unlink()
    files["per_image"].write_text(fp32_csv)
    row = fp16.compact(repo).iloc[0]
    assert row["kept_fp16"] and row["max_abs_psnr_diff_db"] <= 0.01 and row["fp32_sha256"] == fp32_sha
    assert fp16.is_half(files["weights"]) and file_sha256(files["weights"]) == row["fp16_sha256"]
    assert files["weights"].stat().st_size < 0.6 * (ROOT / "src/mrsr/zoo/fsrcnn-x2.safetensors").stat().st_size
    reference.write_summary(repo)
    shipped_budget = ["fsrcnn_x2: trained 100 epochs, the reference budget is 20"]  # the zoo's weights: 100 epochs
    assert reference.check(repo) == shipped_budget
    table = pd.read_csv(repo / fp16.FP16_CSV)
    table["fp16_sha256"] = "0" * 64
    table.to_csv(repo / fp16.FP16_CSV, index=False)
    assert reference.check(repo) == shipped_budget + [
        f"{files['weights']}: fp16 weights that {fp16.FP16_CSV} does not record as reproducing the job's figures"]


# --- the whole reference: all 18 jobs, bicubic at every scale, the report ----------------------
def test_committed_reference_is_complete_and_its_report_shows_every_method():
    """All 18 jobs of Tables 1-2 and bicubic at x2/x3/x4 are in summary.csv, each job's row with its
    budget (20 epochs, its samples) and its sidecar beside it, PSNR and SSIM the means of its
    per-image CSV; the published report's Table 2 lists every method at every scale it is trained at."""
    from mrsr.modelspec import display_name

    assert reference.done_jobs(ROOT) == reference.ORDER and reference.check(ROOT) == []
    summary = pd.read_csv(ROOT / reference.REFERENCE_DIR / "summary.csv", keep_default_na=False).set_index("job")
    for scale in (2, 3, 4):
        csv = pd.read_csv(ROOT / reference.committed(reference.bicubic_files(scale)["per_image"]))
        assert summary.loc[f"bicubic_x{scale}", "psnr"] == pytest.approx(csv["psnr"].mean(), abs=1e-9)
    methods_at = {2: set(), 3: set(), 4: set()}
    for job in reference.ORDER:
        files = {k: ROOT / reference.committed(p) for k, p in reference.workflow_files(job).items()}
        sidecar = json.loads(files["sidecar"].read_text())
        row, csv = summary.loc[job], pd.read_csv(files["per_image"])
        assert row["sidecar"] == str(reference.committed(reference.workflow_files(job)["sidecar"]))
        assert (row["epochs"], row["samples"]) == (20, 20 * sidecar["recipe"]["steps_per_epoch"] * 128), job
        assert row["psnr"] == pytest.approx(csv["psnr"].mean(), abs=1e-9), job
        assert row["ssim"] == pytest.approx(csv["ssim"].mean(), abs=1e-9), job
        assert row["n_images"] == len(csv) == 120, job
        methods_at[sidecar["scale"]].add(display_name(sidecar["model"]))
    html = (ROOT / reference.REFERENCE_DIR / "report.html").read_text()
    assert "<script src=\"http" not in html and "src=\"http" not in html  # reads offline
    table2 = html.split('id="table2-data"', 1)[1].split("</table>", 1)[0]
    groups = {int(g.split(":", 1)[0]): g for g in table2.split('<tr class="group"><th colspan="12">x')[1:]}
    assert sorted(groups) == [2, 3, 4]
    for scale, names in methods_at.items():
        missing = [n for n in names | {"Bicubic"} if f">{n}<" not in groups[scale] and f">{n} " not in groups[scale]]
        assert not missing, (scale, missing)
