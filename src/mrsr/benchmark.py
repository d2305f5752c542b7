"""``mrsr benchmark``: CPU inference time of one model at one scale and slice size (Table 3).

What is measured, and how:

- Time: one forward pass per slice (LR in, SR out, batch 1) under ``torch.inference_mode()``, after
  ``warmup`` untimed passes; ``runs`` timed passes, reported as the median with min/max and the
  quartiles as the spread. The input is prepared beforehand (degradation is not timed).
- Inference path (:func:`prepare`): eval mode, no gradients, channels-last weights (oneDNN's fast
  layout on CPUs); ``bf16`` casts weights and activations to bfloat16 (the output is returned as
  float32). The proposed net's forward folds its N branch deconvolutions into one.
- FLOPs: counted with ``torch.utils.flop_counter.FlopCounterMode`` on one float32 forward of the same
  input: convolutions, transposed convolutions and matrix products, a multiply-add counted as 2 FLOPs;
  element-wise operations (ReLU, additions) are not counted.
- Roofline: the GFLOP/s of a large float32 matrix product (n x n, :func:`matmul_gflops`) measured in
  the same process, with the same threads, before and after the model (the larger of the two,
  :func:`roofline_of_run`); ``roofline_ratio = gflops / roofline_gflops``.
  On a shared machine both figures fall together, so the ratio is steadier than either.
- Threads: ``--threads 0`` uses every core this process may run on; the count and the CPU model are
  recorded in the output, and so is ``other_load_cores``: how many cores other processes kept busy
  while the model was timed (on a shared machine, a timing is only as good as the CPU it got).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from torch.utils.flop_counter import FlopCounterMode

from mrsr.config import JobError, check_model, load_config, model_options
from mrsr.data.patches import degrade
from mrsr.errors import existing_file
from mrsr.models import MODEL_REGISTRY, SuperResolver, build_model

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16}
# CPU flags that mean bfloat16 arithmetic in hardware (AVX-512 BF16, AMX, AVX-NE-CONVERT).
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "avx_ne_convert")
FLOP_METHOD = "torch.utils.flop_counter.FlopCounterMode (conv, transposed conv, matmul; 2 FLOPs per multiply-add)"


def cpu_info() -> dict[str, Any]:
    """CPU model, cores, the vector ISA torch uses, and whether the CPU has bfloat16 instructions."""
    model, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:  # not Linux
        pass
    model = model or platform.processor() or "unknown"
    return {"cpu": model, "cores": os.cpu_count() or 1, "isa": torch.backends.cpu.get_cpu_capability(),
            "bf16_native": any(f in flags for f in BF16_FLAGS)}


def resolve_threads(threads: int) -> int:
    """``threads`` or, for 0, every core this process may run on."""
    if threads > 0:
        return threads
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_busy_seconds() -> float | None:
    """CPU seconds all processes of the machine have run since boot (Linux ``/proc/stat``), or None."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """How many cores other processes kept busy during a ``with`` block (machine busy time minus ours).

    On a shared machine a timing is only as good as the CPU it got; this says how much it did not get.
    ``cores`` is None where ``/proc/stat`` does not exist.
    """

    def __enter__(self) -> OtherLoad:
        self.cores: float | None = None
        self._busy, self._own, self._wall = cpu_busy_seconds(), time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        busy = cpu_busy_seconds()
        if busy is not None and self._busy is not None:
            other = (busy - self._busy) - (time.process_time() - self._own)
            self.cores = max(0.0, other / (time.perf_counter() - self._wall))


def spread(seconds: np.ndarray) -> dict[str, float]:
    """Median, min, max and quartiles of per-slice times, in milliseconds."""
    ms = np.asarray(seconds, float) * 1e3
    q25, median, q75 = np.percentile(ms, [25, 50, 75])
    return {"ms_per_slice": float(median), "ms_min": float(ms.min()), "ms_max": float(ms.max()),
            "ms_q25": float(q25), "ms_q75": float(q75)}


def matmul_gflops(n: int = 2048, runs: int = 5) -> dict[str, float]:
    """The roofline: GFLOP/s of an n x n by n x n float32 matrix product, median of ``runs``.

    The product runs through both of torch's CPU GEMM libraries, alternately: BLAS (``torch.mm``;
    MKL on x86) and oneDNN (the same product as a 1x1 convolution over n pixels of n channels, the
    library that runs the models' convolutions). The roofline is the faster of the two, so a model
    is never compared with a GEMM that a weaker library made look slow.
    """
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    pixels = a.reshape(1, n, n, 1).permute(0, 2, 1, 3)  # (1, n channels, n, 1), channels-last in memory
    weight = b.t().contiguous().reshape(n, n, 1, 1)
    products = {"blas": lambda: torch.mm(a, b, out=out), "onednn": lambda: F.conv2d(pixels, weight)}
    seconds: dict[str, list[float]] = {k: [] for k in products}
    with torch.inference_mode(), OtherLoad() as load:
        for product in products.values():
            product()  # warm-up: threads started, pages touched, kernels generated
        for _ in range(runs):
            for name, product in products.items():
                t0 = time.perf_counter()
                product()
                seconds[name].append(time.perf_counter() - t0)
    gflops = {name: 2.0 * n**3 / float(np.median(s)) / 1e9 for name, s in seconds.items()}
    best = max(2.0 * n**3 / min(s) / 1e9 for s in seconds.values())
    return {"roofline_gflops": max(gflops.values()), "roofline_blas_gflops": gflops["blas"],
            "roofline_onednn_gflops": gflops["onednn"], "roofline_best_gflops": best, "roofline_n": n,
            "roofline_other_load_cores": load.cores}


def burn_in(seconds: float = 2.0, n: int = 1024) -> None:
    """Keep every thread busy with matrix products for ``seconds`` before anything is measured.

    A process's first seconds of work ran markedly slower than its later ones here (the roofline
    measured first in a run came out at 76-102 GFLOP/s, later ones at 170-183 on the same idle VM):
    thread pools, page faults and the host's clock take that long to settle.
    """
    a = torch.randn(n, n)
    end = time.perf_counter() + seconds
    with torch.inference_mode():
        while time.perf_counter() < end:
            torch.mm(a, a)


def roofline_of_run(before: dict[str, float], after: dict[str, float]) -> float:
    """The roofline of a run from measurements before and after its models: the larger.

    Other processes can only slow a measurement down, so the larger of two is the better estimate of
    what the machine does; the ratio a model gets against it is the conservative one.
    """
    return max(before["roofline_gflops"], after["roofline_gflops"])


def count_flops(model: SuperResolver, lr: torch.Tensor) -> float:
    """FLOPs of one float32 forward pass of ``model`` on ``lr`` (FlopCounterMode).

    Counted under ``no_grad``, not inference mode: the same maths, but through aten convolutions,
    which the counter knows (it does not count the fused oneDNN ops of the inference fast path).
    """
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(lr.float())
    return float(counter.get_total_flops())


def prepare(model: SuperResolver, dtype: str = "fp32") -> SuperResolver:
    """The model ready for fast CPU inference: eval, no gradients, channels-last, ``dtype`` weights.

    Args:
        model: any registered model (modified in place and returned).
        dtype: ``fp32`` or ``bf16``.
    """
    model.eval().requires_grad_(False)
    # oneDNN runs 3x3 convolutions fastest on NHWC; a (1, 1, h, w) input is already NHWC in memory.
    model.to(memory_format=torch.channels_last)
    return model.to(DTYPES[dtype])


def to_input(lr: np.ndarray, dtype: str = "fp32") -> torch.Tensor:
    """(h, w) LR image -> (1, 1, h, w) tensor of ``dtype``."""
    return torch.from_numpy(np.ascontiguousarray(lr, dtype=np.float32))[None, None].to(DTYPES[dtype])


@torch.inference_mode()
def super_resolve(model: SuperResolver, lr: torch.Tensor) -> np.ndarray:
    """(1, 1, h, w) -> (n*h, n*w) float32 array."""
    return model(lr)[0, 0].float().numpy()


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


def build_for_timing(name: str, scale: int, weights: Path | None = None,
                     options: dict[str, Any] | None = None) -> tuple[SuperResolver, str | None, str]:
    """(model, strategy, weights label): trained weights if given, otherwise a random initialisation.

    Args:
        name: registry name of the model to time.
        scale: its scale.
        weights: trained weights; their sidecar must name the same model and scale.
        options: the builder's options for a random initialisation.

    Raises:
        JobError: the model lacks ``scale``.
        WeightsError: unusable weights, or weights of another model or scale (timing them would label
            one model's time with another's name).
    """
    if weights is not None:
        from mrsr.weights import check_weights, load_model  # deferred: safetensors only when weights are given

        model, meta = load_model(weights)
        check_weights(weights, meta, model=name, scale=scale)
        return model, meta.get("strategy"), str(weights)
    spec = MODEL_REGISTRY[name]
    strategy = "multi" if "multi" in spec.strategies else None
    check_model(name, strategy, scale)
    return build_model(name, scale, strategy, **(options or {})), strategy, "random"


@torch.inference_mode()
def measure(model: SuperResolver, hr_slices: list[np.ndarray], scale: int, *, runs: int, warmup: int,
            dtype: str = "fp32", flops: float | None = None) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Time ``model`` (already :func:`prepare`-d for ``dtype``) on the LR versions of ``hr_slices``.

    Returns:
        (timing figures of :func:`spread` plus ``gflop_per_slice`` and achieved ``gflops``,
        the SR output of each slice).
    """
    lrs = [degrade(hr[None], scale)[1][0] for hr in hr_slices]
    inputs = [to_input(lr, dtype).contiguous(memory_format=torch.channels_last) for lr in lrs]
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, choices=sorted(MODEL_REGISTRY), help="registry name")
    parser.add_argument("--scale", required=True, type=int, help="upscaling factor")
    parser.add_argument("--size", type=int, default=256, help="HR slice size S (S x S); the LR input is S / scale")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = every available core")
    parser.add_argument("--runs", type=int, default=10, help="timed passes (median and spread reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed passes first")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="inference precision (default fp32)")
    parser.add_argument("--weights", type=existing_file,
                        help=".safetensors of a trained MODEL at SCALE; random init otherwise")
    parser.add_argument("--config", type=Path, help="config whose model.<name> options build the random-init model")
    parser.add_argument("--roofline-n", type=int, default=2048, help="size of the roofline matrix product")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    threads = resolve_threads(args.threads)
    torch.set_num_threads(threads)
    options = model_options(load_config(args.config), args.model) if args.config else {}
    try:
        model, strategy, label = build_for_timing(args.model, args.scale, args.weights, options)
    except JobError as exc:  # --model is a choice, so the scale is what the model lacks
        raise JobError(f"--scale {args.scale}: {exc}", exc.part) from exc
    hr = phantom(args.size)
    lr32 = to_input(degrade(hr[None], args.scale)[1][0])
    flops = count_flops(model, lr32)
    reference = None
    if args.dtype == "bf16":
        import copy

        reference = prepare(copy.deepcopy(model), "fp32")
    model = prepare(model, args.dtype)
    burn_in()
    before = matmul_gflops(args.roofline_n)
    result: dict[str, Any] = {"model": args.model, "strategy": strategy, "scale": args.scale, "size": args.size,
                              "threads": threads, "dtype": args.dtype, "runs": args.runs, "warmup": args.warmup,
                              "weights": label, **cpu_info(), "torch": torch.__version__, "flop_method": FLOP_METHOD}
    figures, outputs = measure(model, [hr], args.scale, runs=args.runs, warmup=args.warmup, dtype=args.dtype,
                               flops=flops)
    result.update(figures)
    after = matmul_gflops(args.roofline_n)
    result.update(roofline_gflops=roofline_of_run(before, after), roofline_before=before, roofline_after=after)
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
