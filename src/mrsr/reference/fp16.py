"""Half-precision copies of the reference's large weights, kept only where they reproduce its figures.

The proposed net's weights are 10.7 MB in fp32, five jobs of it half of what docs/reference/cpu may
hold (:data:`LIMIT_BYTES`). :func:`compact` writes each committed job's weights above
:data:`MIN_BYTES` in fp16, evaluates that copy on the test split exactly as the workflow's evaluate
rule did, and replaces the committed fp32 file only when every test slice's PSNR is within
:data:`TOLERANCE_DB` of the committed per-image CSV (computed from the fp32 weights, and kept). Each
decision is a row of :data:`FP16_CSV` with the SHA-256 of both files: the fp32 original stays in git
history, named by its hash. A restored fp16 file loads into the fp32 model as any other (the loader
casts), so the workflow treats it as the job's weights.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mrsr.config import Job, border_pixels, file_sha256, load_config
from mrsr.io import atomic_path, write_csv

from . import PROFILE, REFERENCE_DIR, ROOT, committed, done_jobs, workflow_files

FP16_CSV = REFERENCE_DIR / "fp16.csv"
LIMIT_BYTES = 80_000_000  # docs/reference/cpu as a whole
MIN_BYTES = 4_000_000  # the proposed net (10.7 MB); de-CNN (2.7 MB), FSCWN (3.5 MB) and the light nets stay fp32
TOLERANCE_DB = 0.01


def is_half(weights: Path) -> bool:
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as f:
        return all(str(f.get_slice(k).get_dtype()) == "F16" for k in f.keys())


def half_copy(weights: Path, out: Path) -> None:
    """``weights`` with every floating tensor in fp16, the safetensors header (provenance) unchanged."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(weights), framework="pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    save_file({k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}, str(out), metadata=metadata)


def compact(root: Path = ROOT, store: Path | None = None, split: Path | None = None) -> pd.DataFrame:
    """fp16 in place of each large committed fp32 file that reproduces every test slice's PSNR.

    Args:
        root: the repository.
        store, split: the profile's slice store and split (default ``data/prepared/<profile>/``).

    Returns:
        FP16_CSV's rows: job, both SHA-256s, the largest per-slice PSNR difference, whether kept.
    """
    import shutil

    from mrsr.data.split import read_split
    from mrsr.evaluate import evaluate
    from mrsr.inference import load_for_inference
    from mrsr.weights import sidecar_path

    config = load_config(root / PROFILE, base_dir=root)
    prepared = root / "data" / "prepared" / config["profile"]
    store, split = store or prepared / "store", split or prepared / "split.csv"
    path = root / FP16_CSV
    rows = pd.read_csv(path).to_dict("records") if path.exists() else []
    decided = {r["job"] for r in rows}
    for job in done_jobs(root):
        weights = root / committed(workflow_files(job)["weights"])
        if job in decided or weights.stat().st_size < MIN_BYTES or is_half(weights):
            continue
        spec = Job.from_name(job)
        half = weights.with_name(weights.stem + ".fp16.safetensors")
        try:
            half_copy(weights, half)
            shutil.copyfile(sidecar_path(weights), sidecar_path(half))
            model, _ = load_for_inference(spec.model, spec.scale, half)
            frame, _ = evaluate(model, store, read_split(split), spec.scale, border_pixels(config, spec.scale),
                                config["evaluate"]["foreground_threshold"], config["evaluate"]["max_test_slices"])
            fp32 = pd.read_csv(root / committed(workflow_files(job)["per_image"]))
            merged = fp32.merge(frame, on="slice_id", suffixes=("", "_half"))
            if len(merged) != len(fp32):
                raise ValueError(f"{job}: the fp16 evaluation covers {len(merged)} of {len(fp32)} test slices")
            diff = (merged["psnr_half"] - merged["psnr"]).abs()
            kept = bool(diff.max() <= TOLERANCE_DB)
            row = {"job": job, "fp32_sha256": file_sha256(weights), "fp16_sha256": file_sha256(half),
                   "slices": len(merged), "max_abs_psnr_diff_db": float(diff.max()),
                   "mean_psnr_diff_db": float((merged["psnr_half"] - merged["psnr"]).mean()),
                   "max_abs_ssim_diff": float((merged["ssim_half"] - merged["ssim"]).abs().max()), "kept_fp16": kept}
            if kept:
                with atomic_path(weights, suffix=".safetensors") as tmp:
                    shutil.copyfile(half, tmp)
            rows.append(row)
            print(f"{job}: fp16 {'kept' if kept else 'refused'}, largest per-slice PSNR change "
                  f"{row['max_abs_psnr_diff_db']:.4f} dB over {len(merged)} slices")
        finally:
            half.unlink(missing_ok=True)
            sidecar_path(half).unlink(missing_ok=True)
    frame = pd.DataFrame(rows)
    write_csv(path, frame)
    return frame


def reference_bytes(root: Path = ROOT) -> int:
    """What docs/reference/cpu holds, in bytes."""
    return sum(p.stat().st_size for p in (root / REFERENCE_DIR).rglob("*") if p.is_file())
