"""``mrsr ingest``: read a data source into the slice store (see :mod:`mrsr.data.store`).

Sources:
- ``sample``: the embedded Brain-Tumor-Progression NIfTI volumes (data/btp-sample).
- ``local``: any folder: NIfTI volumes (.nii, .nii.gz) and DICOM files in any layout (grouped by
  SeriesInstanceUID, see :mod:`mrsr.data.dicom`). Also what ``mrsr download`` writes.
One bad file never stops the run: it is listed in rejected.csv with the reason. That includes a
header declaring more voxels than the file holds or than the limits allow (``--max-slice-voxels``,
``--max-volume-voxels``, :mod:`mrsr.limits`): checked before any voxel memory is allocated.

Exit status: 0 when the store was written (rejected files are listed in rejected.csv); 2 when the
input folder is missing or holds no usable slice (then no index.csv is written: its presence means a
complete store).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from mrsr.data.store import INTEGER_DTYPES, SeriesSlices, SliceStoreWriter
from mrsr.io import is_non_image_file, list_files
from mrsr.limits import SizeLimits, add_limit_arguments, limits_from_args, nifti_size_problem

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def nifti_stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def nifti_identity(path: Path, root: Path) -> tuple[str, str]:
    """(patient id, series id) of a NIfTI volume: the first folder below ``root`` (else the file's stem),
    and its path below ``root`` without the suffix."""
    rel = path.relative_to(root) if path.is_relative_to(root) else Path(path.name)
    patient = rel.parts[0] if len(rel.parts) > 1 else nifti_stem(path)
    return patient, str(rel.with_name(nifti_stem(path))).replace("\\", "/")


def read_nifti_series(path: Path, root: Path, spacing_known: bool = True,
                      limits: SizeLimits = SizeLimits()) -> SeriesSlices:
    """One NIfTI volume as a series of axial slices along its third axis.

    NIfTI arrays are (i, j, k) with i running along columns; slices are transposed to DICOM
    row/column order. Position along the normal comes from the affine.

    Args:
        path: the .nii or .nii.gz file.
        root: folder the series id is made relative to.
        spacing_known: False when the header's voxel size is known to be wrong (the sample).
        limits: the largest slice and volume accepted.

    Raises:
        ValueError: the declared size is over ``limits`` or beyond the data in the file (checked on
            the header, before nibabel allocates the declared shape), or the volume is not 3-D.
    """
    image = nib.load(str(path))  # the header only
    problem = nifti_size_problem(image, limits)
    if problem:
        raise ValueError(problem)
    if len(image.shape) == 4 and image.shape[3] == 1:
        image = image.slicer[..., 0]
    if len(image.shape) != 3:
        raise ValueError(f"expected a 3-D volume, got shape {image.shape}")
    if _unscaled_integers(image):  # the stored integers are the values: keep them (the store's dtype rule)
        volume = np.asarray(image.dataobj)
    else:
        volume = np.asarray(image.dataobj, dtype=np.float32)  # applies scl_slope / scl_inter
    pixels = np.ascontiguousarray(np.transpose(volume, (2, 1, 0)))
    affine = image.affine
    normal = affine[:3, 2] / max(np.linalg.norm(affine[:3, 2]), 1e-12)
    positions = [float(normal @ (affine[:3, :3] @ np.array([0.0, 0.0, k]) + affine[:3, 3])) for k in range(len(pixels))]
    zooms = image.header.get_zooms()
    patient, uid = nifti_identity(path, root)
    return SeriesSlices(
        patient_id=patient,
        series_uid=uid,
        description=nifti_stem(path),
        pixels=pixels,
        paths=[str(path)] * len(pixels),
        positions=positions,
        pixel_spacing=(float(zooms[1]), float(zooms[0])) if spacing_known else None,
    )


def _unscaled_integers(image: nib.Nifti1Image) -> bool:
    """Whether the volume holds integers of a dtype the store keeps as they are, with no scaling."""
    data = image.dataobj
    if isinstance(data, np.ndarray):  # already in memory (e.g. after slicing a 4-D volume)
        return data.dtype in INTEGER_DTYPES
    slope, inter = getattr(data, "slope", None), getattr(data, "inter", None)
    return image.get_data_dtype() in INTEGER_DTYPES and slope == 1 and inter == 0


def ingest_nifti_files(paths: list[Path], root: Path, writer: SliceStoreWriter, spacing_known: bool = True,
                       limits: SizeLimits = SizeLimits()) -> None:
    """Store each NIfTI volume; a volume that cannot be read becomes a rejected.csv row."""
    for path in paths:
        try:
            writer.add_series(read_nifti_series(path, root, spacing_known, limits))
        except Exception as exc:  # any unreadable volume is a rejection, not a crash
            writer.reject(path, f"unreadable NIfTI: {exc}")


def ingest(source: str, input_dir: str | Path, out_dir: str | Path, limits: SizeLimits = SizeLimits()) -> dict:
    """Ingest ``input_dir`` into a slice store at ``out_dir``; returns the summary counts.

    Args:
        source: ``sample`` or ``local``.
        input_dir: the folder to read.
        out_dir: the slice store to write.
        limits: the largest slice and volume accepted (larger files are rejected).
    """
    input_dir, out_dir = Path(input_dir), Path(out_dir)
    if not input_dir.is_dir():
        raise FileNotFoundError(f"{input_dir}: input folder does not exist")
    writer = SliceStoreWriter(out_dir)
    try:
        _read_source(source, input_dir, writer, limits)
    except Exception:
        writer.close(source, complete=False)  # what was read and rejected so far; no index.csv
        raise
    summary = writer.close(source)
    if summary["slices"] == 0:
        raise ValueError(f"{input_dir}: no usable image slices found ({summary['files_rejected']} files rejected, "
                         f"see {out_dir / 'rejected.csv'}); no index.csv written")
    return summary


def _read_source(source: str, input_dir: Path, writer: SliceStoreWriter, limits: SizeLimits) -> None:
    # a folder that cannot be listed is a rejected.csv row like any unreadable file (rglob skipped it silently)
    files = [p for p in list_files(input_dir, writer.reject) if not p.name.startswith(".")]
    if source == "sample":
        # The sample's headers claim 1 mm voxels, which is wrong (its README): record the spacing as unknown.
        ingest_nifti_files([p for p in files if is_nifti(p)], input_dir, writer, spacing_known=False, limits=limits)
    elif source == "local":
        ingest_nifti_files([p for p in files if is_nifti(p)], input_dir, writer, limits=limits)
        others = [p for p in files if not is_nifti(p) and not is_non_image_file(p)]  # README, LICENSE: not images
        if others:
            from mrsr.data.dicom import ingest_dicom_files

            ingest_dicom_files(others, writer, limits=limits)
    else:
        raise ValueError(f"unknown source {source!r} (sample or local; tcia data is ingested as local)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", choices=["sample", "local"], default="local",
                        help="sample: the embedded NIfTI sample (its 1 mm spacing is recorded as unknown); "
                             "local: NIfTI and DICOM files in any layout (default)")
    parser.add_argument("--input", required=True, type=Path, help="folder to read")
    parser.add_argument("--out", required=True, type=Path, help="slice store folder to write")
    parser.add_argument("--check-split", type=Path, metavar="CONFIG",
                        help="then refuse (exit 2, one line) a dataset that the profile CONFIG cannot split "
                             "(mrsr.data.split.split_problem), before any later job runs")
    add_limit_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        summary = ingest(args.source, args.input, args.out, limits_from_args(args))
        if args.check_split:
            from mrsr.config import load_config
            from mrsr.data.split import check_splittable
            from mrsr.data.store import read_index

            check_splittable(read_index(args.out), load_config(args.check_split), str(args.input))
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"ingested {summary['slices']} slices from {summary['series']} series into {args.out}; "
        f"{summary['zero_slices_dropped']} all-zero and {summary['nonfinite_slices_dropped']} non-finite slices dropped, "
        f"{summary['files_rejected']} files rejected (rejected.csv)"
    )
    return 0
