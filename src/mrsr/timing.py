"""``mrsr timing``: Table 3, the CPU time of every evaluated method and scale on test slices.

One process times everything, so every row shares one roofline measurement, one thread count and
one CPU (recorded in the JSON beside the CSV). Per (method, scale): the test slices at their native
size and at each configured N x N size (the centre of the slice, zero-padded where it is smaller),
float32 and, for the configured jobs, bfloat16 with its PSNR difference from float32. A size whose
slices have the same shape as an already timed one is not timed again: its row repeats the figures
and names the size it was timed as (``timed_as``). Measurement details: :mod:`mrsr.benchmark`.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mrsr.benchmark import (FLOP_METHOD, bf16_psnr, burn_in, count_flops, cpu_info, matmul_gflops, measure, prepare,
                            resolve_threads, roofline_of_run, to_input)
from mrsr.config import Job, border_pixels, load_config
from mrsr.data.patches import degrade
from mrsr.errors import existing_dir, existing_file, output_file
from mrsr.evaluate import select_test_rows, test_slices
from mrsr.io import write_csv, write_json
from mrsr.models import SuperResolver, build_model
from mrsr.weights import load_model

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
    parser.add_argument("--store", required=True, type=existing_dir, help="slice store folder (mrsr ingest)")
    parser.add_argument("--split", required=True, type=existing_file, help="split.csv (mrsr split)")
    parser.add_argument("--out", required=True, type=output_file, help="CSV, one row per (method, scale, size, dtype)")
    parser.add_argument("--machine", required=True, type=output_file, help="JSON: CPU, threads, roofline, versions")
    parser.add_argument("--threads", type=int, help="torch threads (overrides timing.threads; 0 = every core)")
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
    threads = resolve_threads(tcfg["threads"] if args.threads is None else args.threads)
    torch.set_num_threads(threads)
    split = pd.read_csv(args.split, dtype={"patient_id": str, "series_key": str})
    rows = select_test_rows(args.store, split, tcfg["slices"])
    by_size = slices_by_size([hr for _, hr in test_slices(args.store, split, rows)], tcfg["sizes"])
    burn_in()
    before = matmul_gflops(tcfg["roofline_n"])
    records = []
    for name, model, scale in methods:
        records += time_method(name, model, scale, by_size, tcfg, border_pixels(config, scale))
        print(f"timed {name}", flush=True)
    after = matmul_gflops(tcfg["roofline_n"])
    roofline = roofline_of_run(before, after)
    frame = pd.DataFrame(records)
    frame["threads"] = threads
    frame["roofline_gflops"] = roofline
    frame["roofline_ratio"] = frame["gflops"] / roofline
    fp32 = frame[frame["dtype"] == "fp32"].set_index(["name", "size"])["ms_per_slice"]
    frame["speedup_vs_fp32"] = [fp32.get((r.name, r.size), np.nan) / r.ms_per_slice for r in frame.itertuples()]
    write_csv(args.out, frame)
    machine = {**cpu_info(), "threads": threads, "torch": torch.__version__, "flop_method": FLOP_METHOD,
               "roofline_gflops": roofline, "roofline_before": before, "roofline_after": after,
               "date": dt.date.today().isoformat(), "timing": tcfg, "test_slices": rows["slice_id"].tolist()}
    write_json(args.machine, machine)
    print(frame[["name", "size", "dtype", "ms_per_slice", "gflops", "roofline_ratio"]].to_string(index=False))
    return 0
