"""``mrsr timing``: Table 3, the CPU time of every evaluated method and scale on test slices, and the
measurement that ``mrsr benchmark`` (one model, one phantom slice) shares with it.

One process times everything, so every row shares one roofline measurement, one thread count and
one CPU (recorded in the JSON beside the CSV). Per (method, scale): the test slices at their native
size and at each configured N x N size (the centre of the slice, zero-padded where it is smaller),
float32 and, for the configured jobs, bfloat16 with its PSNR difference from float32. A size whose
slices have the same shape as an already timed one is not timed again: its row repeats the figures
and names the size it was timed as (``timed_as``).

What is measured, and how:

- Time: one forward pass per slice (LR in, SR out, batch 1) on the inference path that evaluate and
  upscale run (:mod:`mrsr.inference`: eval, channels-last, ``torch.inference_mode()``; ``bf16``
  casts weights and activations to bfloat16), after ``warmup`` untimed passes; ``runs`` timed
  passes, reported as the median with min/max and the quartiles as the spread (:func:`measure`).
  The input is prepared beforehand (degradation is not timed).
- FLOPs: :mod:`mrsr.flops`; the roofline, threads, the CPU: :mod:`mrsr.machine` (the same roofline
  training's MFU uses). ``roofline_ratio = gflops / roofline_gflops``, the roofline measured in the same process,
  with the same threads, before and after the models (the larger of the two); on a shared machine
  both figures fall together, so the ratio is steadier than either. ``threads`` 0 uses every core
  this process may run on, and ``other_load_cores`` says how many cores other processes kept busy
  while a model was timed (a timing is only as good as the CPU it got).
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.ndimage import gaussian_filter

from mrsr.config import Job, border_pixels, load_config
from mrsr.data.patches import degrade
from mrsr.data.split import add_store_and_split_arguments, read_split
from mrsr.data.testset import select_test_rows, test_slices
from mrsr.errors import existing_file, output_file
from mrsr.inference import prepare, to_input
from mrsr.flops import FLOP_METHOD, count_flops
from mrsr.io import write_csv, write_json
from mrsr.machine import OtherLoad, RooflineOfRun, cpu_info, thread_count, use_threads
from mrsr.models import SuperResolver, build_model
from mrsr.weights import load_model

def spread(seconds: np.ndarray) -> dict[str, float]:
    """Median, min, max and quartiles of per-slice times, in milliseconds."""
    ms = np.asarray(seconds, float) * 1e3
    q25, median, q75 = np.percentile(ms, [25, 50, 75])
    return {"ms_per_slice": float(median), "ms_min": float(ms.min()), "ms_max": float(ms.max()),
            "ms_q25": float(q25), "ms_q75": float(q75)}


@torch.inference_mode()
def time_forward(model: SuperResolver, inputs: list[torch.Tensor], runs: int,
                 warmup: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Seconds of each of ``runs`` forward passes (cycling over ``inputs``), after ``warmup`` passes.

    The warm-up passes are made for every distinct input shape (the first pass on a new shape
    generates its kernels and packs its weights).

    Returns:
        (seconds per timed pass, the (n*h, n*w) float32 output for each input), so that a caller
        needing the outputs (the bf16 PSNR) does not run the model again.
    """
    outputs: list[torch.Tensor | None] = [None] * len(inputs)
    first_of_shape = {tuple(x.shape): i for i, x in reversed(list(enumerate(inputs)))}
    for i in first_of_shape.values():
        for _ in range(warmup):
            outputs[i] = model(inputs[i])
    seconds = np.empty(runs)
    for i in range(runs):
        x = inputs[i % len(inputs)]
        t0 = time.perf_counter()
        outputs[i % len(inputs)] = model(x)
        seconds[i] = time.perf_counter() - t0
    return seconds, [(out if out is not None else model(x))[0, 0].float().numpy() for out, x in zip(outputs, inputs)]


