"""The Snakemake workflow: lint, the DAG that dvc.yaml mirrors, and a tiny end-to-end run."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from workflow_fixtures import RULE_COMMAND, SNAKEMAKE, STAGE_COMMANDS, code_deps, copy_workflow, planned_jobs, run


def produced_files(root: Path, target: str, configfile: str = "config.yaml") -> dict[str, str]:
    """output file -> rule, for every job the target needs in that profile (from `snakemake --summary`)."""
    result = run([*SNAKEMAKE, "--forceall", "-n", "--summary", target, "--configfile", configfile], root)
    assert result.returncode == 0, result.stderr
    lines = [l.split("\t") for l in result.stdout.splitlines() if "\t" in l]
    return {cols[0]: cols[2] for cols in lines[1:]}


def under(path: str, folders: list[str]) -> bool:
    return any(path == f or path.startswith(f.rstrip("/") + "/") for f in folders)


def dvc_stages(root: Path) -> dict:
    """dvc.yaml's stages as DVC itself resolves them (its vars substituted): name -> Stage."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return {stage.name: stage for stage in repo.index.stages}


@pytest.mark.slow
def test_lint_is_clean_and_dry_run_lists_every_stage(root):
    lint = run([*SNAKEMAKE, "--lint"], root)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    dry = run([*SNAKEMAKE, "-n", "--forceall", "all"], root)
    assert dry.returncode == 0, dry.stderr
    for rule in ("ingest", "split", "patches", "train", "evaluate_bicubic", "evaluate_model", "summarize", "timing", "report"):
        assert f"rule {rule}:" in dry.stdout, rule


@pytest.mark.slow
def test_dvc_stages_agree_with_the_snakemake_dag(root):
    """For every profile dvc.yaml lists, its stages against Snakemake's DAG of that profile."""
    from mrsr.dvcsync import dvc_profiles

    stages = dvc_stages(root)
    profiles = dvc_profiles(root / "dvc.yaml")
    assert {"quick", "paper"} <= set(profiles) and set(profiles) >= {s.split("@")[1] for s in stages}
    # The default profile's stages in full; every other profile's are the same `foreach` template (its
    # name and file substituted), so there: its command, params and outs, and that they hold all it builds.
    check_profile_stages(root, {s: stage for s, stage in stages.items() if s.endswith("@quick")}, "config.yaml")
    for name, item in profiles.items():
        profile = yaml.safe_load((root / item["config"]).read_text())
        assert profile["profile"] == name, f"dvc.yaml's profiles.{name} names a file of profile {profile['profile']}"
        data = profile["data"]
        assert item["data"] == {"sample": data["sample_dir"], "local": data["local_dir"]}.get(data["source"], item["config"])
        outs = []
        for stage_name in ("prepare", "train", "evaluate", "timing", "report"):
            stage, quick = stages[f"{stage_name}@{name}"], stages[f"{stage_name}@quick"]
            assert stage.cmd == quick.cmd.replace("config.yaml", item["config"]), stage.name
            assert [str(p) for p in stage.params] == [item["config"]], stage.name
            assert [str(o) for o in stage.outs] == [str(o).replace("quick", name) for o in quick.outs], stage.name
            outs += [str(o) for o in stage.outs]
        if name != "quick":
            built = produced_files(root, "all", item["config"])
            assert all(under(path, outs) for path in built), [p for p in built if not under(p, outs)][:3]


