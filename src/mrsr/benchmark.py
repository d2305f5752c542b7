"""``mrsr benchmark``: CPU inference time of one model at one scale and slice size (Table 3's measure).

Times one forward pass per slice of a phantom head slice on the inference path that ``mrsr evaluate``
and ``mrsr upscale`` run (:mod:`mrsr.inference`), as ``mrsr timing`` does for Table 3 (what is
measured, and how: :mod:`mrsr.timing`), against the matmul roofline of the same process
(:mod:`mrsr.machine`). ``--dtype bf16`` also reports the PSNR cost of the bfloat16 path.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import Any

import torch

from mrsr.config import load_config, model_options
from mrsr.data.patches import degrade
from mrsr.errors import existing_file
from mrsr.flops import FLOP_METHOD, count_flops
from mrsr.inference import DTYPES, load_for_inference, prepare, super_resolve, to_input
from mrsr.machine import RooflineOfRun, cpu_info, thread_count, use_threads
from mrsr.models import MODEL_REGISTRY
from mrsr.timing import bf16_psnr, measure, phantom


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, choices=sorted(MODEL_REGISTRY), help="registry name")
    parser.add_argument("--scale", required=True, type=int, help="upscaling factor")
    parser.add_argument("--size", type=int, default=256, help="HR slice size S (S x S); the LR input is S / scale")
    parser.add_argument("--threads", type=thread_count, default=0, help="torch threads; 0 = every available core")
    parser.add_argument("--runs", type=int, default=10, help="timed passes (median and spread reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed passes first")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="inference precision (default fp32)")
    parser.add_argument("--weights", type=existing_file,
                        help=".safetensors of a trained MODEL at SCALE; random init otherwise")
    parser.add_argument("--config", type=Path, help="config whose model.<name> options build the random-init model")
    parser.add_argument("--roofline-n", type=int, default=2048, help="size of the roofline matrix product")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    threads = use_threads(args.threads)
    options = model_options(load_config(args.config), args.model) if args.config else {}
    model, meta = load_for_inference(args.model, args.scale, args.weights, options)
    hr = phantom(args.size)
    lr32 = to_input(degrade(hr[None], args.scale)[1][0])
    flops = count_flops(model, lr32)
    reference = prepare(copy.deepcopy(model), "fp32") if args.dtype == "bf16" else None
    model = prepare(model, args.dtype)
    result: dict[str, Any] = {"model": args.model, "strategy": meta.get("strategy"), "scale": args.scale,
                              "size": args.size, "threads": threads, "dtype": args.dtype, "runs": args.runs,
                              "warmup": args.warmup, "weights": str(args.weights) if args.weights else "random",
                              **cpu_info(), "torch": torch.__version__, "flop_method": FLOP_METHOD}
    with RooflineOfRun(args.roofline_n) as roofline:
        figures, outputs = measure(model, [hr], args.scale, runs=args.runs, warmup=args.warmup, dtype=args.dtype,
                                   flops=flops)
    result.update(figures)
    result.update(roofline.figures())
    result["roofline_ratio"] = result["gflops"] / result["roofline_gflops"]
    if reference is not None:
        result.update(bf16_psnr([hr], [super_resolve(reference, lr32)], outputs, args.scale, border=args.scale))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{args.model} x{args.scale} {args.size}x{args.size} {args.dtype}, {threads} threads on {result['cpu']}: "
              f"{result['ms_per_slice']:.1f} ms/slice (min {result['ms_min']:.1f}, max {result['ms_max']:.1f}), "
              f"{result['gflop_per_slice']:.2f} GFLOP, {result['gflops']:.1f} GFLOP/s = "
              f"{100 * result['roofline_ratio']:.0f}% of the {result['roofline_gflops']:.1f} GFLOP/s matmul roofline")
    return 0
