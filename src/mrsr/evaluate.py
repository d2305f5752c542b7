"""``mrsr evaluate`` and ``mrsr summarize``: metrics on the test split (recipe: :mod:`mrsr.metrics`).

``evaluate`` runs one method (a trained weights file, or ``bicubic``) at one scale on every test
slice: HR = the normalised, mod-cropped slice; LR = its bicubic downscaling; SR = the method's
full-image output. It writes one CSV row per slice (with the training seed of the weights, from
their sidecar; empty for bicubic), and keeps one example slice's images (npz) for the report's
visual comparison. ``summarize`` collects those CSVs into summary.csv, one row per (method,
strategy, scale): the mean over training seeds of each seed's mean, and the spread across seeds.

Nothing is averaged over NaN: a test slice or a model output holding NaN or Inf stops ``evaluate``
with the slice named (the store never holds such slices, so it means stale data or diverged
weights), and ``summarize`` refuses per-image rows whose PSNR or SSIM is NaN. Only ``psnr_fg`` may be
NaN by definition (a slice without foreground); its mean is over the slices that have one.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mrsr.config import border_pixels, load_config
from mrsr.data.patches import degrade
from mrsr.data.split import add_store_and_split_arguments, read_split
from mrsr.data.testset import select_test_rows, test_slices
from mrsr.errors import UsageError, existing_file, output_file
from mrsr.inference import load_for_inference, prepare, super_resolve, to_input
from mrsr.io import atomic_path, write_csv, write_json
from mrsr.machine import thread_count, use_threads
from mrsr.metrics import slice_metrics
from mrsr.models import MODEL_REGISTRY, SuperResolver

SUMMARY_COLUMNS = ["method", "strategy", "scale", "psnr", "ssim", "n_images", "psnr_std", "ssim_std", "psnr_fg",
                   "n_seeds", "psnr_seed_std", "ssim_seed_std"]


def example_slice_id(rows: pd.DataFrame) -> str:
    """The slice shown in the report's Figure 3: the evaluated slice with the most signal."""
    return str(rows.sort_values(["mean", "slice_id"], ascending=[False, True])["slice_id"].iloc[0])


def evaluate(model: SuperResolver, store: Path, split: pd.DataFrame, scale: int, border: int,
             foreground_threshold: float, max_slices: int | None = None, example_id: str | None = None):
    """Per-slice metrics of ``model``; returns (DataFrame, example images dict or None)."""
    prepare(model)  # the inference path that Table 3 times and upscale runs (mrsr.inference)
    records, example = [], None
    rows = select_test_rows(store, split, max_slices)
    example_id = example_id or example_slice_id(rows)
    for row, slice_hr in test_slices(store, split, rows):
        if not np.isfinite(slice_hr).all():
            raise ValueError(f"test slice {row.slice_id} holds NaN or infinite values after normalisation: "
                             "ingest and split again (ingest drops such slices)")
        hr, lr = degrade(slice_hr[None], scale)
        t0 = time.perf_counter()
        sr = super_resolve(model, to_input(lr[0]))
        seconds = time.perf_counter() - t0
        if sr.shape != hr[0].shape:
            raise RuntimeError(f"{type(model).__name__} returned {sr.shape} for LR {lr.shape[1:]}; expected {hr[0].shape}")
        if not np.isfinite(sr).all():
            raise ValueError(f"{type(model).__name__} output for test slice {row.slice_id} holds NaN or infinite "
                             "values: the weights are broken (diverged training?); no metric is defined")
        records.append({"slice_id": row.slice_id, "series_key": row.series_key, "patient_id": row.patient_id,
                        **slice_metrics(hr[0], sr, border, foreground_threshold), "seconds": seconds})
        if row.slice_id == example_id:
            example = {"slice_id": np.array(row.slice_id), "hr": hr[0], "lr": lr[0], "sr": sr.astype(np.float32)}
    return pd.DataFrame(records), example


def refuse_nan_metrics(frame: pd.DataFrame, where: str) -> None:
    """Raise ValueError when a per-image row has a NaN PSNR or SSIM (a mean would skip or propagate it).

    Args:
        frame: per-image rows (``slice_id``, ``psnr``, ``ssim``).
        where: what the rows are, for the message (a file or a method).
    """
    metrics = frame[["psnr", "ssim"]].apply(pd.to_numeric, errors="coerce")
    bad = metrics.isna().any(axis=1)
    if bad.any():
        raise ValueError(f"{where}: {int(bad.sum())} of {len(frame)} slices have no PSNR/SSIM (NaN), e.g. slice "
                         f"{frame.loc[bad, 'slice_id'].iloc[0]} (smaller than the border crop and SSIM window?); "
                         "no mean is reported over the rest")


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", required=True, choices=sorted(MODEL_REGISTRY), metavar="METHOD",
                        help=f"registry name, one of {', '.join(sorted(MODEL_REGISTRY))}; "
                             "every method but bicubic needs --weights")
    parser.add_argument("--weights", type=existing_file,
                        help=".safetensors of a trained METHOD model at SCALE (not for bicubic)")
    parser.add_argument("--scale", required=True, type=int, help="upscaling factor")
    add_store_and_split_arguments(parser)
    parser.add_argument("--config", required=True, type=Path, help="workflow config (evaluate section)")
    parser.add_argument("--out", required=True, type=output_file, help="per-image CSV to write")
    parser.add_argument("--example", type=output_file, help="npz to write with the example slice's images")
    parser.add_argument("--threads", type=thread_count, default=0, help="torch threads; 0 = every available core")