def check_profile_stages(root: Path, stages: dict, configfile: str) -> None:
    from mrsr.workflow_support import command_sources

    seen: dict[str, str] = {}
    stage_outs: dict[str, list[str]] = {}
    for name, stage in stages.items():
        target = stage.cmd.split()[-1]
        assert stage.cmd.startswith(f"snakemake --configfile {configfile} "), name
        assert [str(p) for p in stage.params] == [configfile], f"stage {name}: params of another file"
        files = produced_files(root, target, configfile)
        own = {f: r for f, r in files.items() if f not in seen}
        assert own, f"stage {name}: target {target} builds nothing new"
        outs = [str(o) for o in stage.outs]
        # persist: DVC must not delete the outputs of jobs Snakemake will not rerun.
        assert all(o.persist for o in stage.outs), f"stage {name}: every out must persist"
        for path in own:
            assert under(path, outs), f"stage {name}: Snakemake builds {path} outside the stage's outs {outs}"
        for out in outs:
            assert any(under(p, [out]) for p in own), f"stage {name}: out {out} is built by no rule of {target}"
        deps = [str(d) for d in stage.deps]
        # Every earlier stage this stage's target builds on is among its dependencies.
        for upstream, ups_outs in stage_outs.items():
            if any(under(path, ups_outs) for path in files if path in seen):
                assert any(under(d, ups_outs) or any(under(o, [d]) for o in ups_outs) for d in deps), (
                    f"stage {name}: builds on stage {upstream} ({ups_outs}) without a dependency on it"
                )
        # Its code deps are exactly the package sources its rules' commands run (what Snakemake's code params hash).
        commands = {RULE_COMMAND[r] for r in own.values()}
        assert commands == set(STAGE_COMMANDS[name.split("@")[0]]), f"stage {name}: its rules run {sorted(commands)}"
        sources = {f"src/mrsr/{p}" for command in commands for p in command_sources(command)}
        assert code_deps(root, deps) == sources, f"stage {name}: code deps differ from {sorted(sources)}"
        stage_outs[name] = outs
        seen.update(own)
    assert set(produced_files(root, "all", configfile)) == set(seen)


