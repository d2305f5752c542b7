"""DICOM headers: read and validate one file's header, its geometry and rescale, and group files into series.

The one place where mrsr reads DICOM headers: ``mrsr ingest`` (through :mod:`mrsr.data.dicom`) and
``mrsr upscale`` (through :mod:`mrsr.upscale_io`) both call :func:`read_dicom_header`, so a file is
accepted, rejected (with the same one-line reason) and interpreted the same way by both. Pixel
decoding is in :mod:`mrsr.data.dicom_pixels`.

Why it is built this way:

- Real folders mix everything: several series per folder, shuffled or random file names,
  multi-frame files, compressed transfer syntaxes, RT/SR objects, stray text files and truncated
  copies. So every file that cannot contribute an image is *rejected with a reason* and the caller
  goes on; files are grouped by ``SeriesInstanceUID`` (never by folder or name) and ordered by
  position along the slice normal (ImageOrientationPatient cross product dotted with
  ImagePositionPatient), then InstanceNumber (:func:`plan_series`).
- Headers are not trusted with memory: the size a header declares is checked against the pixel
  bytes in the file and the documented limits (:mod:`mrsr.limits`) before anything is allocated
  (:func:`declared_size_problem`); a deflated data set is measured before pydicom inflates it.
- Pixel data is located, not loaded (pydicom's ``defer_size``): its file offset lets the series
  reader read native pixel data with one seek (:class:`PixelInfo`).
- Which Rescale Slope/Intercept applies to a frame (:func:`frame_rescale`): the frame's own
  Per-Frame Functional Groups item, else the Shared Functional Groups item, else the top-level
  attributes. Why this order: in the enhanced multi-frame IODs (Enhanced MR, Legacy Converted
  Enhanced MR; DICOM PS3.3 C.7.6.16) the Pixel Value Transformation macro sits in the shared item
  (the same for every frame) or in each per-frame item, and top-level Rescale Slope/Intercept are
  not part of those IODs at all. Converters and anonymisers do leave a stale top-level copy (the
  first source image's) beside per-frame values, and a reader that preferred it would scale every
  frame with the first frame's slope. Classic single-frame MR Image Storage has only the top-level
  attributes, which is why they remain the fallback.
"""

from __future__ import annotations

import collections
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from mrsr.limits import SizeLimits, deflated_dicom_problem

MR_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.4": "MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.4": "Legacy Converted Enhanced MR Image Storage",
}
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
PIXEL_BITS = {"FloatPixelData": 32, "DoubleFloatPixelData": 64}  # fixed by the keyword; PixelData: BitsAllocated
INTEGER_BITS_ALLOCATED = (8, 16, 32)  # what numpy holds as one integer per pixel (decoders and writers)
GREYSCALE = ("MONOCHROME1", "MONOCHROME2")
UNDEFINED_LENGTH = 0xFFFFFFFF  # encapsulated (compressed) pixel data
NATIVE_SYNTAXES = {
    "1.2.840.10008.1.2": "<",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1": "<",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.2": ">",  # Explicit VR Big Endian (retired, still found in archives)
}


class Rejected(NamedTuple):
    """A file that contributes no image, and why (ingest: a rejected.csv row; upscale: a skipped line)."""

    path: str
    reason: str


class UnreadableDicom(Exception):
    """A DICOM file that cannot be read; the message is the one-line reason."""


@dataclass
class PixelInfo:
    """How to turn one file's stored values into scanner units, and back (small, sent to decode workers).

    ``invert`` is MONOCHROME1 (low stored values display white). ``rescale`` holds each frame's
    (slope, intercept) as :func:`frame_rescale` chooses them. ``offset``/``length`` locate native
    (uncompressed, not deflated) pixel data in the file, so the series reader can read it with one
    seek instead of parsing the file again: the main reason ingest is fast. They are None for
    compressed or deflated files, which go through pydicom's decoders.
    """

    rows: int
    cols: int
    n_frames: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    invert: bool  # MONOCHROME1
    rescale: list[tuple[float, float]]  # (slope, intercept) per frame
    float_data: bool = False  # Float/Double Float Pixel Data: values are not integers
    offset: int | None = None
    length: int | None = None
    byteorder: str = "<"


@dataclass
class FileHeader:
    """What the header of one image file says (small and picklable).

    ``ipp`` holds one ImagePositionPatient per frame (None where unknown); ``iop`` the file's
    orientation (None when unknown); ``spacing`` the (row, col) PixelSpacing in mm.
    """

    path: str
    series_uid: str
    sop_uid: str
    sop_class: str
    modality: str
    patient_id: str
    series_number: str
    description: str
    rows: int
    cols: int
    n_frames: int
    instance: int | None
    ipp: list[tuple[float, float, float] | None]
    iop: tuple[float, ...] | None
    spacing: tuple[float, float] | None
    pixel: PixelInfo


