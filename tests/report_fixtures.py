"""A small results tree (metrics, examples, histories, split, ingest, timing) that ``mrsr.report``
renders in about a second, for the report tests."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd

from mrsr.config import Job, training_jobs
from mrsr.data.patches import degrade
from mrsr.data.resize import upscale
from mrsr.report import ReportInputs


def phantom(size: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    return np.where(xx**2 / 0.6 + yy**2 / 0.8 <= 1, 0.5 + 0.4 * np.cos(6 * xx) * np.sin(4 * yy), 0.0).astype(np.float32)


# Mean PSNR gain over bicubic that build_results gives each job (the noise is under 1 dB): ESPCN
# and the single strategy fall below bicubic, as under-trained networks of the quick profile do.
GAINS = {"bicubic": 0.0, "srcnn": 1.0, "espcn": -1.0, "fsrcnn": 0.5, "decnn": 0.8, "fscwn": 0.3,
         "proposed_multi": 1.5, "proposed_double": 1.2, "proposed_single": -2.0}


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


def build_results(root: Path, config: dict) -> ReportInputs:
    """Write every input of ``mrsr.report.render`` under ``root``; return them as the report rule passes them."""
    rng = np.random.default_rng(0)
    jobs = training_jobs(config)
    names = [f"bicubic_x{s}" for s in config["scales"]] + [j.name for j in jobs]
    (root / "results/metrics/per_image").mkdir(parents=True)
    (root / "results/examples").mkdir(parents=True)
    (root / "results/timing").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "data/prepared/store").mkdir(parents=True)
    summary = []
    for name in names:
        job = Job.from_name(name)
        gain = GAINS[f"{job.model}_{job.strategy}" if job.strategy else job.model]
        psnr = 33 + gain - job.scale + rng.random(6)
        pd.DataFrame({"method": job.model, "strategy": job.strategy or "", "scale": job.scale,
                      "slice_id": [f"s{i}" for i in range(6)], "psnr": psnr, "ssim": 0.9 + 0.01 * rng.random(6),
                      "psnr_fg": psnr - 2, "seconds": 0.1}).to_csv(root / f"results/metrics/per_image/{name}.csv", index=False)
        summary.append({"method": job.model, "strategy": job.strategy or "", "scale": job.scale, "psnr": psnr.mean(),
                        "ssim": 0.9, "n_images": 6, "psnr_std": psnr.std(), "ssim_std": 0.01, "psnr_fg": psnr.mean() - 2})
        hr, lr = degrade(phantom()[None], job.scale)
        sr = upscale(lr, job.scale)[0] + 0.01 * (GAINS["proposed_multi"] - gain)  # a worse PSNR, a larger offset
        np.savez(root / f"results/examples/{name}.npz", slice_id=np.array("s0"), hr=hr[0], lr=lr[0], sr=sr.astype(np.float32))
    pd.DataFrame(summary).to_csv(root / "results/metrics/summary.csv", index=False)
    for job in jobs:
        pd.DataFrame({"epoch": [1, 2, 3], "loss": [0.01, 0.005, 0.003], "val_psnr": [30.0, 31.0, 31.5]}).to_csv(
            root / f"models/{job.name}.history.csv", index=False)
    part = {"series": 2, "patients": 1, "slices": 6}
    (root / "data/prepared/split.json").write_text(json.dumps(
        {"by": "series", "seed": 1, "train": part, "test": part, "unused": {"series": 0, "patients": 0, "slices": 0}}))
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
        summary=root / "results/metrics/summary.csv",
        per_image=[root / f"results/metrics/per_image/{n}.csv" for n in names],
        examples=[root / f"results/examples/{n}.npz" for n in names],
        histories=[root / f"models/{j.name}.history.csv" for j in jobs],
        split=root / "data/prepared/split.json", ingest=root / "data/prepared/store/ingest.json",
        rejected=root / "data/prepared/store/rejected.csv", timing=root / "results/timing/table3.csv",
        machine=root / "results/timing/machine.json")
