"""benchmarks/gpu_check.sh, the GPU check: its CPU-runnable logic.

The check itself needs a GPU machine; here its dry run (configs and commands) and its ``--device cpu
--quick`` mode (the same parts in miniature) run, so a broken script is found before a GPU is lent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mrsr.config import validate_config

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def gpu_check(tmp_path: Path, *args: str, timeout: float = 120) -> dict:
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("OUT", None)
    subprocess.run(["bash", str(SCRIPT), "--out", str(out), "--work", str(work), *args], cwd=tmp_path, env=env,
                   check=False, timeout=timeout)
    return json.loads((out / "gpu_check.json").read_text())


def test_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_dry_run_plans_every_part_with_a_complete_capped_profile(tmp_path):
    result = gpu_check(tmp_path, "--dry-run")
    parts = ["env", "train_modes", "bench_on", "upscale", "snakemake", "bench_off", "deterministic", "sharing"]
    assert result["parts"] == parts
    assert {result[p]["status"] for p in parts} == {"dry-run"}
    log = (tmp_path / "out" / "gpu_check.log").read_text()
    for expected in ("train --job proposed_multi_x2", "train --job srcnn_x2", "benchmark-train", "--amp off",
                     "--deterministic on", "--not-before", "upscale --model", "--device cuda --out",
                     "snakemake all", "--resources gpu_slots=8"):
        assert expected in log, expected
    modes = {yaml.safe_load((tmp_path / "work" / f"train_{m}.yaml").read_text())["train"]["compile"]
             for m in ("cudagraphs", "on", "off")}
    assert modes == {"cudagraphs", "on", "off"}
    # The Snakemake profile is config/paper.yaml whole (a profile file is a complete config), valid,
    # with only the budgets capped.
    profile = yaml.safe_load((tmp_path / "work" / "repo" / "gpu-check.yaml").read_text())
    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    validate_config(profile)  # fills the schema's defaults in place, so compare with paper.yaml filled too
    validate_config(paper)
    assert profile.keys() == paper.keys() and profile["experiments"] == paper["experiments"]
    assert profile["model"] == paper["model"] and profile["patches"] == paper["patches"]
    assert (profile["train"]["epochs"], profile["train"]["steps_per_epoch"]) == (1, 2)
    assert profile["evaluate"]["max_test_slices"] == 2 and profile["timing"]["dtypes"] == ["fp32"]


@pytest.mark.slow
def test_quick_cpu_run_measures_and_records(tmp_path):
    result = gpu_check(tmp_path, "--device", "cpu", "--quick", "--parts", "train_modes,upscale,snakemake")
    runs = {r["mode"]: r for r in result["train_modes"]["runs"]}
    assert runs["cudagraphs"]["status"] == "skipped" and "CUDA" in runs["cudagraphs"]["reason"]
    off = runs["off"]
    assert off["status"] == "ok" and off["fast_path"]["compile_mode"] is None
    assert len(off["history"]) == 2 and off["history"][0]["checkpoint_s"] > 0
    assert off["timing"]["first_step_s"] > 0 and off["timing"]["steps_s"] > 0
    assert result["upscale"]["status"] == "ok"
    assert result["upscale"]["fp32"]["output_shape"] == [128, 128, 2]
    assert result["snakemake"]["status"] == "ok"  # a dry run of the DAG with the profile
    assert "gpu_slots=4" in result["snakemake"]["output_tail"] + (tmp_path / "out" / "gpu_check.log").read_text()
    assert "summary" in result and result["summary"]["target_mfu"] == 0.25