# ----------------------------------------------------------------------------------------------
# reading
def read_dicom(path: str | Path, **kwargs: Any) -> Dataset:
    """``pydicom.dcmread`` that also accepts preamble-less files, but only when they really look like DICOM.

    Args:
        path: the file.
        **kwargs: for ``dcmread`` (e.g. ``defer_size`` to locate large values without loading them).

    Raises:
        UnreadableDicom: not a DICOM file, or a deflated data set that inflates past
            :data:`mrsr.limits.DEFLATED_MAX_BYTES` (checked before pydicom inflates it whole).
        Exception: whatever pydicom raises on a truncated or corrupt DICOM file (callers say which part).
    """
    problem = deflated_dicom_problem(path)
    if problem:
        raise UnreadableDicom(problem)
    try:
        return pydicom.dcmread(path, **kwargs)
    except InvalidDicomError:
        pass
    try:
        ds = pydicom.dcmread(path, force=True, **kwargs)
        looks_like_dicom = bool(ds.get("SOPClassUID") and ds.get("Modality"))
    except Exception:  # force=True on random bytes raises anything
        looks_like_dicom = False
    if not looks_like_dicom:
        raise UnreadableDicom("not a DICOM file")
    if "TransferSyntaxUID" not in ds.file_meta:  # pydicom needs it to decode; take the encoding it used
        ds.file_meta.TransferSyntaxUID = (
            pydicom.uid.ImplicitVRLittleEndian if ds.is_implicit_VR else
            pydicom.uid.ExplicitVRLittleEndian if ds.is_little_endian else pydicom.uid.ExplicitVRBigEndian
        )
    return ds


_TAGS: dict[str, int] = {}


def _get(ds: Dataset, keyword: str, default: Any = None) -> Any:
    """``ds.get(keyword, default)`` for a plain element (not a sequence, not character-set text),
    several times cheaper.

    Why: the header pass reads about twenty elements of every file, and ``Dataset.get``'s bookkeeping
    (keyword lookup, ``__getitem__``, storing the converted element back) cost more than the
    conversion itself: half of the header pass, measured. The conversion is pydicom's own
    (:func:`pydicom.dataelem.convert_raw_data_element`), so values are the same.
    """
    tag = _TAGS.get(keyword)
    if tag is None:
        tag = _TAGS[keyword] = pydicom.datadict.tag_for_keyword(keyword)
    elem = ds.get_item(tag, keep_deferred=True)
    if elem is None:
        return default
    if isinstance(elem, RawDataElement):
        if elem.value is None and elem.length:  # deferred (a large value): let pydicom read it
            return ds.get(keyword, default)
        elem = convert_raw_data_element(elem, ds=ds)
    return elem.value


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(np.isfinite(out)) else None


def functional_group_item(ds: Dataset, frame: int | None, sequence: str, keyword: str | None = None) -> Dataset | None:
    """The enhanced multi-frame functional group macro ``sequence`` that applies to ``frame``, or None.

    The frame's Per-Frame Functional Groups item first, then the Shared Functional Groups item (see
    the module docstring for why). With ``keyword``, only an item holding that attribute counts.
    The item returned is the dataset's own: writers may change it in place.

    Args:
        ds: the (enhanced multi-frame) dataset.
        frame: 0-based frame index; None looks at the shared item only.
        sequence: the macro's sequence keyword, e.g. ``"PixelValueTransformationSequence"``.
        keyword: an attribute the item must hold, e.g. ``"RescaleSlope"``.
    """
    holders = []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if frame is not None and per_frame is not None and frame < len(per_frame):
        holders.append(per_frame[frame])
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        holders.append(shared[0])
    for holder in holders:
        items = holder.get(sequence)
        if items and (keyword is None or keyword in items[0]):
            return items[0]
    return None


