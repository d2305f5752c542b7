"""Reading and writing for ``mrsr upscale``: DICOM series and NIfTI volumes, streamed slice by slice.

Everything here is format plumbing; the model and the tiling live in :mod:`mrsr.upscale`. DICOM is
read through :mod:`mrsr.data.dicom_header` and :mod:`mrsr.data.dicom_pixels`, the reader ``mrsr ingest``
uses (same checks, rescale and MONOCHROME1 handling as the training data); this module writes. Each
``process_*`` function takes ``upscale(slice) -> slice``, a callable on one normalised 2-D float32
slice, so this module never touches torch.

Intensity contract (the same as training): a series is divided by its maximum intensity after the
DICOM Rescale Slope/Intercept (or the NIfTI scl_slope/scl_inter), super-resolved, multiplied back,
clipped to the input series' own value range [min, max] (a CNN overshoots at edges: a non-negative
magnitude image must not get negative voxels), and stored with the input's own scaling, rounding
and clipping to the stored integer range; a MONOCHROME1 series is written back as MONOCHROME1
(:func:`_process_dicom` says why). An input with NaN or infinite values (voxels, or a
rescale) has no defined maximum and is skipped with the reason, as is a model output that is not
finite: nothing non-finite is ever written.

Geometry: output pixel ``i'`` sits at input pixel coordinate ``(i' + 0.5) / s - 0.5``, so the
field of view is unchanged: the pixel spacing is divided by ``s`` and the position of the first
pixel (DICOM ImagePositionPatient, NIfTI affine origin) moves by ``(1/s - 1) / 2`` of an old pixel.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import DSfloat

from mrsr.data.dicom_header import (
    FileHeader,
    Rejected,
    UnreadableDicom,
    functional_group_item,
    group_by_series,
    read_dicom_header,
)
from mrsr.data.dicom_pixels import read_pixels, stored_dtype, to_stored_values
from mrsr.io import atomic_dir, atomic_path, is_non_image_file, list_files
from mrsr.limits import SizeLimits, nifti_size_problem

DICOM_SUFFIXES = {".dcm", ".dicom", ".ima"}
# The name of an output of mrsr upscale (NAME_x2.nii.gz, IM0001_x3.dcm, 5_T1_x2/, with _2 on collisions):
# under --out such a name is an output, never an input, even where --out lies inside an input folder.
OUTPUT_NAME = re.compile(r"_x[0-9]+(?:_[0-9]+)?(?:\.nii\.gz|\.nii|\.dcm|\.dicom|\.ima)?$", re.I)
SERIES_NUMBER_STEP = 1000  # derived SeriesNumber = input SeriesNumber + SERIES_NUMBER_STEP * scale
SliceFn = Callable[[np.ndarray], np.ndarray]


class SkipInput(Exception):
    """An input (file or series) that cannot be super-resolved; the message is the reason."""


@dataclass
class Provenance:
    """What made the output: recorded in DICOM DerivationDescription and NIfTI descrip.

    ``model`` is the network (registry name, with its strategy where it has one: ``proposed/multi``),
    ``shipped`` the shipped name it was selected by (None for a weights file given as a path).
    """

    scale: int
    model: str
    weights: Path
    shipped: str | None = None

    @cached_property
    def weights_sha256(self) -> str:
        return hashlib.sha256(self.weights.read_bytes()).hexdigest()

    def source(self) -> str:
        """The shipped name, or the weights file's name: what selects these weights again."""
        return f"shipped network {self.shipped}" if self.shipped else f"weights file {self.weights.name}"

    def describe(self) -> str:
        return (
            f"Super-resolved x{self.scale} in-plane by mrsr upscale with network {self.model}, "
            f"{self.source()} (sha256 {self.weights_sha256[:16]}); "
            "intensities divided by the series maximum for the model and restored"
        )


@dataclass
class NiftiJob:
    src: Path
    out: Path

    def outputs(self) -> list[Path]:
        return [self.out]


