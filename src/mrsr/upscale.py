"""``mrsr upscale``: super-resolve your own DICOM and NIfTI with a trained model.

Usage::

    mrsr upscale --model models/quick/seed0/proposed_multi_x2.safetensors --out sr/ scan.nii.gz dicom_folder/ IM0001.dcm

Each INPUT is a DICOM file, a folder of DICOM series (any layout, grouped by SeriesInstanceUID) or
a NIfTI volume (.nii/.nii.gz, super-resolved in-plane, slice by slice along the third axis). The
output has the input's format and is named after it with the suffix ``_x<scale>``
(:func:`mrsr.upscale_io.collect_inputs` lists the naming rules).

Intensity normalisation (the training contract): models see intensities divided by a per-series
constant, the series' maximum intensity after DICOM Rescale Slope/Intercept (NIfTI
scl_slope/scl_inter). Upscale divides each input series by its own maximum, runs the model and
multiplies back, clips to the input series' own [min, max] (no overshoot past the input's range),
then stores the values with the input's scaling, rounded and clipped to the stored integer range.
Inputs with NaN/Inf values, and outputs that are not finite, are skipped with the reason.

Large slices are processed in overlapping tiles (``--tile`` input pixels per side plus ``--overlap``
pixels of context on each side); the overlap must be at least the model's receptive radius, which
is computed from the model, so tiles agree with the untiled result to float precision. Volumes are
streamed one slice at a time.

Exit status: 0 when every input was written; 2 when anything was skipped (unreadable file, not an
image, colour image, a transfer syntax without its decoder plugin, an output that already exists
without ``--overwrite``, ...) or when the weights or the device cannot be used.

Outputs appear complete or not at all: files are renamed into place once written, a DICOM series
folder once all its files are in, and the next run removes what a killed run left half-written.
An output that exists already (an earlier run's) is not replaced unless ``--overwrite`` is given. Skipped inputs are reported by name and reason; the others are still written.
Weights load only through :func:`mrsr.weights.load_model` (safetensors plus a JSON sidecar); pickles
(.pt/.pth/...) are refused because loading them can run arbitrary code.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from mrsr.fastpath import DeviceError, pick_device
from mrsr.upscale_io import (
    DicomJob,
    Outcome,
    Provenance,
    collect_inputs,
    failure_reason,
    process_dicom,
    process_nifti,
)
from mrsr.io import clean_stale_temporaries
from mrsr.limits import add_limit_arguments, limits_from_args
from mrsr.weights import WeightsError, load_model

EXIT_SKIPPED = 2


def _conv_radius_bound(model: nn.Module) -> int:
    """Receptive radius (input pixels) of a stack of the model's convolutions: an upper bound for
    feed-forward nets of convolutions, residual additions and pointwise operations."""
    radius = 0
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            k, d = m.kernel_size[0], m.dilation[0]
            p = m.padding[0] if not isinstance(m.padding, str) else (d * (k - 1) // 2 if m.padding == "same" else 0)
            radius += max(p, d * (k - 1) - p)
        elif isinstance(m, nn.ConvTranspose2d):
            k, p, st = m.kernel_size[0], m.padding[0], m.stride[0]
            radius += math.ceil(max(p, k - 1 - p) / st)
    return radius


def receptive_radius(model: nn.Module, scale: int, device: str | torch.device = "cpu") -> int:
    """How many input pixels either side of a pixel can change its super-resolved output.

    The larger of the convolution bound and a measurement: the gradient of the output pixels of one
    input pixel with respect to a random input strip, along rows and along columns (this also finds
    non-convolutional parts such as bicubic interpolation). A probe grows until the gradient no
    longer reaches the strip's end.
    """
    bound = _conv_radius_bound(model)
    dtype = next(model.parameters(), torch.empty(0)).dtype
    gen = torch.Generator().manual_seed(0)
    measured, size = 0, 2 * (bound + 4) + 1
    for axis in (2, 3):
        while True:
            c, shape = size // 2, [1, 1, 5, 5]
            shape[axis] = size
            x = torch.rand(shape, generator=gen, dtype=dtype).to(device).requires_grad_(True)
            with torch.enable_grad():
                out = model(x)
                idx = [slice(None), slice(None), slice(2 * scale, 3 * scale), slice(2 * scale, 3 * scale)]
                idx[axis] = slice(c * scale, (c + 1) * scale)
                out[tuple(idx)].sum().backward()
            hit = (x.grad.abs() > 0).nonzero()[:, axis]
            reach = int((hit - c).abs().max()) if len(hit) else 0
            if reach < c or size > 4096:
                measured = max(measured, reach)
                break
            size = 2 * size + 1
    return max(bound, measured)


class Upscaler:
    """One normalised 2-D slice -> its super-resolved version, tile by tile.

    Args:
        model: a :class:`mrsr.models.SuperResolver` in eval mode.
        device: torch device for the model.
        tile: tile size in input pixels (each side).
        overlap: context pixels on each side of a tile; None: the receptive radius plus 2.
        bf16: run under bfloat16 autocast.
    """

    def __init__(self, model: nn.Module, device: str | torch.device = "cpu", tile: int = 256,
                 overlap: int | None = None, bf16: bool = False) -> None:
        self.model, self.device, self.bf16 = model.to(device).eval(), torch.device(device), bf16
        self.scale = int(model.scale)
        self.radius = receptive_radius(self.model, self.scale, self.device)
        self.overlap = self.radius + 2 if overlap is None else int(overlap)
        if self.overlap < self.radius:
            raise ValueError(
                f"overlap {self.overlap} is smaller than the model's receptive radius {self.radius}: "
                "tiles would disagree at their seams; use --overlap >= "
                f"{self.radius} (or leave it out)")
        if tile < 1:
            raise ValueError(f"tile must be positive, got {tile}")
        self.tile = int(tile)

    def _run(self, lr: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(lr, dtype=np.float32))[None, None].to(self.device)
        with torch.inference_mode(), torch.autocast(self.device.type, torch.bfloat16, enabled=self.bf16):
            y = self.model(x)
        expected = (self.scale * lr.shape[0], self.scale * lr.shape[1])
        if tuple(y.shape[-2:]) != expected:  # never write an output labelled x{scale} at another scale
            raise RuntimeError(f"the model returned {tuple(y.shape[-2:])} for a {lr.shape} input, not x{self.scale} "
                               f"{expected}: its weights and sidecar disagree on the scale")
        return y[0, 0].float().cpu().numpy()

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """(h, w) float32 -> (scale*h, scale*w) float32."""
        h, w = image.shape
        t, o, s = self.tile, self.overlap, self.scale
        if h <= t and w <= t:
            return self._run(image)
        out = np.empty((s * h, s * w), dtype=np.float32)
        for y0 in range(0, h, t):
            y1, ya = min(y0 + t, h), max(0, y0 - o)
            yb = min(h, y1 + o)
            for x0 in range(0, w, t):
                x1, xa = min(x0 + t, w), max(0, x0 - o)
                xb = min(w, x1 + o)
                sr = self._run(image[ya:yb, xa:xb])
                out[s * y0 : s * y1, s * x0 : s * x1] = sr[
                    s * (y0 - ya) : s * (y1 - ya), s * (x0 - xa) : s * (x1 - xa)]
        return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Super-resolve DICOM files, DICOM series folders or NIfTI volumes with a trained model."
    parser.epilog = (
        "Exit status 0 when every input was written, 2 when any input was skipped (each is named "
        "with its reason; the others are still written) or the weights/device cannot be used. "
        "Intensities are divided by each series' maximum for the model and restored afterwards.")
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                        help="DICOM file, folder of DICOM series, or NIfTI (.nii/.nii.gz)")
    parser.add_argument("--model", required=True, type=Path,
                        help="weights (.safetensors with its .json sidecar); pickles are refused")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--scale", type=int, default=None,
                        help="expected scale; refused if the model was trained for another (default: the model's)")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu",
                        help="cpu (default), cuda, or auto (cuda when available)")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (faster on GPUs, less exact)")
    parser.add_argument("--tile", type=int, default=256, help="tile size in input pixels (default 256)")
    parser.add_argument("--overlap", type=int, default=None,
                        help="tile context in input pixels per side (default: receptive radius + 2)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace outputs that exist already (default: skip those inputs, exit status 2)")
    add_limit_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        model, meta = load_model(args.model)
    except WeightsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_SKIPPED
    if args.scale is not None and args.scale != model.scale:
        print(f"error: {args.model}: the model was trained for x{model.scale}, but --scale {args.scale} "
              f"was asked; use weights trained for x{args.scale}. Nothing was written.", file=sys.stderr)
        return EXIT_SKIPPED
    try:
        device = pick_device(args.device)
    except DeviceError as exc:
        print(f"error: --device: {exc}", file=sys.stderr)
        return EXIT_SKIPPED
    if args.bf16 and device.type == "cpu":
        from mrsr.benchmark import cpu_info

        if not cpu_info()["bf16_native"]:
            print("warning: --bf16 on a CPU without bfloat16 instructions (AMX, AVX-512 BF16): emulated, about "
                  "10 times slower than float32 here (docs/benchmarks.md); leave --bf16 out.", file=sys.stderr)
    try:
        upscaler = Upscaler(model, device, args.tile, args.overlap, args.bf16)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_SKIPPED
    label = f"{meta['model']}/{meta.get('strategy')}"
    prov = Provenance(scale=upscaler.scale, model=label, weights=Path(args.model))
    limits = limits_from_args(args)
    jobs, skipped = collect_inputs(list(args.inputs), Path(args.out), f"_x{upscaler.scale}", limits)
    total = Outcome(skipped=list(skipped))
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    for stale in clean_stale_temporaries(args.out):
        print(f"removed {stale}: left half-written by a killed run", file=sys.stderr)
    for job in jobs:
        name = job.name if isinstance(job, DicomJob) else job.src.name
        existing = [p for p in job.outputs() if p.exists()]
        if existing and not args.overwrite:
            src = getattr(job, "src", Path(name))
            reason = f"{existing[0]} exists (an earlier output?): not replaced; use --overwrite to replace it"
            print(f"skipped {src}: {reason}", file=sys.stderr)
            total.skipped.append((src, reason))
            continue
        with tqdm(desc=name[-40:], total=_count(job), unit="slice", file=sys.stderr, leave=False) as bar:
            try:
                if isinstance(job, DicomJob):
                    done = process_dicom(job, upscaler, prov, _new_series_uid(), bar.update)
                else:
                    done = process_nifti(job, upscaler, prov, bar.update, limits)
            except Exception as exc:  # one bad input must not stop the others: report it and go on
                done = Outcome(skipped=[(getattr(job, "src", Path(name)), failure_reason(exc))])
        for path, reason in done.skipped:
            print(f"skipped {path}: {reason}", file=sys.stderr)
        total.written += done.written
        total.skipped += done.skipped
    _summary(total, args.out)
    return EXIT_SKIPPED if total.skipped else 0


def _count(job) -> int | None:
    """Slices in a job, for the progress bar (None when the header cannot be read yet)."""
    if isinstance(job, DicomJob):
        return len(job.files)
    try:
        return int(np.prod(nib.load(job.src).shape[2:]))
    except Exception:
        return None


def _new_series_uid() -> str:
    from pydicom.uid import generate_uid

    return generate_uid()


def _summary(total: Outcome, out: Path) -> None:
    print(f"mrsr upscale: wrote {len(total.written)} file(s) under {out}, skipped {len(total.skipped)}")
    for path in total.written:
        print(f"  wrote   {path}")
    for path, reason in total.skipped:
        print(f"  skipped {path}: {reason}")