def _geometry(ds: Dataset, n_frames: int) -> tuple[list, tuple[float, ...] | None, tuple[float, ...] | None]:
    """Per-frame positions, the orientation and the pixel spacing, from classic or enhanced headers."""
    iop = _floats(_get(ds, "ImageOrientationPatient"), 6)
    if iop is None and (item := functional_group_item(ds, 0, "PlaneOrientationSequence", "ImageOrientationPatient")):
        iop = _floats(item.ImageOrientationPatient, 6)
    spacing = _floats(_get(ds, "PixelSpacing"), 2)
    if spacing is None and (item := functional_group_item(ds, 0, "PixelMeasuresSequence", "PixelSpacing")):
        spacing = _floats(item.PixelSpacing, 2)
    base = _floats(_get(ds, "ImagePositionPatient"), 3)
    ipp: list = []
    for f in range(n_frames):
        item = functional_group_item(ds, f, "PlanePositionSequence", "ImagePositionPatient")
        pos = _floats(item.ImagePositionPatient, 3) if item is not None else None
        if pos is None and base is not None:
            pos = base
            step = _get(ds, "SpacingBetweenSlices")
            if f and iop is not None and step is not None:  # classic multi-frame: frames step along the normal
                normal = np.cross(iop[:3], iop[3:])
                pos = tuple(float(v) for v in np.asarray(base) + f * float(step) * normal)
        ipp.append(pos)
    return ipp, iop, spacing


def frame_rescale(ds: Dataset, frame: int) -> tuple[float, float]:
    """(Rescale Slope, Rescale Intercept) of one frame: per-frame group, shared group, then top level.

    Only an absent or empty value means "none" (slope 1, intercept 0): a slope of 0 stays 0, for
    :func:`rescale_problem` to refuse.
    """
    item = functional_group_item(ds, frame, "PixelValueTransformationSequence", "RescaleSlope")
    src = item if item is not None else ds
    slope = _get(src, "RescaleSlope", 1.0)
    intercept = _get(src, "RescaleIntercept", 0.0)
    return float(slope if slope not in (None, "") else 1.0), float(intercept if intercept not in (None, "") else 0.0)