@pytest.mark.slow
def test_tiny_workflow_end_to_end_and_dvc_up_to_date(root, tmp_path, tiny_config):
    """Two training seeds and the leakage check (tiny_config), through Snakemake to the report and dvc.lock."""
    work = tmp_path / "repo"
    copy_workflow(root, work, tiny_config)
    result = run([*SNAKEMAKE, "--cores", "2", "all"], work, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = pd.read_csv(work / "results/test/metrics/summary.csv", keep_default_na=False)
    assert list(summary.columns[:6]) == ["method", "strategy", "scale", "psnr", "ssim", "n_images"]
    assert set(zip(summary["method"], summary["strategy"])) == {("bicubic", ""), ("proposed", "multi")}
    assert (summary["n_images"] == 3).all() and summary["psnr"].between(15, 80).all()
    # Each seed is a run of its own: weights, sidecar with its seed, per-image metrics; the summary
    # averages the two seeds' means.
    seeds = {}
    for seed in (0, 1):
        sidecar = yaml.safe_load((work / f"models/test/seed{seed}/proposed_multi_x2.json").read_text())
        assert (sidecar["model"], sidecar["scale"], sidecar["strategy"], sidecar["train"]["seed"]) == ("proposed", 2, "multi", seed)
        seeds[seed] = pd.read_csv(work / f"results/test/metrics/per_image/seed{seed}/proposed_multi_x2.csv")
        assert (seeds[seed]["seed"] == seed).all()
    ours = summary[summary["method"] == "proposed"].iloc[0]
    means = [seeds[k]["psnr"].mean() for k in (0, 1)]
    assert means[0] != means[1] and float(ours["psnr"]) == pytest.approx(sum(means) / 2)
    assert int(ours["n_seeds"]) == 2 and float(ours["psnr_seed_std"]) == pytest.approx(abs(means[0] - means[1]) / 2**0.5)
    # The leakage check: a split by patient, the job trained on it with each seed, evaluated with bicubic.
    by_patient = pd.read_csv(work / "data/prepared/test/by-patient/split.csv", dtype={"patient_id": str})
    sides = by_patient.groupby("patient_id")["split"].nunique()
    assert (sides == 1).all() and set(by_patient["split"]) >= {"train", "test"}
    assert yaml.safe_load((work / "data/prepared/test/split.json").read_text())["test_patients_in_train"] > 0
    for name in ("bicubic_x2", "seed0/proposed_multi_x2", "seed1/proposed_multi_x2"):
        frame = pd.read_csv(work / f"results/test/metrics/per_image/by-patient/{name}.csv", dtype={"patient_id": str})
        assert set(frame["series_key"]) <= set(by_patient.loc[by_patient["split"] == "test", "series_key"])
    html = (work / "reports/test/report.html").read_text()
    assert "Table 2" in html and "data:image/png;base64," in html and "TEST profile" in html
    assert 'id="table3-data"' in html and 'id="bf16-data"' in html
    assert 'id="leakage-data"' in html and "Split by series, it gains" in html
    assert "the mean over its training seeds" in html
    table3 = pd.read_csv(work / "results/test/timing/table3.csv")
    assert set(table3["name"]) == {"bicubic_x2", "proposed_multi_x2"}
    assert set(table3.loc[table3["name"] == "proposed_multi_x2", "dtype"]) == {"fp32", "bf16"}
    assert (table3["ms_per_slice"] > 0).all() and (table3["roofline_ratio"] > 0).all()
    status = run([sys.executable, "-m", "dvc", "status"], work)
    assert status.returncode == 0 and "up to date" in status.stdout, status.stdout + status.stderr
    # Nothing to do on a second run.
    again = run([*SNAKEMAKE, "--cores", "2", "-n", "all"], work)
    assert "Nothing to be done" in again.stdout + again.stderr
    # A third seed adds its runs (on both splits) and reruns none of the first two.
    tiny_config["train"]["seeds"] = [0, 1, 2]
    (work / "config.yaml").write_text(yaml.safe_dump(tiny_config))
    assert planned_jobs(work) == {"train": 2, "evaluate_model": 2, "summarize": 1, "report": 1}


@pytest.mark.slow
def test_workflow_on_a_local_dicom_folder_runs_to_the_report(root, tmp_path, tiny_config):
    """data.source: local on DICOM series (real sample anatomy written as 16-bit DICOM) plus a bad file."""
    import nibabel as nib

    from dicom_fixtures import mr_dataset, new_uid, save

    dicom_dir = tmp_path / "dicom"
    volumes = sorted((root / "data" / "btp-sample").rglob("*.nii.gz"))[:4]  # two patients keep it quick
    for v, path in enumerate(volumes):
        data = np.asarray(nib.load(str(path)).dataobj)
        uid = new_uid()
        for k in range(5, 10):
            pixels = data[:, :, k].T.astype(np.uint16)
            ds = mr_dataset(pixels, series_uid=uid, patient_id=path.parent.name, description=path.name.split(".")[0],
                            position=(0.0, 0.0, 1.5 * k), instance=k + 1)
            save(ds, dicom_dir / f"s{v}" / f"{new_uid()}.dcm")  # random names: order comes from positions
    (dicom_dir / "notes.bin").write_bytes(b"not a DICOM file")
    tiny_config["data"].update(source="local", local_dir=str(dicom_dir))
    work = tmp_path / "repo"
    copy_workflow(root, work, tiny_config)
    result = run([*SNAKEMAKE, "--cores", "2", "all"], work, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    index = pd.read_csv(work / "data/prepared/test/store/index.csv")
    assert index["series_uid"].nunique() == 4 and len(index) == 20
    assert (index["pixel_spacing_row"] == 0.9).all()
    rejected = pd.read_csv(work / "data/prepared/test/store/rejected.csv")
    assert rejected["path"].str.endswith("notes.bin").tolist() == [True]
    html = (work / "reports/test/report.html").read_text()
    assert "notes.bin" in html and "Table 2" in html
    summary = pd.read_csv(work / "results/test/metrics/summary.csv", keep_default_na=False)
    assert set(summary["method"]) == {"bicubic", "proposed"}
