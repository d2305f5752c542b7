"""``mrsr upscale``: super-resolve your own DICOM and NIfTI with a trained model.

Usage::

    mrsr upscale --model models/quick/seed0/proposed_multi_x2.safetensors --out sr/ scan.nii.gz dicom_folder/ IM0001.dcm
    mrsr upscale --model fsrcnn-x2 --out sr/ scan.nii.gz      # a network shipped with mrsr (mrsr models)
    mrsr upscale --scale 3 --out sr/ scan.nii.gz              # the default shipped network at x3

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
An output that exists already (an earlier run's) is not replaced unless ``--overwrite`` is given, and
the name is claimed at the rename itself, so a run beside this one cannot replace it either. A run
never replaces a file it reads, and never reads its own outputs: where ``--out`` lies inside an input
folder, entries under it named as outputs are left out. Skipped inputs are reported by name and
reason; the others are still written; the summary names only the files this run wrote.
Weights load only through :func:`mrsr.weights.load_model` (safetensors plus a JSON sidecar); pickles
(.pt/.pth/...) are refused because loading them can run arbitrary code. A shipped network is loaded
only after its files pass their SHA-256 check (:func:`mrsr.zoo.resolve_model`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm import tqdm

from mrsr.fastpath import DeviceError, pick_device
from mrsr.inference import Upscaler, bf16_warning
from mrsr.upscale_io import (
    DicomJob,
    NiftiJob,
    Outcome,
    Provenance,
    collect_inputs,
    failure_reason,
    process_dicom,
    process_nifti,
)
from mrsr.io import clean_stale_temporaries
from mrsr.limits import add_limit_arguments, limits_from_args
from mrsr.machine import thread_count, use_threads
from mrsr.weights import WeightsError, load_model
from mrsr.zoo.manifest import is_shipped_name, resolve_model

EXIT_SKIPPED = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Super-resolve DICOM files, DICOM series folders or NIfTI volumes with a trained model."
    parser.epilog = (
        "Exit status 0 when every input was written, 2 when any input was skipped (each is named "
        "with its reason; the others are still written) or the weights/device cannot be used. "
        "Intensities are divided by each series' maximum for the model and restored afterwards.")
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                        help="DICOM file, folder of DICOM series, or NIfTI (.nii/.nii.gz)")
    parser.add_argument("--model", default=None,
                        help="weights (.safetensors with its .json sidecar; pickles are refused) or the name of a "
                             "shipped network (mrsr models lists them); default: the shipped default of --scale")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--scale", type=int, default=None,
                        help="expected scale; refused if the model was trained for another (default: the model's); "
                             "without --model, the default shipped network of this scale runs")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu",
                        help="cpu (default), cuda, or auto (cuda when available)")
    parser.add_argument("--bf16", action="store_true",
                        help="bfloat16 weights and activations (faster on GPUs and on CPUs with AMX or AVX-512 "
                             "BF16, less exact; Table 3 reports its PSNR cost)")
    parser.add_argument("--threads", type=thread_count, default=0, help="torch CPU threads; 0 = every available core")
    parser.add_argument("--tile", type=int, default=256, help="tile size in input pixels (default 256)")
    parser.add_argument("--overlap", type=int, default=None,
                        help="tile context in input pixels per side (default: receptive radius + 2)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace outputs that exist already (default: skip those inputs, exit status 2)")
    add_limit_arguments(parser)


def run(args: argparse.Namespace) -> int:
    given = args.model
    args.model = resolve_model(given, args.scale)  # a ZooError (unknown name, bad checksum) exits 2
    # the shipped name that selected the weights (checksummed); a weights path is recorded as a file
    shipped = args.model.stem if given is None or is_shipped_name(given) else None
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
    use_threads(args.threads)
    warning = bf16_warning(device) if args.bf16 else None
    if warning:
        print(f"warning: --bf16: {warning}; leave --bf16 out.", file=sys.stderr)
    try:
        upscaler = Upscaler(model, device, args.tile, args.overlap, args.bf16)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_SKIPPED
    label = meta["model"] + (f"/{meta['strategy']}" if meta.get("strategy") else "")
    prov = Provenance(scale=upscaler.scale, model=label, weights=Path(args.model), shipped=shipped)
    limits = limits_from_args(args)
    jobs, skipped, ignored = collect_inputs(list(args.inputs), Path(args.out), f"_x{upscaler.scale}", limits)
    total = Outcome(skipped=list(skipped))
    if ignored:
        print(f"ignored {len(ignored)} non-image file(s): {', '.join(map(str, ignored))}", file=sys.stderr)
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    for stale in clean_stale_temporaries(args.out):
        print(f"removed {stale}: left half-written by a killed run", file=sys.stderr)
    read = {src.resolve() for job in jobs for src in _sources(job)}
    for job in jobs:
        name = job.name if isinstance(job, DicomJob) else job.src.name
        src = getattr(job, "src", Path(name))
        reason = _refusal(job, read, args.overwrite)
        if reason:
            print(f"skipped {src}: {reason}", file=sys.stderr)
            total.skipped.append((src, reason))
            continue
        with tqdm(desc=name[-40:], total=_count(job), unit="slice", file=sys.stderr, leave=False) as bar:
            try:
                if isinstance(job, DicomJob):
                    done = process_dicom(job, upscaler, prov, _new_series_uid(), bar.update, args.overwrite)
                else:
                    done = process_nifti(job, upscaler, prov, bar.update, limits, args.overwrite)
            except Exception as exc:  # one bad input must not stop the others: report it and go on
                done = Outcome(skipped=[(getattr(job, "src", Path(name)), failure_reason(exc))])
        for path, reason in done.skipped:
            print(f"skipped {path}: {reason}", file=sys.stderr)
        total.written += done.written
        total.skipped += done.skipped
    _summary(total, args.out)
    return EXIT_SKIPPED if total.skipped else 0


def _sources(job: DicomJob | NiftiJob) -> list[Path]:
    """The files a job reads."""
    return [src for src, _ in job.files] if isinstance(job, DicomJob) else [job.src]


def _refusal(job: DicomJob | NiftiJob, read: set[Path], overwrite: bool) -> str | None:
    """Why a job must not write (None: it may): an output that is, or holds, a file this run reads
    (never replaced, even with ``--overwrite``), or one that exists already without ``--overwrite``.
    The check is repeated at the rename itself, where another run may have written meanwhile."""
    for out in job.outputs():
        target = out.resolve()
        inside = next((p for p in read if p == target or target in p.parents), None)
        if inside is not None:
            return (f"its output {out} would replace {inside}, which this run reads: refused "
                    "(choose another --out)")
    existing = [p for p in job.outputs() if p.exists() or p.is_symlink()]
    if existing and not overwrite:
        return f"{existing[0]} exists (an earlier output?): not replaced; use --overwrite to replace it"
    return None


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