def pixel_info(ds: Dataset) -> PixelInfo:
    """Decoding parameters of a dataset; with its native pixel data location when the file allows."""
    n_frames = int(_get(ds, "NumberOfFrames", 1) or 1)
    alloc = int(_get(ds, "BitsAllocated", 16) or 16)
    float_data = "PixelData" not in ds
    info = PixelInfo(
        rows=int(_get(ds, "Rows")),
        cols=int(_get(ds, "Columns")),
        n_frames=n_frames,
        bits_allocated=alloc,
        bits_stored=int(_get(ds, "BitsStored", alloc) or alloc),
        signed=int(_get(ds, "PixelRepresentation", 0) or 0) == 1,
        invert=str(_get(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1",
        rescale=[(1.0, 0.0) if float_data else frame_rescale(ds, f) for f in range(n_frames)],
        float_data=float_data,
    )
    raw = ds.get_item(0x7FE00010, keep_deferred=True) if not float_data else None
    syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
    if (
        syntax in NATIVE_SYNTAXES
        and alloc in INTEGER_BITS_ALLOCATED
        and getattr(raw, "value_tell", None) is not None
        and getattr(raw, "value", b"") is None  # deferred: not read yet, only located
    ):
        info.offset, info.length, info.byteorder = int(raw.value_tell), int(raw.length), NATIVE_SYNTAXES[syntax]
    return info


# ----------------------------------------------------------------------------------------------
# validating
def declared_size_problem(ds: Dataset, path: str | Path, limits: SizeLimits) -> str | None:
    """Why the pixel data a header declares cannot be read, or None; reads no pixel data.

    The declared size (Rows x Columns x NumberOfFrames x SamplesPerPixel x BitsAllocated) is checked
    against ``limits`` and, for native (uncompressed) pixel data, against the bytes the file really
    holds after the element's start (pydicom's ``defer_size`` gives where the value starts and its
    declared length without reading it). Called before anything is allocated.

    Args:
        ds: the header, read with ``defer_size`` (pixel data located, not loaded).
        path: the file it was read from (its size bounds deferred values).
        limits: the largest slice and volume accepted.
    """
    rows, cols = int(_get(ds, "Rows", 0) or 0), int(_get(ds, "Columns", 0) or 0)
    n_frames = int(_get(ds, "NumberOfFrames", 1) or 1)
    problem = limits.check(rows, cols, n_frames)
    if problem:
        return problem
    keyword = next((k for k in PIXEL_KEYWORDS if k in ds), None)
    if keyword is None:
        return None
    bits = PIXEL_BITS.get(keyword) or int(_get(ds, "BitsAllocated", 16) or 16)
    samples = max(1, int(_get(ds, "SamplesPerPixel", 1) or 1))
    needed = math.ceil(rows * cols * n_frames * samples * bits / 8)
    elem = ds.get_item(pydicom.datadict.tag_for_keyword(keyword), keep_deferred=True)
    syntax = str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else ""
    if elem is None or elem.length == UNDEFINED_LENGTH:
        return None  # compressed: only the limits bound what the decoder will allocate
    if elem.value is not None:
        present = len(elem.value)
    elif syntax in NATIVE_SYNTAXES and getattr(elem, "value_tell", None) is not None:
        present = max(0, min(int(elem.length), os.path.getsize(path) - int(elem.value_tell)))
    else:
        return None  # deferred inside a deflated stream: its offsets are not file offsets
    return limits.check(rows, cols, n_frames, needed, present)


@lru_cache(maxsize=None)
def transfer_syntax_problem(syntax: str) -> str | None:
    """Why pixel data in transfer syntax ``syntax`` cannot be decoded here, or None (cached: one per syntax)."""
    from pydicom.pixels import get_decoder

    name = UID(syntax).name if UID(syntax).is_transfer_syntax else "unknown UID"
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        return f"transfer syntax {syntax} ({name}) is not supported: no pixel data decoder for it"
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies)
        return f"transfer syntax {syntax} ({name}) needs a decoder plugin that is not installed ({missing})"
    return None


def image_problem(ds: Dataset) -> str | None:
    """Why a header (read without its pixel values) is not a greyscale 2-D image that can be decoded, or None."""
    sop_class = str(_get(ds, "SOPClassUID", ""))
    if not sop_class:
        return "corrupt or truncated DICOM header: no SOP Class UID"
    if not any(k in ds for k in PIXEL_KEYWORDS):
        # pydicom stops quietly at the end of a cut file: an image header without pixel data is a cut file
        if "Rows" in ds or sop_class in MR_SOP_CLASSES:
            return "truncated or corrupt pixel data: image header without a complete pixel data element"
        return f"not an image: no pixel data (SOP class {sop_class})"
    samples = int(_get(ds, "SamplesPerPixel", 1) or 1)
    photometric = str(_get(ds, "PhotometricInterpretation", "") or "").upper()
    # a missing PhotometricInterpretation on one sample per pixel is read as MONOCHROME2 (archives lose it)
    if samples != 1 or photometric not in (*GREYSCALE, ""):
        return (f"colour image ({photometric or 'no PhotometricInterpretation'}, SamplesPerPixel={samples}): "
                "only greyscale (MONOCHROME1/2) is supported")
    rows, cols = int(_get(ds, "Rows", 0) or 0), int(_get(ds, "Columns", 0) or 0)
    if rows < 2 or cols < 2:
        return f"not a 2-D image: Rows={rows}, Columns={cols}"
    if "PixelData" in ds:
        bits = _get(ds, "BitsAllocated")
        if bits not in INTEGER_BITS_ALLOCATED:
            return f"BitsAllocated {bits} is not supported (8, 16 or 32)"
        syntax = str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else ""
        problem = transfer_syntax_problem(syntax) if syntax else None
        if problem:
            return problem
    if not _get(ds, "SeriesInstanceUID"):
        return "no SeriesInstanceUID"
    return None


def rescale_problem(info: PixelInfo) -> str | None:
    """Why a frame's Rescale Slope/Intercept define no intensities (not finite, or slope 0), or None."""
    for frame, (slope, intercept) in enumerate(info.rescale):
        if not (math.isfinite(slope) and math.isfinite(intercept) and slope != 0):
            return f"Rescale Slope {slope} / Intercept {intercept} (frame {frame}) define no finite intensities"
    return None


def read_dicom_header(path: str | Path, limits: SizeLimits = SizeLimits()) -> FileHeader | Rejected:
    """Read one file's header (pixel data located, not loaded) and accept or reject it.

    Rejections, each with a one-line reason: not DICOM; a deflated data set that would inflate past
    the cap; an unreadable or truncated header; no pixel data (SR, RT, presentation states...); not
    greyscale; not 2-D; BitsAllocated other than 8/16/32; a transfer syntax without an installed
    decoder; no SeriesInstanceUID; a declared size over ``limits`` or larger than the pixel data in
    the file (:func:`declared_size_problem`); a Rescale Slope/Intercept that defines no finite
    intensities. What kind of image (MR or not) is the caller's choice.

    Args:
        path: the file.
        limits: the largest slice and file accepted (:mod:`mrsr.limits`).
    """
    path = str(path)
    try:
        ds = read_dicom(path, defer_size=4096)
    except UnreadableDicom as exc:
        return Rejected(path, str(exc))
    except Exception as exc:
        return Rejected(path, f"corrupt or truncated DICOM header: {type(exc).__name__}: {exc}")
    try:
        # the size check comes before anything sized by the header: the per-frame loops below run NumberOfFrames times
        problem = image_problem(ds) or declared_size_problem(ds, path, limits)
        if problem:
            return Rejected(path, problem)
        info = pixel_info(ds)
        problem = rescale_problem(info)
        if problem:
            return Rejected(path, problem)
        ipp, iop, spacing = _geometry(ds, info.n_frames)
        instance = _get(ds, "InstanceNumber")
        return FileHeader(
            path=path,
            series_uid=str(_get(ds, "SeriesInstanceUID")),
            sop_uid=str(_get(ds, "SOPInstanceUID", path)),
            sop_class=str(_get(ds, "SOPClassUID", "")),
            modality=str(_get(ds, "Modality", "") or "").upper(),
            patient_id=str(ds.get("PatientID", "") or "unknown"),
            series_number=str(_get(ds, "SeriesNumber", "") or ""),
            description=str(ds.get("SeriesDescription", "") or ""),
            rows=info.rows,
            cols=info.cols,
            n_frames=info.n_frames,
            instance=int(instance) if instance not in (None, "") else None,
            ipp=ipp,
            iop=iop,
            spacing=spacing,
            pixel=info,
        )
    except Exception as exc:
        return Rejected(path, f"corrupt DICOM header: {type(exc).__name__}: {exc}")


# ----------------------------------------------------------------------------------------------
# grouping into series
def group_by_series(headers: list[FileHeader]) -> dict[str, list[FileHeader]]:
    """Files by SeriesInstanceUID (never by folder or name), series in the order they first appear."""
    series: dict[str, list[FileHeader]] = collections.defaultdict(list)
    for header in headers:
        series[header.series_uid].append(header)
    return dict(series)


@dataclass
class DicomSlice:
    """One 2-D slice of a series: its file, frame in that file and position along the normal."""

    path: str
    frame: int
    position: float
    instance: int | None


@dataclass
class SeriesPlan:
    """One series' files as read from their headers: its slices in order, and the files to decode."""

    series_uid: str
    patient_id: str
    description: str
    spacing: tuple[float, float] | None
    normal: tuple[float, float, float] | None
    slices: list[DicomSlice] = field(default_factory=list)
    headers: list[FileHeader] = field(default_factory=list)


def _plane(iop: tuple[float, ...]) -> tuple[float, ...]:
    """Orientation key, tolerant to rounding noise in headers."""
    return tuple(round(v, 2) + 0.0 for v in iop)


def plan_series(headers: list[FileHeader], reject: Callable[[str, str], None]) -> SeriesPlan:
    """One volume from the files of one series: drop duplicates, odd-sized files and other planes,
    then order every frame along the normal (then InstanceNumber, file, frame).

    Args:
        headers: the files of one series (:func:`group_by_series`), at least one.
        reject: called as ``reject(path, reason)`` for each file dropped.
    """
    counts = collections.Counter((h.rows, h.cols) for h in headers)
    shape = max(counts, key=lambda s: (counts[s], s))
    # a 3-plane localizer shares one SeriesInstanceUID across orientations: keep the majority plane
    planes = collections.Counter(_plane(h.iop) for h in headers if h.iop is not None)
    plane = max(planes, key=lambda p: (planes[p], p)) if planes else None
    seen: dict[str, str] = {}
    kept: list[FileHeader] = []
    for h in sorted(headers, key=lambda h: h.path):
        if (h.rows, h.cols) != shape:
            reject(h.path, f"image size {h.rows}x{h.cols} differs from the rest of series {h.series_uid} ({shape[0]}x{shape[1]})")
        elif plane is not None and h.iop is not None and _plane(h.iop) != plane:
            reject(h.path, f"orientation {h.iop} differs from the rest of series {h.series_uid} (a localizer?)")
        elif h.sop_uid in seen:
            reject(h.path, f"duplicate SOPInstanceUID (same image as {seen[h.sop_uid]})")
        else:
            seen[h.sop_uid] = h.path
            kept.append(h)
    iop = next((h.iop for h in kept if h.iop is not None), None)
    normal = None
    if iop is not None:
        n = np.cross(iop[:3], iop[3:])
        normal = tuple(float(v) for v in n / max(float(np.linalg.norm(n)), 1e-12))
    first = kept[0]
    plan = SeriesPlan(first.series_uid, first.patient_id, first.description, first.spacing, normal, headers=kept)
    for h in kept:
        for f, pos in enumerate(h.ipp):
            z = float(np.dot(normal, pos)) if normal is not None and pos is not None else float("nan")
            plan.slices.append(DicomSlice(h.path, f, z, h.instance))

    def key(s: DicomSlice) -> tuple:
        known = np.isfinite(s.position)
        return (0 if known else 1, s.position if known else 0.0, s.instance if s.instance is not None else 0, s.path, s.frame)

    plan.slices.sort(key=key)
    return plan