def phantom(size: int, seed: int = 0) -> np.ndarray:
    """A smooth (size, size) head-like test image in [0, 1]: blurred ellipses on a zero background.

    Real content rather than noise, so timings see the zeros and small values of an MR slice.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    image = np.zeros((size, size))
    image[(xx / 0.72) ** 2 + (yy / 0.9) ** 2 <= 1] = 0.8
    for _ in range(6):
        cx, cy, rx, ry = rng.uniform(-0.4, 0.4, 2).tolist() + rng.uniform(0.08, 0.3, 2).tolist()
        image[((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1] = rng.uniform(0.2, 1.0)
    return np.clip(gaussian_filter(image, size / 256), 0, 1).astype(np.float32)


@torch.inference_mode()
def measure(model: SuperResolver, hr_slices: list[np.ndarray], scale: int, *, runs: int, warmup: int,
            dtype: str = "fp32", flops: float | None = None) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Time ``model`` (already :func:`~mrsr.inference.prepare`-d for ``dtype``) on the LR versions of
    ``hr_slices``.

    Args:
        model: the prepared model.
        hr_slices: (H, W) HR slices; each is degraded to its LR input first (not timed).
        scale: the model's scale.
        runs: timed passes (cycling over the slices); ``warmup``: untimed passes per input shape first.
        dtype: ``fp32`` or ``bf16``, the model's.
        flops: FLOPs of one pass (:func:`mrsr.flops.count_flops`), for ``gflops``; None leaves it out.

    Returns:
        (timing figures of :func:`spread` plus ``gflop_per_slice`` and achieved ``gflops``,
        the SR output of each slice).
    """
    lrs = [degrade(hr[None], scale)[1][0] for hr in hr_slices]
    inputs = [to_input(lr, dtype) for lr in lrs]
    with OtherLoad() as load:
        seconds, outputs = time_forward(model, inputs, runs, warmup)
    result = spread(seconds)
    result["other_load_cores"] = load.cores
    if flops is not None:
        result["gflop_per_slice"] = flops / 1e9
        result["gflops"] = flops / 1e9 / (result["ms_per_slice"] / 1e3)
    result["lr_size"] = "x".join(str(s) for s in lrs[0].shape)
    return result, outputs


def bf16_psnr(hr_slices: list[np.ndarray], sr32: list[np.ndarray], sr16: list[np.ndarray], scale: int,
              border: int, threshold: float = 0.05) -> dict[str, float]:
    """Mean PSNR (project recipe) of the fp32 and bf16 outputs against HR, and of bf16 against fp32.

    Args:
        hr_slices: the HR slices; ``sr32``/``sr16``: the two paths' outputs for them, in order.
    """
    from mrsr.metrics import psnr, slice_metrics  # deferred: scikit-image/scipy only when needed

    p32, p16, agree = [], [], []
    for slice_hr, sr32, sr16 in zip(hr_slices, sr32, sr16):
        hr = degrade(slice_hr[None], scale)[0]
        p32.append(slice_metrics(hr[0], sr32, border, threshold)["psnr"])
        p16.append(slice_metrics(hr[0], sr16, border, threshold)["psnr"])
        agree.append(psnr(np.clip(sr32, 0, 1), np.clip(sr16, 0, 1)))
    return {"psnr_fp32": float(np.mean(p32)), "psnr_bf16": float(np.mean(p16)),
            "psnr_diff_db": float(np.mean(p16) - np.mean(p32)), "psnr_bf16_vs_fp32": float(np.mean(agree))}


def fit(image: np.ndarray, size: int) -> np.ndarray:
    """The centre ``size`` x ``size`` of ``image``, zero-padded (MR background) where it is smaller."""
    out = np.zeros((size, size), np.float32)
    h, w = image.shape
    ch, cw = min(h, size), min(w, size)
    top, left = (h - ch) // 2, (w - cw) // 2
    otop, oleft = (size - ch) // 2, (size - cw) // 2
    out[otop:otop + ch, oleft:oleft + cw] = image[top:top + ch, left:left + cw]
    return out


def slices_by_size(slices: list[np.ndarray], sizes: list[str | int]) -> dict[str, list[np.ndarray]]:
    """size label ("native", "256", ...) -> the HR slices to time at that size."""
    return {str(s): slices if s == "native" else [fit(x, int(s)) for x in slices] for s in sizes}


def wants_bf16(tcfg: dict[str, Any], name: str) -> bool:
    jobs = tcfg["bf16_jobs"]
    return "bf16" in tcfg["dtypes"] and (jobs == "all" or name in jobs)