@dataclass
class DicomJob:
    """One DICOM series (or the files of one series given one by one)."""

    name: str
    files: list[tuple[Path, Path]] = field(default_factory=list)  # (source, output)
    folder: Path | None = None  # the series' output folder (a folder input), None for files given one by one

    def outputs(self) -> list[Path]:
        """What the job creates: its series folder, or its files."""
        return [self.folder] if self.folder is not None else [out for _, out in self.files]


@dataclass
class Outcome:
    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# Collecting inputs


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith((".nii", ".nii.gz"))


def _sanitise(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")


class _Namer:
    """Output paths that do not collide within one run (``name``, ``name_2``, ...)."""

    def __init__(self) -> None:
        self.used: set[Path] = set()

    def __call__(self, folder: Path, stem: str, ext: str = "") -> Path:
        path, n = folder / f"{stem}{ext}", 2
        while path in self.used:
            path, n = folder / f"{stem}_{n}{ext}", n + 1
        self.used.add(path)
        return path


def _read_header(path: Path, limits: SizeLimits) -> FileHeader:
    """The header of a DICOM file that can be super-resolved (read and checked by the shared reader,
    pixel data located, not loaded), or SkipInput with the reason."""
    header = read_dicom_header(path, limits)
    if isinstance(header, Rejected):
        raise SkipInput(header.reason)
    if header.pixel.float_data:
        raise SkipInput("float pixel data (FloatPixelData/DoubleFloatPixelData) is not supported: the writer "
                        "stores integers")
    return header


def _series_name(header: FileHeader) -> str:
    parts = [header.series_number, header.description]
    name = _sanitise("_".join(p for p in parts if p))
    return name or "series_" + (header.series_uid or "unknown").split(".")[-1]


def _dicom_stem(path: Path) -> tuple[str, str]:
    """(name without its DICOM suffix, the suffix or ""): outputs keep a .dcm/.dicom/.ima suffix."""
    ext = path.suffix if path.suffix.lower() in DICOM_SUFFIXES else ""
    return path.name[: len(path.name) - len(ext)], ext


def collect_inputs(inputs: list[Path], out_dir: Path, suffix: str,
                   limits: SizeLimits = SizeLimits()) -> tuple[list, list[tuple[Path, str]]]:
    """Turn command-line inputs into jobs.

    A NIfTI file -> ``OUT/<stem><suffix>.nii[.gz]``. DICOM files given one by one ->
    ``OUT/<stem><suffix>[.dcm]``, grouped by SeriesInstanceUID (so one new series UID per series).
    A folder is searched recursively; its NIfTI files are jobs of their own and its DICOM files are
    grouped by SeriesInstanceUID, each series -> ``OUT/<SeriesNumber>_<SeriesDescription><suffix>/``
    with the original file names. Hidden files are ignored; a folder that cannot be listed is
    skipped with its reason. DICOM headers are read and checked by
    :func:`mrsr.data.dicom_header.read_dicom_header`, the reader ingest uses: a file it refuses (not
    DICOM, not a greyscale image, no decoder for its transfer syntax, a declared size over ``limits``
    or beyond its pixel data, ...) is skipped here with its reason, before any pixel data is read.

    Left out of a folder's search, in silence: non-image files (:func:`mrsr.io.is_non_image_file`:
    README, LICENSE, .json, .txt, ...) and, where ``out_dir`` lies inside the folder, the outputs
    under it (:func:`is_output`); such a file given by name is skipped with its reason.

    Returns:
        (jobs, skipped, ignored): skipped a list of (path, reason); ignored the non-image files left out.
    """
    namer, jobs, skipped, ignored = _Namer(), [], [], []
    loose: dict[str, DicomJob] = {}

    def header_or_skip(path: Path) -> FileHeader | None:
        try:
            return _read_header(path, limits)
        except SkipInput as exc:
            skipped.append((path, str(exc)))
            return None

    for raw in inputs:
        path = Path(raw)
        if not path.exists():
            skipped.append((path, "no such file or folder"))
            continue
        if is_output(path, out_dir):
            skipped.append((path, f"under --out {out_dir} and named as an output: outputs are never read as inputs"))
            continue
        if path.is_file():
            if is_nifti(path):
                jobs.append(_nifti_job(path, out_dir, suffix, namer))
            elif header := header_or_skip(path):
                stem, ext = _dicom_stem(path)
                job = loose.setdefault(header.series_uid, DicomJob(name=_series_name(header)))
                job.files.append((path, namer(out_dir, stem + suffix, ext)))
            continue
        n_before = len(jobs) + len(skipped)
        headers: list[FileHeader] = []
        # a folder that cannot be listed is skipped with its reason, like a bad file (rglob was silent)
        files = [p for p in list_files(path, lambda folder, why: skipped.append((folder, why)), skip_hidden_dirs=True)
                 if not p.name.startswith(".") and not is_output(p, out_dir)]
        ignored += [p for p in files if is_non_image_file(p)]
        files = [p for p in files if not is_non_image_file(p)]
        for f in files:
            if is_nifti(f):
                jobs.append(_nifti_job(f, out_dir, suffix, namer))
            elif header := header_or_skip(f):
                headers.append(header)
        for members in group_by_series(headers).values():
            name = _series_name(members[0])
            folder = namer(out_dir, name + suffix)
            job = DicomJob(name=f"{path.name}/{name}", folder=folder)
            inner = _Namer()
            for header in sorted(members, key=lambda h: (h.instance or 0, h.path)):
                stem, ext = _dicom_stem(Path(header.path))
                job.files.append((Path(header.path), inner(folder, stem, ext)))
            jobs.append(job)
        if len(jobs) + len(skipped) == n_before:
            skipped.append((path, "no DICOM or NIfTI files found in this folder"))
    jobs.extend(loose.values())
    return jobs, skipped, sorted(set(ignored))


def is_output(path: Path, out_dir: Path) -> bool:
    """Whether ``path`` lies under ``out_dir`` in an entry named as an output (:data:`OUTPUT_NAME`)."""
    try:
        relative = path.resolve().relative_to(out_dir.resolve())
    except (ValueError, OSError):
        return False
    return bool(relative.parts) and OUTPUT_NAME.search(relative.parts[0]) is not None


def _nifti_job(path: Path, out_dir: Path, suffix: str, namer: _Namer) -> NiftiJob:
    ext = ".nii.gz" if path.name.lower().endswith(".nii.gz") else ".nii"
    return NiftiJob(path, namer(out_dir, path.name[: -len(ext)] + suffix, ext))


# ----------------------------------------------------------------------------------------------
# Intensities


def to_stored(values: np.ndarray, slope: float, inter: float, dtype: np.dtype) -> np.ndarray:
    """Invert NIfTI's ``value = stored * scl_slope + scl_inter``; integers are rounded and clipped to ``dtype``.
    (DICOM's inverse, with BitsStored and MONOCHROME1, is :func:`mrsr.data.dicom_pixels.to_stored_values`.)"""
    raw = (values.astype(np.float64) - inter) / slope
    if np.dtype(dtype).kind in "iu":
        limits = np.iinfo(dtype)
        raw = np.clip(np.rint(raw), limits.min, limits.max)
    return raw.astype(dtype)


# ----------------------------------------------------------------------------------------------
# DICOM


def failure_reason(exc: Exception) -> str:
    """The one-line reason an input failed: the message of an expected refusal, else the exception named."""
    if isinstance(exc, FileExistsError):
        return f"{exc.filename} exists (written meanwhile by another run?): not replaced; use --overwrite to replace it"
    expected = isinstance(exc, (SkipInput, UnreadableDicom))
    return str(exc) if expected else f"failed ({type(exc).__name__}: {exc})"


def finite_output(sr: np.ndarray, where: str) -> np.ndarray:
    """The model's output, or SkipInput when it holds NaN/Inf (broken weights): never written."""
    if not np.isfinite(sr).all():
        raise SkipInput(f"the model's output for {where} holds NaN or infinite values (diverged weights?): "
                        "nothing written for this input")
    return sr


def _ds(values: list[float]) -> list[DSfloat]:
    return [DSfloat(float(v), auto_format=True) for v in values]


def _scale_geometry(ds: pydicom.Dataset, scale: int, n_frames: int) -> None:
    """Rows/Columns, PixelSpacing and ImagePositionPatient for ``scale`` x more pixels in-plane."""
    ds.Rows, ds.Columns = int(ds.Rows) * scale, int(ds.Columns) * scale
    shift = (1.0 / scale - 1.0) / 2.0  # in old pixels

    def new_position(ipp, iop, spacing) -> list[DSfloat]:
        x, y = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
        delta = shift * (float(spacing[1]) * x + float(spacing[0]) * y)
        return _ds(list(np.asarray(ipp, float) + delta))

    spacing = ds.get("PixelSpacing")
    if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds and spacing is not None:
        ds.ImagePositionPatient = new_position(ds.ImagePositionPatient, ds.ImageOrientationPatient, spacing)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None:  # enhanced multi-frame: positions per frame, spacing in the groups
        for i in range(min(n_frames, len(per_frame))):
            pos = functional_group_item(ds, i, "PlanePositionSequence", "ImagePositionPatient")
            ori = functional_group_item(ds, i, "PlaneOrientationSequence", "ImageOrientationPatient")
            meas = functional_group_item(ds, i, "PixelMeasuresSequence", "PixelSpacing")
            if pos is not None and ori is not None and meas is not None:
                pos.ImagePositionPatient = new_position(
                    pos.ImagePositionPatient, ori.ImageOrientationPatient, meas.PixelSpacing)
    for item in _pixel_spacing_holders(ds):
        for key in ("PixelSpacing", "ImagerPixelSpacing"):
            if key in item:
                item[key].value = _ds([float(v) / scale for v in item[key].value])


def _pixel_spacing_holders(ds: pydicom.Dataset) -> Iterator[pydicom.Dataset]:
    yield ds
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for group in ds.get(groups, []):
            for meas in group.get("PixelMeasuresSequence", []):
                yield meas


def _derive(ds: pydicom.Dataset, prov: Provenance, series_uid: str) -> None:
    """Identity of the derived image: UIDs, ImageType, descriptions, source reference."""
    old_sop, sop_class = ds.get("SOPInstanceUID"), ds.get("SOPClassUID")
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = series_uid
    image_type = list(ds.get("ImageType", ["ORIGINAL", "PRIMARY"]))
    ds.ImageType = ["DERIVED", *(image_type[1:] or ["SECONDARY"])]
    # A series number of its own, so a viewer or PACS never lists two series of one number; the input's
    # number stays readable in it (5 -> 2005 at x2).
    ds.SeriesNumber = int(ds.get("SeriesNumber") or 0) + SERIES_NUMBER_STEP * prov.scale
    tag = f" [mrsr x{prov.scale}]"
    ds.SeriesDescription = (str(ds.get("SeriesDescription", "") or "")[: 64 - len(tag)] + tag).strip()
    ds.DerivationDescription = prov.describe()[:1024]
    if old_sop and sop_class:
        ref = pydicom.Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = sop_class, old_sop
        ds.SourceImageSequence = [*ds.get("SourceImageSequence", []), ref]
    meta = ds.file_meta
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if sop_class:
        meta.MediaStorageSOPClassUID = sop_class
    if "FileMetaInformationGroupLength" in meta:
        del meta.FileMetaInformationGroupLength


def process_dicom(job: DicomJob, upscale: SliceFn, prov: Provenance, new_series_uid: str,
                  progress: Callable[[int], None] = lambda n: None, overwrite: bool = False) -> Outcome:
    """Super-resolve the files of one series, each to its planned output path.

    Pass 1 decodes every file for the series maximum (the normalisation constant) and minimum (with
    it, the range outputs are clipped to); pass 2 decodes again and writes, so only one file's pixels
    are in memory at a time. A series folder is written as a hidden temporary folder renamed into
    place once every file is in (a killed run never leaves a partial series that looks complete).
    Each output file or series folder is claimed at that rename: without ``overwrite`` a name that
    exists by then (an earlier output, or a concurrent run's) raises FileExistsError, never replaced.
    """
    if job.folder is None:
        return _process_dicom(job, upscale, prov, new_series_uid, progress, lambda out: out, overwrite)
    with atomic_dir(job.folder, keep_empty=False, replace=overwrite) as staging:
        return _process_dicom(job, upscale, prov, new_series_uid, progress,
                              lambda out: staging / out.relative_to(job.folder), True)


def _process_dicom(job: DicomJob, upscale: SliceFn, prov: Provenance, new_series_uid: str,
                   progress: Callable[[int], None], where: Callable[[Path], Path], overwrite: bool) -> Outcome:
    """:func:`process_dicom`'s two passes; each output ``out`` is written at ``where(out)``."""
    outcome, good = Outcome(), []
    lo, hi = math.inf, -math.inf
    for src, out in job.files:
        try:
            values = read_pixels(src)[2]  # scanner units, as ingest reads them (see mrsr.data.dicom_pixels)
            lo, hi = min(lo, float(values.min())), max(hi, float(values.max()))
            good.append((src, out))
        except Exception as exc:  # one bad file must not stop the series: report it and go on
            outcome.skipped.append((src, failure_reason(exc)))
            progress(1)
    norm = hi if hi > 0 else 1.0
    for src, out in good:
        try:
            ds, info, frames = read_pixels(src)
            result = np.empty((len(frames), frames.shape[1] * prov.scale, frames.shape[2] * prov.scale),
                              stored_dtype(info))
            for i, values in enumerate(frames):
                sr = finite_output(upscale(values / np.float32(norm)), f"frame {i}") * np.float32(norm)
                np.clip(sr, lo, hi, out=sr)  # the input series' range: no overshoot below its minimum
                # Back in the file's own convention: its rescale, and a MONOCHROME1 input stays MONOCHROME1.
                # Why not convert to MONOCHROME2: the input's window/level and VOI LUT, kept in the header,
                # are defined on these rescaled values and this polarity, so a viewer shows the output
                # exactly as it shows the input, side by side, with nothing to re-window. The displayed
                # image equals the MONOCHROME2 twin's output (tests/test_upscale.py checks it).
                result[i] = to_stored_values(sr, info, i)
            _scale_geometry(ds, prov.scale, len(frames))
            _derive(ds, prov, new_series_uid)
            for key, fn in (("SmallestImagePixelValue", np.min), ("LargestImagePixelValue", np.max)):
                if key in ds:
                    ds[key].value = int(fn(result))
            for key in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
                if key in ds:
                    del ds[key]
            data = result.tobytes()
            del ds.PixelData
            ds.add_new(0x7FE00010, "OB" if info.bits_allocated == 8 else "OW", data + b"\0" * (len(data) % 2))
            with atomic_path(where(out), suffix=".dcm", replace=overwrite) as tmp:
                pydicom.dcmwrite(tmp, ds, enforce_file_format=True)
            outcome.written.append(out)
        except Exception as exc:
            outcome.skipped.append((src, failure_reason(exc)))
        progress(1)
    return outcome


# ----------------------------------------------------------------------------------------------
# NIfTI


def upscaled_affine(affine: np.ndarray, scale: int) -> np.ndarray:
    """Voxel-to-world affine after ``scale`` x more voxels along the first two axes, same FOV."""
    m = np.eye(4)
    m[0, 0] = m[1, 1] = 1.0 / scale
    m[0, 3] = m[1, 3] = (1.0 / scale - 1.0) / 2.0
    return np.asarray(affine, float) @ m


def process_nifti(job: NiftiJob, upscale: SliceFn, prov: Provenance,
                  progress: Callable[[int], None] = lambda n: None, limits: SizeLimits = SizeLimits(),
                  overwrite: bool = False) -> Outcome:
    """Super-resolve a NIfTI-1/2 volume in-plane, slice by slice along the third axis.

    The output keeps the data type, scl_slope/scl_inter, qform/sform codes and extensions; slices
    are read and written one at a time (the output is streamed into the file), so memory stays at a
    few slices whatever the volume size. The output is claimed when renamed into place: without
    ``overwrite`` an existing name (an earlier or a concurrent run's) raises FileExistsError.
    """
    src, s = job.src, prov.scale
    try:
        img = nib.load(src, keep_file_open=True)
    except Exception as exc:
        raise SkipInput(f"unreadable NIfTI ({type(exc).__name__}: {exc})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise SkipInput(f"{type(img).__name__} is not a single-file NIfTI image")
    problem = nifti_size_problem(img, limits)  # before nibabel allocates a slice of the declared size
    if problem:
        raise SkipInput(problem)
    hdr, shape = img.header, img.shape
    dtype = hdr.get_data_dtype()
    if dtype.fields is not None or dtype.kind not in "iuf":
        raise SkipInput(f"data type {hdr.get_data_dtype()} (colour or complex) is not supported: greyscale only")
    if len(shape) < 2:
        raise SkipInput(f"shape {shape} has fewer than two dimensions")
    slope = float(getattr(img.dataobj, "slope", 1.0))
    inter = float(getattr(img.dataobj, "inter", 0.0))
    rest = shape[2:]
    n_slices = int(np.prod(rest)) if rest else 1

    def slicer(k: int) -> tuple:
        return (slice(None), slice(None), *np.unravel_index(k, rest, order="F")) if rest else (slice(None),) * 2

    lo, hi = math.inf, -math.inf
    for k in range(n_slices):
        try:
            values = np.asarray(img.dataobj[slicer(k)], dtype=np.float32)
        except Exception as exc:
            raise SkipInput(f"cannot read voxel data ({type(exc).__name__}: {exc})") from None
        low, high = float(values.min()), float(values.max())  # NaN and +-Inf propagate
        if not (math.isfinite(low) and math.isfinite(high)):
            raise SkipInput(f"slice {k} holds NaN or infinite values (after scl_slope/scl_inter): no defined "
                            "maximum to normalise by; replace them first. Nothing written for this input")
        lo, hi = min(lo, low), max(hi, high)
    norm = hi if hi > 0 else 1.0

    out_hdr = hdr.copy()
    out_hdr.set_data_shape((shape[0] * s, shape[1] * s, *rest))
    qform, qcode = hdr.get_qform(coded=True)
    sform, scode = hdr.get_sform(coded=True)
    if qcode:
        out_hdr.set_qform(upscaled_affine(qform, s), int(qcode))
    if scode:
        out_hdr.set_sform(upscaled_affine(sform, s), int(scode))
    zooms = list(hdr.get_zooms())
    zooms[0], zooms[1] = zooms[0] / s, zooms[1] / s
    out_hdr.set_zooms(zooms)
    if (slope, inter) != (1.0, 0.0):
        out_hdr.set_slope_inter(slope, inter)
    out_hdr["descrip"] = f"mrsr upscale x{s} {prov.shipped or prov.model}"[:79]
    out_hdr["vox_offset"] = 0  # recomputed from the extensions by write_to
    gz = job.out.name.lower().endswith(".gz")
    with atomic_path(job.out, suffix=".nii.gz" if gz else ".nii", replace=overwrite) as tmp:
        with (gzip.open(tmp, "wb", compresslevel=6) if gz else open(tmp, "wb")) as f:
            out_hdr.write_to(f)
            offset = int(out_hdr["vox_offset"])
            f.write(b"\0" * (offset - f.tell()))
            for k in range(n_slices):
                values = np.asarray(img.dataobj[slicer(k)], dtype=np.float32)
                sr = finite_output(upscale(values / np.float32(norm)), f"slice {k}") * np.float32(norm)
                np.clip(sr, lo, hi, out=sr)  # the input volume's range: no overshoot below its minimum
                f.write(to_stored(sr, slope, inter, dtype).tobytes(order="F"))
                progress(1)
    return Outcome(written=[job.out])