def run_evaluate(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    use_threads(args.threads)
    if args.weights is None and args.method != "bicubic":  # the one registered model without learned weights
        raise UsageError(f"--weights: required with --method {args.method} (only bicubic runs without trained weights)")
    model, meta = load_for_inference(args.method, args.scale, args.weights)
    strategy = meta.get("strategy")
    seed = (meta.get("train") or {}).get("seed")
    split = read_split(args.split)
    ecfg = config["evaluate"]
    frame, example = evaluate(model, args.store, split, args.scale, border_pixels(config, args.scale),
                              ecfg["foreground_threshold"], ecfg["max_test_slices"])
    refuse_nan_metrics(frame, f"{args.method} x{args.scale}")
    frame.insert(0, "method", args.method)
    frame.insert(1, "strategy", strategy or "")
    frame.insert(2, "scale", args.scale)
    frame.insert(3, "seed", "" if seed is None else int(seed))  # the training run: mrsr summarize groups by it
    write_csv(args.out, frame)
    if args.example and example is not None:
        with atomic_path(args.example, suffix=".npz") as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, **example)
    print(f"{args.method} {strategy or ''} x{args.scale}: PSNR {frame['psnr'].mean():.2f} dB, "
          f"SSIM {frame['ssim'].mean():.4f} over {len(frame)} slices")
    return 0


def summarize(per_image: list[Path]) -> pd.DataFrame:
    """One row per (method, strategy, scale) over its training seeds, never over NaN.

    Each seed's run is first summarised over its test slices; then, across seeds: ``psnr``,
    ``ssim``, ``psnr_fg``: the mean of the seeds' means; ``psnr_std``, ``ssim_std``: the mean of
    the seeds' standard deviations over slices; ``n_images``: slices per seed; ``n_seeds``: training
    seeds (0 for bicubic, which has none); ``psnr_seed_std``, ``ssim_seed_std``: the sample standard
    deviation (ddof 1) of the seeds' means, empty with fewer than two seeds. With one seed every
    column but the last three means what it meant before seeds: statistics over the test slices.

    Args:
        per_image: per-image CSVs written by ``mrsr evaluate`` (a file without a ``seed`` column is
            one run without a seed).

    Raises:
        ValueError: a row's PSNR or SSIM is NaN (pandas would skip it silently), two files hold the
            same (method, strategy, scale, seed), or the seeds of one method were evaluated on
            different slices; each naming the files.
    """
    frames = [pd.read_csv(p, keep_default_na=False, dtype={"strategy": str, "seed": str}) for p in per_image]
    runs: dict[tuple, Path] = {}
    for path, frame in zip(per_image, frames):
        refuse_nan_metrics(frame, str(path))
        frame["seed"] = frame["seed"].astype(str) if "seed" in frame else ""
        for key in frame[["method", "strategy", "scale", "seed"]].drop_duplicates().itertuples(index=False, name=None):
            if key in runs:
                raise ValueError(f"{path} and {runs[key]}: both hold {key[0]} {key[1]} x{key[2]} seed {key[3] or '-'}; "
                                 "each run's per-image metrics belong in one file")
            runs[key] = Path(path)
    data = pd.concat(frames, ignore_index=True)
    keys = ["method", "strategy", "scale"]
    per_seed = data.groupby([*keys, "seed"], sort=True).agg(
        psnr=("psnr", "mean"), ssim=("ssim", "mean"), n_images=("psnr", "size"), psnr_std=("psnr", "std"),
        ssim_std=("ssim", "std"), psnr_fg=("psnr_fg", "mean"),
        slices=("slice_id", lambda ids: tuple(sorted(map(str, ids))))).reset_index()
    for key, group in per_seed.groupby(keys, sort=True):
        if group["slices"].nunique() > 1:
            files = ", ".join(str(runs[(*key, seed)]) for seed in group["seed"])
            raise ValueError(f"{files}: the seeds of {key[0]} {key[1]} x{key[2]} were evaluated on different test "
                             "slices; evaluate them all again")
    summary = per_seed.groupby(keys, sort=True).agg(
        psnr=("psnr", "mean"), ssim=("ssim", "mean"), n_images=("n_images", "first"), psnr_std=("psnr_std", "mean"),
        ssim_std=("ssim_std", "mean"), psnr_fg=("psnr_fg", "mean"), n_seeds=("seed", lambda s: int((s != "").sum())),
        psnr_seed_std=("psnr", "std"), ssim_seed_std=("ssim", "std")).reset_index()
    return summary[SUMMARY_COLUMNS]


def add_summarize_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=output_file, help="summary.csv to write")
    parser.add_argument("--headline", type=output_file, help="JSON of headline metrics for `dvc metrics show`")
    parser.add_argument("inputs", nargs="+", type=existing_file, metavar="CSV", help="per-image CSVs (mrsr evaluate)")


def headline(summary: pd.DataFrame) -> dict[str, dict[str, float]]:
    """A few numbers for `dvc metrics show`: per scale, the proposed net's PSNR and SSIM (means over its
    seeds) and its PSNR gain over bicubic (the full table is summary.csv). A scale without the
    proposed net is omitted."""
    out = {}
    for scale, rows in summary.groupby("scale"):
        ours = rows[(rows["method"] == "proposed") & (rows["strategy"] == "multi")]
        bicubic = rows[rows["method"] == "bicubic"]
        if ours.empty:
            continue
        entry = {"psnr": round(float(ours["psnr"].iloc[0]), 3), "ssim": round(float(ours["ssim"].iloc[0]), 4)}
        if not bicubic.empty:
            entry["gain_db"] = round(float(ours["psnr"].iloc[0] - bicubic["psnr"].iloc[0]), 3)
        out[f"x{int(scale)}"] = entry
    return out


def run_summarize(args: argparse.Namespace) -> int:
    summary = summarize(args.inputs)
    write_csv(args.out, summary)
    if args.headline:
        write_json(args.headline, headline(summary))
    print(summary.to_string(index=False))
    return 0