def time_method(name: str, model: SuperResolver, scale: int, by_size: dict[str, list[np.ndarray]],
                tcfg: dict[str, Any], border: int) -> list[dict[str, Any]]:
    """Rows for one (method, scale): every size, fp32 and, if configured, bf16."""
    job = Job.from_name(name)
    dtypes = ["fp32"] + (["bf16"] if wants_bf16(tcfg, name) else [])
    rows: list[dict[str, Any]] = []
    models = {d: prepare(copy.deepcopy(model), d) for d in dtypes}
    first = next(iter(by_size))
    outputs: dict[str, list[np.ndarray]] = {}  # dtype -> SR of the first size's slices (bf16 PSNR)
    for dtype in dtypes:
        runs = tcfg["runs"] if dtype == "fp32" or not tcfg["bf16_runs"] else tcfg["bf16_runs"]
        timed: dict[tuple, dict[str, Any]] = {}  # shapes of the slices -> the figures measured for them
        for label, hr in by_size.items():
            shapes = tuple(sorted({x.shape for x in hr}))
            row = {"name": name, "method": job.model, "strategy": job.strategy or "", "scale": scale,
                   "size": label, "hr_shape": "x".join(map(str, hr[0].shape)), "dtype": dtype, "runs": runs,
                   "warmup": tcfg["warmup"], "slices": len(hr)}
            if shapes in timed:
                row.update({k: v for k, v in timed[shapes].items() if k not in row}, timed_as=timed[shapes]["size"])
            else:
                flops = count_flops(model, to_input(degrade(hr[0][None], scale)[1][0]))
                figures, srs = measure(models[dtype], hr, scale, runs=runs, warmup=tcfg["warmup"], dtype=dtype,
                                       flops=flops)
                row.update(figures, timed_as=label)
                timed[shapes] = row
                if label == first:
                    outputs[dtype] = srs
            rows.append(row)
    if "bf16" in models:
        psnr = bf16_psnr(by_size[first], outputs["fp32"], outputs["bf16"], scale, border)
        for row in rows:
            row.update(psnr)
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="workflow config (timing section, scales)")
    add_store_and_split_arguments(parser)
    parser.add_argument("--out", required=True, type=output_file, help="CSV, one row per (method, scale, size, dtype)")
    parser.add_argument("--machine", required=True, type=output_file, help="JSON: CPU, threads, roofline, versions")
    parser.add_argument("--threads", type=thread_count, help="torch threads (overrides timing.threads; 0 = every core)")
    parser.add_argument("weights", nargs="*", type=existing_file, metavar="WEIGHTS",
                        help=".safetensors of the trained models to time (rows are named after their sidecars)")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    tcfg = config["timing"]  # complete: loading filled in the schema's defaults
    # Every model is loaded (a bad weights file refused) before the slow part starts.
    methods: list[tuple[str, SuperResolver, int]] = [(f"bicubic_x{s}", build_model("bicubic", s), s)
                                                     for s in config["scales"]]
    for path in args.weights:
        model, meta = load_model(path)
        # Rows are labelled from the sidecar, not the file name: a renamed file keeps its model's name.
        job = Job(meta["model"], meta["strategy"], int(meta["scale"]))
        methods.append((job.name, model, job.scale))
    threads = use_threads(tcfg["threads"] if args.threads is None else args.threads)
    split = read_split(args.split)
    rows = select_test_rows(args.store, split, tcfg["slices"])
    by_size = slices_by_size([hr for _, hr in test_slices(args.store, split, rows)], tcfg["sizes"])
    records = []
    with RooflineOfRun(tcfg["roofline_n"]) as roofline:
        for name, model, scale in methods:
            records += time_method(name, model, scale, by_size, tcfg, border_pixels(config, scale))
            print(f"timed {name}", flush=True)
    frame = pd.DataFrame(records)
    frame["threads"] = threads
    frame["roofline_gflops"] = roofline.gflops
    frame["roofline_ratio"] = frame["gflops"] / roofline.gflops
    fp32 = frame[frame["dtype"] == "fp32"].set_index(["name", "size"])["ms_per_slice"]
    frame["speedup_vs_fp32"] = [fp32.get((r.name, r.size), np.nan) / r.ms_per_slice for r in frame.itertuples()]
    write_csv(args.out, frame)
    machine = {**cpu_info(), "threads": threads, "torch": torch.__version__, "flop_method": FLOP_METHOD,
               **roofline.figures(), "date": dt.date.today().isoformat(), "timing": tcfg,
               "test_slices": rows["slice_id"].tolist()}
    write_json(args.machine, machine)
    print(frame[["name", "size", "dtype", "ms_per_slice", "gflops", "roofline_ratio"]].to_string(index=False))
    return 0
