"""Benchmark: `mrsr upscale` against `mrsr benchmark` per output pixel, for the same model.

Figures, machine and date: docs/benchmarks.md ("Upscale against benchmark"). Target:
`mrsr upscale` within 1.2x of `mrsr benchmark`'s seconds per output pixel.

What is timed, both as the user runs them (subprocesses of the real CLI, every core):
- `mrsr benchmark --model proposed --scale 2 --size 2*S --weights W --json`: the median of its timed
  passes over one S x S -> 2S x 2S slice (model prepared once, no I/O).
- `mrsr upscale --model W --out DIR VOLUME` of the embedded sample's 256 x 256 x 24 NIfTI
  (data/btp-sample/PGBM-002/T1post_pre-progression.nii.gz, S = 256): the whole command (start-up,
  reading, tiling, writing the gzipped NIfTI), as a user pays it.
The model is the paper profile's proposed multi x2 (config/paper.yaml `model.proposed`: 128 features,
9 units) with random weights: the time does not depend on the weights' values.

Usage: python benchmarks/bench_upscale.py [--volume NIFTI] [--runs 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src")]

from mrsr.models import build_model  # noqa: E402
from mrsr.weights import save_weights  # noqa: E402


def mrsr(*args: str) -> subprocess.CompletedProcess:
    """Run the real CLI from this checkout's src, failing loudly."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-m", "mrsr.cli", *args], env=env, check=True,
                          capture_output=True, text=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volume", type=Path, default=ROOT / "data/btp-sample/PGBM-002/T1post_pre-progression.nii.gz",
                        help="a 3-D NIfTI of square S x S slices (default: a volume of the embedded sample)")
    parser.add_argument("--runs", type=int, default=10, help="mrsr benchmark's timed passes")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()

    options = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())["model"]["proposed"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        weights = tmp_path / "proposed_multi_x2.safetensors"
        torch.manual_seed(0)
        save_weights(weights, build_model("proposed", 2, "multi", **options),
                     {"model": "proposed", "scale": 2, "strategy": "multi", "options": options})
        rows, cols, slices = nib.load(args.volume).shape[:3]
        if rows != cols:
            raise SystemExit(f"{args.volume}: slices are {rows} x {cols}; give square slices")
        size = rows
        bench = json.loads(mrsr("benchmark", "--model", "proposed", "--scale", "2", "--size", str(2 * size),
                                "--weights", str(weights), "--runs", str(args.runs), "--json").stdout)
        start = time.perf_counter()
        mrsr("upscale", "--model", str(weights), "--out", str(tmp_path / "out"), str(args.volume))
        upscale_s = time.perf_counter() - start

    out_pixels = (2 * size) ** 2
    bench_s = bench["ms_per_slice"] / 1e3  # the median of its timed passes
    result = {
        "volume": str(args.volume), "slice_in": size, "slice_out": 2 * size, "slices": slices, "threads": bench["threads"], "cpu": bench["cpu"],
        "benchmark_s_per_slice": bench_s,
        "upscale_s": upscale_s, "upscale_s_per_slice": upscale_s / slices,
        "benchmark_ns_per_out_pixel": 1e9 * bench_s / out_pixels,
        "upscale_ns_per_out_pixel": 1e9 * upscale_s / slices / out_pixels,
        "ratio": upscale_s / slices / bench_s,
        "load_1min": os.getloadavg()[0],
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
