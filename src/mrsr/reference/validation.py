"""The reference's networks on the validation slices, and which proposed net may ship.

The zoo takes a network from the reference only where it beats the network it would replace on both
sides of the split: on the held-out validation slices (where recipes were chosen) and on the test
split. Training records only the mean validation PSNR, in bf16 on the training device; a paired
comparison needs each slice, computed the same way for every candidate. :func:`validate` evaluates
every committed job and every shipped network, in fp32, on the profile's first ``train.val_slices``
validation slices (the slices each job saw during training) and keeps one row per network and slice in
:data:`VALIDATION_CSV`, keyed by the weights' SHA-256 so that only new or changed weights are evaluated.
:func:`shipping_frame` then compares, per scale, the proposed net (multi) with the shipped FSRCNN (the
default of every scale before the reference) and writes :data:`SHIPPING_CSV`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from mrsr.config import border_pixels, file_sha256, load_config
from mrsr.io import write_csv

from . import PROFILE, REFERENCE_DIR, ROOT, committed, done_jobs, shipped_csv, workflow_files

VALIDATION_CSV = REFERENCE_DIR / "results" / "metrics" / "validation.csv"
SHIPPING_CSV = REFERENCE_DIR / "shipping.csv"
CANDIDATE = "proposed_multi_x{scale}"  # the reference job that may ship at each scale
INCUMBENT = "fsrcnn-x{scale}"  # the shipped network it has to beat


def candidates(root: Path = ROOT) -> dict[str, Path]:
    """Every network to validate: committed jobs by job name, shipped ones by zoo name."""
    from mrsr.zoo import read_manifest
    from mrsr.zoo.manifest import zoo_dir

    nets = {job: root / committed(workflow_files(job)["weights"]) for job in done_jobs(root)}
    nets.update({name: zoo_dir() / f"{name}.safetensors" for name in sorted(read_manifest().models)})
    return nets


def validate(root: Path = ROOT, patches_dir: Path | None = None, threads: int = 1) -> pd.DataFrame:
    """Per-slice validation PSNR of every network (and of bicubic at each scale) into VALIDATION_CSV.

    Args:
        root: the repository.
        patches_dir: the profile's patch files (``x{scale}.npz`` with ``val_lr_K``/``val_hr_K``);
            default ``data/prepared/<profile>/patches`` (``snakemake prepare`` writes them).
        threads: torch CPU threads.
    """
    import torch

    from mrsr.models import build_model
    from mrsr.train import validation_psnrs
    from mrsr.weights import load_model, read_sidecar

    torch.set_num_threads(threads)
    config = load_config(root / PROFILE, base_dir=root)
    patches_dir = patches_dir or root / "data" / "prepared" / config["profile"] / "patches"
    path = root / VALIDATION_CSV
    old = pd.read_csv(path, keep_default_na=False) if path.exists() else pd.DataFrame(columns=["name", "sha256"])
    rows, pairs_at = [], {}

    def pairs(scale: int) -> list[tuple[np.ndarray, np.ndarray]]:
        if scale not in pairs_at:
            with np.load(patches_dir / f"x{scale}.npz") as data:
                stored = sum(k.startswith("val_lr_") for k in data.files)
                n = min(stored, config["train"]["val_slices"])
                pairs_at[scale] = [(data[f"val_lr_{i}"], data[f"val_hr_{i}"]) for i in range(n)]
        return pairs_at[scale]

    def record(name: str, sha: str, meta: dict, load: Callable[[], torch.nn.Module]) -> None:
        """Rows kept from VALIDATION_CSV for the same weights, else the network loaded and evaluated."""
        scale = int(meta["scale"])
        known = old[(old["name"] == name) & (old["sha256"] == sha)]
        if len(known) == len(pairs(scale)) > 0:
            rows.extend(known.to_dict("records"))
            return
        values = validation_psnrs(load(), pairs(scale), border_pixels(config, scale), torch.device("cpu"))
        rows.extend({"name": name, "method": meta["model"], "strategy": meta.get("strategy") or "", "scale": scale,
                     "slice": i, "psnr": v, "sha256": sha} for i, v in enumerate(values))
        print(f"{name}: validation PSNR {np.mean(values):.2f} dB on {len(values)} slices")

    nets = {name: (weights, read_sidecar(weights)) for name, weights in candidates(root).items()}
    for scale in sorted({int(meta["scale"]) for _, meta in nets.values()}):
        record(f"bicubic_x{scale}", "", {"model": "bicubic", "scale": scale}, lambda s=scale: build_model("bicubic", s))
    for name, (weights, meta) in nets.items():
        record(name, file_sha256(weights), meta, lambda w=weights: load_model(w)[0])
    frame = pd.DataFrame(rows)
    write_csv(path, frame)
    return frame


def shipping_frame(root: Path = ROOT) -> pd.DataFrame:
    """Per scale with a committed candidate: its PSNR against the incumbent on validation and test.

    ``ships`` is true where the candidate's paired mean gain over the incumbent is positive with its
    95 % bootstrap interval above zero on both the validation slices and the test split.
    """
    from mrsr.report.tables import paired_comparison

    validation = pd.read_csv(root / VALIDATION_CSV, keep_default_na=False)
    rows, done = [], done_jobs(root)
    for scale in (2, 3, 4):
        job, rival = CANDIDATE.format(scale=scale), INCUMBENT.format(scale=scale)
        if job not in done or not (root / shipped_csv(rival)).exists():
            continue
        row = {"scale": scale, "candidate": job, "incumbent": rival}
        for side, frames in (("validation", [validation[validation["name"] == n].rename(columns={"slice": "slice_id"})
                                             for n in (job, rival)]),
                             ("test", [pd.read_csv(root / p) for p in (committed(workflow_files(job)["per_image"]),
                                                                         shipped_csv(rival))])):
            cand, inc = frames
            if len(cand) == 0 or len(inc) == 0:
                raise ValueError(f"{VALIDATION_CSV}: no {side} rows for {job} or {rival}: run mrsr reference validate")
            result = paired_comparison(cand, inc)
            mean, low, high = result["ci"]
            row.update({f"{side}_candidate": cand["psnr"].mean(), f"{side}_incumbent": inc["psnr"].mean(),
                        f"{side}_gain": mean, f"{side}_low": low, f"{side}_high": high, f"{side}_n": result["n"]})
        row["ships"] = bool(row["validation_low"] > 0 and row["test_low"] > 0)
        rows.append(row)
    return pd.DataFrame(rows)


def write_shipping(root: Path = ROOT) -> Path:
    path = root / SHIPPING_CSV
    write_csv(path, shipping_frame(root))
    return path
