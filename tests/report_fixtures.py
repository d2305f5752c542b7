"""A small results tree (metrics, examples, histories, split, ingest, timing, the leakage check) that
``mrsr.report`` renders in about a second, for the report tests. Laid out as the workflow writes it:
per-image metrics of every training seed (``per_image/seed<k>/``), summary.csv by ``mrsr summarize``."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd

from mrsr.config import Job, job_seeds, leakage_job, training_jobs
from mrsr.data.patches import degrade
from mrsr.data.resize import upscale
from mrsr.evaluate import summarize
from mrsr.report import ReportInputs
from mrsr.workflow_support import seed_dir


def phantom(size: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    return np.where(xx**2 / 0.6 + yy**2 / 0.8 <= 1, 0.5 + 0.4 * np.cos(6 * xx) * np.sin(4 * yy), 0.0).astype(np.float32)


# Mean PSNR gain over bicubic that build_results gives each job (the noise is under 1 dB): ESPCN
# and the single strategy fall below bicubic, as under-trained networks of the quick profile do.
GAINS = {"bicubic": 0.0, "srcnn": 1.0, "espcn": -1.0, "fsrcnn": 0.5, "decnn": 0.8, "fscwn": 0.3,
         "proposed_multi": 1.5, "proposed_double": 1.2, "proposed_single": -2.0}
# Seed k > 0 of a network: its seed-0 PSNRs plus SEED_OFFSETS[k] dB (a known spread across seeds).
SEED_OFFSETS = {0: 0.0, 1: 0.3, 2: -0.15}
# The leakage check: on the split by patient the network gains this much less over bicubic.
LEAKAGE_LOSS = 0.6
# Figure 3's slice, named as the store names slices (series key and index).
SLICE_ID = "PGBM-002_T1post-progression_1a2b3c4d:0042"
# The split (split.csv): side, patient, series of each series; split.json's counts agree.
SPLIT_SERIES = [("train", "PGBM-002", "T1post-pre"), ("train", "PGBM-002", "T1post-progression"),
                ("test", "PGBM-002", "FLAIR-pre"), ("test", "PGBM-002", "FLAIR-progression"),
                ("unused", "PGBM-012", "T1post-pre")]
# A recipe source as long as the shipped profiles' (the recipe table must wrap it, not widen the page).
LONG_RECIPE = ("Adam 2e-3, last layer x0.1 (Dong et al. 2016 ratio; Adam as yjn870/SRCNN-pytorch), He init, cosine to "
               "1%, the reproduced paper's SGD 0.1 (momentum 0.9, wd 1e-4, /10 every 20 of 100 epochs)")


def report_config(default_config: dict) -> dict:
    """The default config with two scales, two strategies of Table 1 and SRCNN (fast to render)."""
    cfg = copy.deepcopy(default_config)
    cfg["scales"] = [2, 3]
    cfg["experiments"] = [{"model": "proposed", "strategy": "multi", "scales": [2, 3]},
                          {"model": "proposed", "strategy": "single", "scales": [2]},
                          {"model": "srcnn", "scales": [2, 3]}]
    return cfg


def full_report_config(default_config: dict, paper_config: dict) -> dict:
    """The default (quick) config with every scale and experiment of config/paper.yaml: all 18 jobs.

    The quick profile's per-experiment budgets are kept where it has the experiment, so the notes
    state budgets as a quick run's report would.
    """
    cfg = copy.deepcopy(default_config)
    cfg["scales"] = list(paper_config["scales"])
    quick = {(e["model"], e.get("strategy")): e.get("train") for e in default_config["experiments"]}
    cfg["experiments"] = []
    for exp in copy.deepcopy(paper_config["experiments"]):
        if quick.get((exp["model"], exp.get("strategy"))):
            exp["train"] = quick[(exp["model"], exp.get("strategy"))]
        cfg["experiments"].append(exp)
    return cfg


def timing_frame(names: list[str]) -> pd.DataFrame:
    """What ``mrsr timing`` writes for ``names``: native = 256 (reused), fp32, bf16 for proposed_multi_x2."""
    rows = []
    for name in names:
        job = Job.from_name(name)
        for dtype in ("fp32", "bf16") if name == "proposed_multi_x2" else ("fp32",):
            ms = (500.0 if job.model == "proposed" else 50.0) / job.scale * (6 if dtype == "bf16" else 1)
            for size in ("native", "256"):
                rows.append({"name": name, "method": job.model, "strategy": job.strategy or "", "scale": job.scale,
                             "size": size, "hr_shape": "256x256", "dtype": dtype, "runs": 10, "warmup": 1, "slices": 2,
                             "ms_per_slice": ms, "ms_min": 0.9 * ms, "ms_max": 1.3 * ms, "ms_q25": 0.95 * ms,
                             "ms_q75": 1.1 * ms, "other_load_cores": 0.1, "gflop_per_slice": 87.35 / job.scale**2,
                             "gflops": 87.35 / job.scale**2 / ms * 1e3, "lr_size": f"{256 // job.scale}",
                             "timed_as": "native", "threads": 2, "roofline_gflops": 150.0,
                             "roofline_ratio": 87.35 / job.scale**2 / ms * 1e3 / 150.0,
                             "speedup_vs_fp32": 1 / 6 if dtype == "bf16" else 1.0,
                             **({"psnr_fp32": 38.0, "psnr_bf16": 37.98, "psnr_diff_db": -0.02,
                                 "psnr_bf16_vs_fp32": 52.0} if name == "proposed_multi_x2" else {})})
    return pd.DataFrame(rows)


def _per_image(job: Job, psnr: np.ndarray, ssim: np.ndarray, seed: int | None) -> pd.DataFrame:
    return pd.DataFrame({"method": job.model, "strategy": job.strategy or "", "scale": job.scale,
                         "seed": "" if seed is None else seed, "slice_id": [f"s{i}" for i in range(len(psnr))],
                         "psnr": psnr, "ssim": ssim, "psnr_fg": psnr - 2, "seconds": 0.1})


def build_results(root: Path, config: dict) -> ReportInputs:
    """Write every input of ``mrsr.report.render`` under ``root``; return them as the report rule passes them.

    Every seed of a job (``job_seeds``) gets the seed-0 PSNRs plus ``SEED_OFFSETS[seed]``; with
    ``leakage`` set, the check's split by patient gets bicubic 0.5 dB higher and the job's gain
    ``LEAKAGE_LOSS`` dB lower than on the split by series.
    """
    rng = np.random.default_rng(0)
    jobs = training_jobs(config)
    names = [f"bicubic_x{s}" for s in config["scales"]] + [j.name for j in jobs]
    per_image_dir = root / "results/metrics/per_image"
    for folder in ("results/metrics/per_image", "results/examples", "results/timing", "models",
                   "data/prepared/store"):
        (root / folder).mkdir(parents=True)
    per_image, examples, histories = [], [], []
    for name in names:
        job = Job.from_name(name)
        gain = GAINS[f"{job.model}_{job.strategy}" if job.strategy else job.model]
        psnr = 33 + gain - job.scale + rng.random(6)
        ssim = 0.9 + 0.01 * rng.random(6)
        seeds = [None] if job.model == "bicubic" else job_seeds(config, job)
        for seed in seeds:
            path = per_image_dir / (f"{name}.csv" if seed is None else f"{seed_dir(seed)}/{name}.csv")
            path.parent.mkdir(exist_ok=True)
            _per_image(job, psnr + SEED_OFFSETS.get(seed or 0, 0.1 * (seed or 0)), ssim, seed).to_csv(path, index=False)
            per_image.append(path)
        first = "" if seeds[0] is None else f"{seed_dir(seeds[0])}/"
        hr, lr = degrade(phantom()[None], job.scale)
        sr = upscale(lr, job.scale)[0] + 0.01 * (GAINS["proposed_multi"] - gain)  # a worse PSNR, a larger offset
        examples.append(root / f"results/examples/{first}{name}.npz")
        examples[-1].parent.mkdir(exist_ok=True)
        # a slice id as the store names it: long enough to overrun a panel's width unless its label wraps
        np.savez(examples[-1], slice_id=np.array(SLICE_ID), hr=hr[0], lr=lr[0], sr=sr.astype(np.float32))
        if job.model != "bicubic":
            histories.append(root / f"models/{first}{name}.history.csv")
            histories[-1].parent.mkdir(exist_ok=True)
            pd.DataFrame({"epoch": [1, 2, 3], "loss": [0.01, 0.005, 0.003], "val_psnr": [30.0, 31.0, 31.5]}).to_csv(
                histories[-1], index=False)
    summarize(per_image).to_csv(root / "results/metrics/summary.csv", index=False)
    sidecars = []
    for job in jobs:  # the recipe table: each job's first seed, with a long recipe text as the profiles have
        sidecars.append(root / f"models/{seed_dir(job_seeds(config, job)[0])}/{job.name}.json")
        sidecars[-1].parent.mkdir(parents=True, exist_ok=True)
        sidecars[-1].write_text(json.dumps(sidecar(job.model, job.scale, job.strategy, source=LONG_RECIPE)))
    split_rows, index_rows = [], []
    for side, patient, name in SPLIT_SERIES:
        key = f"{patient}_{name}_0123abcd"
        split_rows.append({"series_key": key, "patient_id": patient, "series_uid": f"{patient}/{name}",
                           "series_description": name, "n_slices": 3, "norm": 100.0, "split": side})
        index_rows += [{"slice_id": f"{key}:{i:04d}", "series_key": key, "slice_index": i, "patient_id": patient,
                        "series_uid": f"{patient}/{name}", "series_description": name, "path": "x.nii.gz",
                        "position": float(i), "rows": 64, "cols": 64, "pixel_spacing_row": 1.0,
                        "pixel_spacing_col": 1.0, "min": 0.0, "max": 100.0, "mean": 10.0, "std": 5.0}
                       for i in range(3)]
    pd.DataFrame(split_rows).to_csv(root / "data/prepared/split.csv", index=False)
    pd.DataFrame(index_rows).to_csv(root / "data/prepared/store/index.csv", index=False)
    part = {"series": 2, "patients": 1, "slices": 6}
    (root / "data/prepared/split.json").write_text(json.dumps(
        {"by": "series", "seed": 1, "train": part, "test": part, "unused": {"series": 1, "patients": 1, "slices": 3},
         "test_patients_in_train": 1}))
    leakage_files, leakage_split = [], None
    job = leakage_job(config)
    if job is not None:
        folder = per_image_dir / "by-patient"
        base = 33.5 - job.scale + rng.random(6)
        bic = Job("bicubic", None, job.scale)
        folder.mkdir()
        leakage_files.append(folder / f"{bic.name}.csv")
        _per_image(bic, base, 0.9 + 0.01 * rng.random(6), None).to_csv(leakage_files[-1], index=False)
        gain = GAINS[f"{job.model}_{job.strategy}" if job.strategy else job.model] - LEAKAGE_LOSS
        for seed in job_seeds(config, job):
            path = folder / seed_dir(seed) / f"{job.name}.csv"
            path.parent.mkdir()
            _per_image(job, base + gain + SEED_OFFSETS.get(seed, 0.1 * seed), 0.9 + 0.01 * rng.random(6), seed).to_csv(
                path, index=False)
            leakage_files.append(path)
        leakage_split = root / "data/prepared/by-patient/split.json"
        leakage_split.parent.mkdir()
        leakage_split.write_text(json.dumps(
            {"by": "patient", "seed": 1, "train": {"series": 2, "patients": 1, "slices": 6},
             "test": {"series": 2, "patients": 1, "slices": 6}, "unused": {"series": 0, "patients": 0, "slices": 0},
             "test_patients_in_train": 0}))
    (root / "data/prepared/store/ingest.json").write_text(json.dumps(
        {"source": "sample", "series": 4, "slices": 12, "zero_slices_dropped": 0, "files_rejected": 1}))
    pd.DataFrame({"path": ["notes.bin"], "reason": ["not a DICOM file"]}).to_csv(
        root / "data/prepared/store/rejected.csv", index=False)
    timing_frame(names).to_csv(root / "results/timing/table3.csv", index=False)
    (root / "results/timing/machine.json").write_text(json.dumps({
        "cpu": "Test CPU", "cores": 2, "isa": "AVX2", "bf16_native": False, "threads": 2, "torch": "2.x",
        "flop_method": "FlopCounterMode", "roofline_gflops": 150.0, "roofline_before": {"roofline_gflops": 151.0, "roofline_n": 2048},
        "roofline_after": {"roofline_gflops": 149.0, "roofline_n": 2048}, "date": "2026-11-24",
        "timing": {"runs": 10, "warmup": 1}, "test_slices": ["s0", "s3"]}))
    return ReportInputs(
        summary=root / "results/metrics/summary.csv", per_image=per_image, examples=examples, histories=histories,
        split=root / "data/prepared/split.json", ingest=root / "data/prepared/store/ingest.json",
        rejected=root / "data/prepared/store/rejected.csv", timing=root / "results/timing/table3.csv",
        machine=root / "results/timing/machine.json", leakage_per_image=leakage_files, leakage_split=leakage_split,
        sidecars=sidecars, split_csv=root / "data/prepared/split.csv", index=root / "data/prepared/store/index.csv")


def sidecar(model: str, scale: int, strategy: str | None = None, **recipe) -> dict:
    """A weights sidecar as `mrsr train` writes it, with a recipe (``recipe`` overrides its entries)."""
    base = {"optimizer": "adam", "lr": 1e-3, "momentum": None, "weight_decay": 0.0, "loss_reduction": "mean",
            "groups": {"body": {"lr": 1e-3, "multiplier": 1.0, "parameters": 10},
                       "last": {"lr": 1e-4, "multiplier": 0.1, "parameters": 5}},
            "init": {"train": {"all": "default"}, "std": None, "model_options": {}},
            "schedule": {"kind": "cosine", "warmup_epochs": 0, "lr_min_ratio": 0.01},
            "epochs": 100, "steps_per_epoch": 110, "batch_size": 128, "clip": None, "source": "yjn870"}
    base.update(recipe)
    return {"model": model, "strategy": strategy, "scale": scale, "recipe": base,
            "initial_val_psnr": 17.0, "final_val_psnr": 36.5, "bicubic_val_psnr": 36.0}
