"""Read DICOM files of any layout into series of 2-D MR slices (the ``local`` data source).

Why it is built this way:

- Real folders mix everything: several series per folder, shuffled or random file names,
  multi-frame files, compressed transfer syntaxes, masks stored as Secondary Capture, RT/SR objects,
  stray text files and truncated copies. So files are grouped by ``SeriesInstanceUID`` (never by
  folder or name) and ordered by position along the slice normal (ImageOrientationPatient cross
  product dotted with ImagePositionPatient), then InstanceNumber. Every file that cannot contribute a
  slice is *rejected with a reason* and the run goes on: one bad file never stops an ingest.
- Headers are not trusted with memory: the size a header declares is checked against the pixel
  bytes in the file and the documented limits (:mod:`mrsr.limits`) before anything is allocated,
  for each file in pass 1 and for each series before its array exists.
- Two passes, for speed and bounded memory: pass 1 reads headers only (pixel data located but not
  loaded) in a process pool to group, order and reject; pass 2 decodes series by series, a few
  chunks of files in flight, so at most a few series are in memory. Native (uncompressed) pixel data
  is read straight from its file offset by threads into the series array (no second parse, no
  pickling); compressed files are decoded by pydicom in the process pool.
- Pixel values are what the scanner measured: Rescale Slope/Intercept applied (also per-frame ones
  of enhanced MR), MONOCHROME1 inverted, signed/unsigned honoured. For the slice store
  (``integers=True``) a series whose values are exactly integers of at most 16 bits (integer slope
  and intercept, the usual case) is kept in the smallest integer dtype that holds them: native
  files are then read straight into the series array with no float conversion, and the store
  writes half the bytes. Otherwise series are float32. Decoding goes through pydicom and
  its plugins (pylibjpeg-libjpeg: JPEG baseline/extended/lossless; pyjpegls: JPEG-LS;
  pylibjpeg-openjpeg: JPEG 2000; RLE, deflated and big endian natively).

Public API: :func:`ingest_dicom_files` (what ``mrsr ingest --source local`` calls),
:func:`iter_dicom_series` / :func:`read_dicom_series_files` (decoded series with their header
datasets, e.g. for ``mrsr upscale``), :func:`scan_dicom_file` and :func:`decode_dicom_file`.
"""

from __future__ import annotations

import collections
import ctypes
import dataclasses
import math
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pydicom
import pydicom.pixels
from pydicom.dataelem import RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from mrsr.limits import SizeLimits, deflated_dicom_problem

if TYPE_CHECKING:
    from mrsr.data.store import SeriesSlices, SliceStoreWriter

MR_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.4": "MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.4": "Legacy Converted Enhanced MR Image Storage",
}
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"  # SC, and its multi-frame variants (.7.1-.7.4)
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
SERIAL_BELOW = 48  # fewer files than this: a process pool costs more than it saves


class Rejected(NamedTuple):
    """A file that contributes no slice, and why (goes to the store's rejected.csv)."""

    path: str
    reason: str


@dataclass
class FileHeader:
    """What pass 1 learns about one image file (small and picklable).

    ``ipp`` holds one ImagePositionPatient per frame (None where unknown); ``iop`` the file's
    orientation (None when unknown); ``spacing`` the (row, col) PixelSpacing in mm.
    """

    path: str
    series_uid: str
    sop_uid: str
    patient_id: str
    description: str
    rows: int
    cols: int
    n_frames: int
    instance: int | None
    ipp: list[tuple[float, float, float] | None]
    iop: tuple[float, ...] | None
    spacing: tuple[float, float] | None
    pixel: PixelInfo | None = None
    dataset: Dataset | None = None  # header (no pixel data), kept only on request


NATIVE_SYNTAXES = {
    "1.2.840.10008.1.2": "<",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1": "<",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.2": ">",  # Explicit VR Big Endian (retired, still found in archives)
}


@dataclass
class PixelInfo:
    """How to turn one file's stored values into scanner units (small, sent to decode workers).

    ``offset``/``length`` locate native (uncompressed, not deflated) pixel data in the file, so pass 2
    can read it with one seek instead of parsing the file again: the main reason ingest is fast.
    They are None for compressed or deflated files, which go through pydicom's decoders.
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
class DicomSlice:
    """One 2-D slice of a series: its file, frame in that file, position and header."""

    path: str
    frame: int
    position: float
    instance: int | None
    dataset: Dataset | None = None


@dataclass
class DicomSeries:
    """A decoded series, slices ordered along the normal; ``pixels`` is (n, rows, cols) float32, or
    with ``integers=True`` (see :func:`iter_dicom_series`) possibly an exact integer dtype."""

    series_uid: str
    patient_id: str
    description: str
    slices: list[DicomSlice]
    pixels: np.ndarray
    pixel_spacing: tuple[float, float] | None
    normal: tuple[float, float, float] | None = None

    def to_series_slices(self) -> SeriesSlices:
        """The store's view of this series (import kept local: decode workers need not load pandas)."""
        from mrsr.data.store import SeriesSlices

        return SeriesSlices(
            patient_id=self.patient_id,
            series_uid=self.series_uid,
            description=self.description,
            pixels=self.pixels,
            paths=[s.path for s in self.slices],
            positions=[s.position for s in self.slices],
            pixel_spacing=self.pixel_spacing,
        )


@dataclass
class _Plan:
    """Pass 1's result for one series: slices in order, and the files to decode."""

    series_uid: str
    patient_id: str
    description: str
    spacing: tuple[float, float] | None
    normal: tuple[float, float, float] | None
    slices: list[DicomSlice] = field(default_factory=list)
    headers: list[FileHeader] = field(default_factory=list)
    dtype: np.dtype = field(default_factory=lambda: np.dtype(np.float32))  # of the series array


class _NotDicom(Exception):
    pass


# ----------------------------------------------------------------------------------------------
# pass 1: headers
class _TooLarge(Exception):
    """The file would inflate past what a reader may allocate (the message says why)."""


def _read(path: str, **kwargs) -> Dataset:
    """dcmread that also accepts preamble-less files, but only when they really look like DICOM.

    Raises:
        _TooLarge: a deflated data set that inflates past :data:`mrsr.limits.DEFLATED_MAX_BYTES`.
    """
    problem = deflated_dicom_problem(path)
    if problem:
        raise _TooLarge(problem)
    try:
        return pydicom.dcmread(path, **kwargs)
    except InvalidDicomError:
        pass
    try:
        ds = pydicom.dcmread(path, force=True, **kwargs)
        if not ds.get("SOPClassUID") or not ds.get("Modality"):
            raise _NotDicom()
    except Exception as exc:  # force=True on random bytes raises anything
        raise _NotDicom() from exc
    if "TransferSyntaxUID" not in ds.file_meta:  # pydicom needs it to decode; take the encoding it used
        ds.file_meta.TransferSyntaxUID = (
            pydicom.uid.ImplicitVRLittleEndian if ds.is_implicit_VR else
            pydicom.uid.ExplicitVRLittleEndian if ds.is_little_endian else pydicom.uid.ExplicitVRBigEndian
        )
    return ds


_TAGS: dict[str, int] = {}


def _get(ds: Dataset, keyword: str, default=None):
    """``ds.get(keyword, default)`` for a plain element (not a sequence, not character-set text),
    several times cheaper.

    Why: pass 1 reads about twenty elements of every file, and ``Dataset.get``'s bookkeeping
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


def _floats(value, n: int) -> tuple[float, ...] | None:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(np.isfinite(out)) else None


def _group_item(ds: Dataset, frame: int | None, seq: str, sub: str) -> Dataset | None:
    """An enhanced-MR functional group item (per-frame first, then shared), or None."""
    holders = []
    if frame is not None and "PerFrameFunctionalGroupsSequence" in ds and frame < len(ds.PerFrameFunctionalGroupsSequence):
        holders.append(ds.PerFrameFunctionalGroupsSequence[frame])
    if "SharedFunctionalGroupsSequence" in ds and len(ds.SharedFunctionalGroupsSequence):
        holders.append(ds.SharedFunctionalGroupsSequence[0])
    for h in holders:
        if seq in h and len(h[seq].value) and sub in h[seq].value[0]:
            return h[seq].value[0]
    return None


def _geometry(ds: Dataset, n_frames: int):
    """Per-frame positions, the orientation and the pixel spacing, from classic or enhanced headers."""
    iop = _floats(_get(ds, "ImageOrientationPatient"), 6)
    if iop is None and (item := _group_item(ds, 0, "PlaneOrientationSequence", "ImageOrientationPatient")):
        iop = _floats(item.ImageOrientationPatient, 6)
    spacing = _floats(_get(ds, "PixelSpacing"), 2)
    if spacing is None and (item := _group_item(ds, 0, "PixelMeasuresSequence", "PixelSpacing")):
        spacing = _floats(item.PixelSpacing, 2)
    base = _floats(_get(ds, "ImagePositionPatient"), 3)
    ipp: list = []
    for f in range(n_frames):
        item = _group_item(ds, f, "PlanePositionSequence", "ImagePositionPatient")
        pos = _floats(item.ImagePositionPatient, 3) if item is not None else None
        if pos is None and base is not None:
            pos = base
            step = _get(ds, "SpacingBetweenSlices")
            if f and iop is not None and step is not None:  # classic multi-frame: frames step along the normal
                normal = np.cross(iop[:3], iop[3:])
                pos = tuple(float(v) for v in np.asarray(base) + f * float(step) * normal)
        ipp.append(pos)
    return ipp, iop, spacing


def _frame_rescale(ds: Dataset, frame: int) -> tuple[float, float]:
    item = _group_item(ds, frame, "PixelValueTransformationSequence", "RescaleSlope")
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
        rescale=[(1.0, 0.0) if float_data else _frame_rescale(ds, f) for f in range(n_frames)],
        float_data=float_data,
    )
    raw = ds.get_item(0x7FE00010, keep_deferred=True) if not float_data else None
    syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
    if (
        syntax in NATIVE_SYNTAXES
        and alloc in (8, 16, 32)
        and getattr(raw, "value_tell", None) is not None
        and getattr(raw, "value", b"") is None  # deferred: not read yet, only located
    ):
        info.offset, info.length, info.byteorder = int(raw.value_tell), int(raw.length), NATIVE_SYNTAXES[syntax]
    return info


PIXEL_BITS = {"FloatPixelData": 32, "DoubleFloatPixelData": 64}  # fixed by the keyword; PixelData: BitsAllocated
UNDEFINED_LENGTH = 0xFFFFFFFF  # encapsulated (compressed) pixel data


def declared_size_problem(ds: Dataset, path: str | Path, limits: SizeLimits) -> str | None:
    """Why the pixel data a header declares cannot be read, or None; reads no pixel data.

    The declared size (Rows x Columns x NumberOfFrames x SamplesPerPixel x BitsAllocated) is checked
    against ``limits`` and, for native (uncompressed) pixel data, against the bytes the file really
    holds after the element's start (pydicom's ``defer_size`` gives where the value starts and its
    declared length without reading it). Called before anything is allocated, by ingest and upscale.

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


def scan_dicom_file(path: str | Path, keep_dataset: bool = False, limits: SizeLimits = SizeLimits()) -> FileHeader | Rejected:
    """Pass 1 for one file: read the header (pixel data deferred) and accept or reject it.

    Rejections: not DICOM; no pixel data (SR, RT, presentation states...); not MR; Secondary
    Capture (masks such as Brain-Tumor-Progression's MaskTumor, screenshots); not single-channel;
    not 2-D; a declared size over ``limits`` or larger than the pixel data in the file
    (:func:`declared_size_problem`); an unreadable or truncated header.
    """
    path = str(path)
    try:
        ds = _read(path, defer_size=4096)
    except _NotDicom:
        return Rejected(path, "not a DICOM file")
    except _TooLarge as exc:
        return Rejected(path, str(exc))
    except Exception as exc:
        return Rejected(path, f"corrupt or truncated DICOM header: {type(exc).__name__}: {exc}")
    try:
        sop_class = str(_get(ds, "SOPClassUID", ""))
        if not sop_class:
            return Rejected(path, "corrupt or truncated DICOM header: no SOP Class UID")
        if not any(k in ds for k in PIXEL_KEYWORDS):
            # pydicom stops quietly at the end of a cut file: an image header without pixel data is a cut file
            if "Rows" in ds or sop_class in MR_SOP_CLASSES:
                return Rejected(path, "truncated or corrupt pixel data: image header without a complete pixel data element")
            return Rejected(path, f"not an image: no pixel data (SOP class {sop_class})")
        modality = str(_get(ds, "Modality", "")).upper()
        if modality != "MR":
            return Rejected(path, f"not MR: Modality is {modality or 'missing'}")
        if sop_class.startswith(SECONDARY_CAPTURE_PREFIX):
            return Rejected(path, "Secondary Capture image (a mask or screenshot, not an MR acquisition)")
        samples = int(_get(ds, "SamplesPerPixel", 1) or 1)
        if samples != 1:
            return Rejected(path, f"not single-channel: SamplesPerPixel={samples} ({ds.get('PhotometricInterpretation', '?')})")
        rows, cols = int(_get(ds, "Rows", 0) or 0), int(_get(ds, "Columns", 0) or 0)
        if rows < 2 or cols < 2:
            return Rejected(path, f"not a 2-D image: Rows={rows}, Columns={cols}")
        if not _get(ds, "SeriesInstanceUID"):
            return Rejected(path, "no SeriesInstanceUID")
        # before anything sized by the header: the per-frame geometry below loops over NumberOfFrames
        problem = declared_size_problem(ds, path, limits)
        if problem:
            return Rejected(path, problem)
        n_frames = int(_get(ds, "NumberOfFrames", 1) or 1)
        ipp, iop, spacing = _geometry(ds, n_frames)
        instance = _get(ds, "InstanceNumber")
        header = FileHeader(
            path=path,
            series_uid=str(_get(ds, "SeriesInstanceUID")),
            sop_uid=str(_get(ds, "SOPInstanceUID", path)),
            patient_id=str(ds.get("PatientID", "") or "unknown"),
            description=str(ds.get("SeriesDescription", "") or ""),
            rows=rows,
            cols=cols,
            n_frames=n_frames,
            instance=int(instance) if instance not in (None, "") else None,
            ipp=ipp,
            iop=iop,
            spacing=spacing,
            pixel=pixel_info(ds),
        )
        if keep_dataset:
            for k in PIXEL_KEYWORDS:
                if k in ds:
                    delattr(ds, k)
            header.dataset = ds
        return header
    except Exception as exc:
        return Rejected(path, f"corrupt DICOM header: {type(exc).__name__}: {exc}")


def _plane(iop: tuple[float, ...]) -> tuple[float, ...]:
    """Orientation key, tolerant to rounding noise in headers."""
    return tuple(round(v, 2) + 0.0 for v in iop)


def _plan_series(headers: list[FileHeader], reject: Callable[[str, str], None]) -> _Plan:
    """Drop duplicates and odd-sized files of one series, then order its frames along the normal."""
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
    plan = _Plan(first.series_uid, first.patient_id, first.description, first.spacing, normal, headers=kept)
    for h in kept:
        for f, pos in enumerate(h.ipp):
            z = float(np.dot(normal, pos)) if normal is not None and pos is not None else float("nan")
            plan.slices.append(DicomSlice(h.path, f, z, h.instance, h.dataset))

    def key(s: DicomSlice):
        known = np.isfinite(s.position)
        return (0 if known else 1, s.position if known else 0.0, s.instance if s.instance is not None else 0, s.path, s.frame)

    plan.slices.sort(key=key)
    return plan


# ----------------------------------------------------------------------------------------------
# pass 2: pixels
INTEGER_DTYPES = tuple(np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16))  # smallest first


def _stored_range(info: PixelInfo) -> tuple[int, int]:
    """The values BitsStored allows (what the native path masks or sign-extends to)."""
    bits = info.bits_stored
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if info.signed else (0, 2**bits - 1)


def exact_integer_dtype(infos: Iterable[PixelInfo]) -> np.dtype | None:
    """The smallest integer dtype of INTEGER_DTYPES that holds every scanner value these files can
    produce exactly, or None (then float32 is needed).

    Scanner value = stored value (inverted within the stored range for MONOCHROME1) * slope +
    intercept: an integer when slope and intercept are, within bounds that BitsStored and the sign
    give. Those integers are also what the float32 path computes (exact below 2**24), so storing
    them changes no value.
    """
    low = high = 0
    for info in infos:
        if info.float_data or info.bits_allocated > 16:
            return None
        lo, hi = _stored_range(info)
        for slope, intercept in info.rescale or [(1.0, 0.0)]:
            if not (float(slope).is_integer() and float(intercept).is_integer()):
                return None
            ends = (lo * slope + intercept, hi * slope + intercept)
            low, high = min(low, *ends), max(high, *ends)
    for dtype in INTEGER_DTYPES:
        limits = np.iinfo(dtype)
        if limits.min <= low and high <= limits.max:
            return dtype
    return None


def _fits(values: np.ndarray, dtype: np.dtype) -> bool:
    """Whether float ``values`` are integers that ``dtype`` holds (a decoder may exceed BitsStored)."""
    limits = np.iinfo(dtype)
    return bool(values.size == 0 or (limits.min <= values.min() and values.max() <= limits.max
                                      and np.array_equal(values, np.round(values))))

PREFERRED_PLUGIN = {  # pydicom picks the first available plugin; CharLS decodes JPEG-LS ~3x faster than libjpeg
    "1.2.840.10008.1.2.4.80": "pyjpegls",
    "1.2.840.10008.1.2.4.81": "pyjpegls",
}


def _pixel_array(ds: Dataset, syntax: str) -> np.ndarray:
    plugin = PREFERRED_PLUGIN.get(syntax)
    if plugin:
        try:
            return pydicom.pixels.pixel_array(ds, decoding_plugin=plugin)
        except Exception:  # plugin missing or failing on this file: let pydicom choose
            pass
    return ds.pixel_array


def decode_dicom_file(path: str | Path) -> np.ndarray | Rejected:
    """Pass 2 for one file: its frames as float32 (n_frames, rows, cols) in scanner units.

    Goes through pydicom's decoders (every transfer syntax its plugins handle).
    """
    path = str(path)
    syntax = "unknown transfer syntax"
    try:
        ds = _read(path)
        ts = ds.file_meta.get("TransferSyntaxUID")
        syntax = getattr(ts, "name", str(ts))
        arr = _pixel_array(ds, str(ts))
        info = pixel_info(ds)
    except _NotDicom:
        return Rejected(path, "not a DICOM file")
    except _TooLarge as exc:
        return Rejected(path, str(exc))
    except Exception as exc:
        return Rejected(path, f"truncated or corrupt pixel data ({syntax}): {type(exc).__name__}: {exc}")
    if arr.size != info.n_frames * info.rows * info.cols:
        return Rejected(path, f"pixel array shape {arr.shape} does not match {info.n_frames} frame(s) of {info.rows}x{info.cols}")
    return to_scanner_units(arr.reshape(info.n_frames, info.rows, info.cols), info)


_buffers = threading.local()  # per-thread scratch buffers: no fresh pages per file (page faults dominate)


def _scratch(name: str, nbytes: int) -> bytearray:
    buf = getattr(_buffers, name, None)
    if buf is None or len(buf) < nbytes:
        buf = bytearray(nbytes)
        setattr(_buffers, name, buf)
    return buf


def _decode_native_into(path: str, info: PixelInfo, out: np.ndarray, slots: Sequence[int]) -> Rejected | None:
    """Native pixel data read straight from its file offset into ``out[slots]`` (one slot per frame).

    Same values as pydicom's ``pixel_array`` (unused high bits masked, or sign-extended), without
    parsing the file again or allocating per file. When ``out`` has the file's own (native-endian)
    dtype and no value transform applies, the bytes go directly into ``out``: one read, one in-place
    mask, nothing else (the common case for integer series).
    """
    count = info.n_frames * info.rows * info.cols
    dtype = np.dtype(f"{info.byteorder}{'i' if info.signed else 'u'}{info.bits_allocated // 8}")
    need = count * dtype.itemsize
    if info.length is not None and info.length < need:  # before any buffer is sized by the header
        return Rejected(path, f"truncated or corrupt pixel data (native): {info.length} of {need} bytes declared")
    first = slots[0] if len(slots) else 0
    direct = (
        out.dtype == dtype
        and dtype.isnative
        and not info.invert
        and all(r == (1.0, 0.0) for r in info.rescale)
        and list(slots) == list(range(first, first + info.n_frames))  # frames land on consecutive rows
    )
    raw = memoryview(out[first : first + info.n_frames]).cast("B") if direct else memoryview(_scratch("raw", need))[:need]
    try:
        with open(path, "rb", buffering=0) as fh:
            fh.seek(info.offset)
            got = 0
            while got < need and (n := fh.readinto(raw[got:])):
                got += n
    except OSError as exc:
        return Rejected(path, f"unreadable file: {exc}")
    if got < need:
        return Rejected(path, f"truncated or corrupt pixel data (native): {got} of {need} bytes present")
    unused = info.bits_allocated - info.bits_stored
    if direct:
        if unused > 0:
            _mask_unused_bits(out[first : first + info.n_frames], info, out[first : first + info.n_frames])
        return None
    arr = np.frombuffer(raw, dtype=dtype).reshape(info.n_frames, info.rows, info.cols)
    if unused > 0:
        tmp = np.frombuffer(_scratch("bits", need), dtype=dtype.newbyteorder("="), count=count).reshape(arr.shape)
        _mask_unused_bits(arr, info, tmp)
        arr = tmp
    _convert_into(arr, info, out, slots)
    return None


def _mask_unused_bits(arr: np.ndarray, info: PixelInfo, out: np.ndarray) -> None:
    """As pydicom does with bits above BitsStored: mask them (unsigned) or sign-extend (signed)."""
    unused = info.bits_allocated - info.bits_stored
    if info.signed:
        np.left_shift(arr, unused, out=out)
        np.right_shift(out, unused, out=out)
    else:
        np.bitwise_and(arr, (1 << info.bits_stored) - 1, out=out)


def _convert_into(arr: np.ndarray, info: PixelInfo, out: np.ndarray, slots: Sequence[int]) -> None:
    """Stored values -> scanner units in ``out[slots]``: MONOCHROME1 inverted within the stored range
    (bright = high signal), then Rescale Slope/Intercept per frame. ``out`` is float32, or an integer
    dtype that :func:`exact_integer_dtype` chose for these values (integer arithmetic, exact)."""
    lo, hi = _stored_range(info)
    integer = out.dtype.kind in "iu"
    for f, slot in enumerate(slots):
        slope, intercept = info.rescale[f] if f < len(info.rescale) else (1.0, 0.0)
        dst = out[slot]
        if integer:
            if not info.invert and slope == 1.0 and intercept == 0.0:
                dst[...] = arr[f]  # in range by construction
                continue
            values = arr[f].astype(np.int32)  # room for the transform before narrowing
            if info.invert:
                np.subtract(lo + hi, values, out=values)
            values *= int(slope)
            values += int(intercept)
            dst[...] = values
            continue
        dst[...] = arr[f]
        if info.invert:
            np.subtract(float(lo + hi), dst, out=dst)
        if slope != 1.0:
            dst *= np.float32(slope)
        if intercept != 0.0:
            dst += np.float32(intercept)


def to_scanner_units(arr: np.ndarray, info: PixelInfo) -> np.ndarray:
    """Stored values (n_frames, rows, cols) -> a new float32 array in scanner units."""
    out = np.empty(arr.shape, dtype=np.float32)
    _convert_into(arr, info, out, range(arr.shape[0]))
    return out


def _decode_job(jobs: Sequence[tuple[FileHeader, Sequence[int]]], out: dict[int, np.ndarray] | None
                ) -> list[np.ndarray | Rejected | None]:
    """Decode files: native ones straight into their series array (``out`` by plan, same process),
    others through pydicom (returned: they may come from another process)."""
    results: list[np.ndarray | Rejected | None] = []
    for header, (plan_index, *slots) in jobs:
        info = header.pixel
        if out is not None and info is not None and info.offset is not None:
            results.append(_decode_native_into(header.path, info, out[plan_index], slots))
        else:
            results.append(decode_dicom_file(header.path))
    return results


def _scan_many(paths: Sequence[str], keep_dataset: bool, limits: SizeLimits) -> list[FileHeader | Rejected]:
    return [scan_dicom_file(p, keep_dataset, limits) for p in paths]


def _chunks(items: Sequence, size: int) -> list[Sequence]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


# ----------------------------------------------------------------------------------------------
# the two passes together
def iter_dicom_series(
    paths: Iterable[str | Path],
    reject: Callable[[str, str], None],
    workers: int | None = None,
    keep_datasets: bool = False,
    integers: bool = False,
    limits: SizeLimits = SizeLimits(),
) -> Iterator[DicomSeries]:
    """Yield every decodable series among ``paths``; report each unusable file through ``reject``.

    Args:
        paths: files in any layout and order.
        reject: called as ``reject(path, reason)`` for each file that contributes no slice.
        workers: processes for reading/decoding (default: the usable cores; 1 = no pool).
        keep_datasets: keep each slice's header Dataset (pixel data removed) on ``DicomSlice.dataset``.
        integers: give a series whose values are exactly integers of at most 16 bits in the smallest
            integer dtype that holds them (:func:`exact_integer_dtype`; what the slice store keeps)
            instead of float32. Same values, half the memory or less, and no float conversion.
        limits: the largest slice and file/series accepted (:mod:`mrsr.limits`); checked on headers,
            before any pixel memory is allocated.

    Series come out in SeriesInstanceUID order; at most a few series are decoded ahead.
    """
    files = list(dict.fromkeys(str(p) for p in paths))  # the same path twice is one file
    workers = default_workers() if workers is None else max(1, workers)
    parallel = workers > 1 and len(files) >= SERIAL_BELOW
    # Processes for pydicom parsing and compressed decoding (GIL-bound); threads for native pixel
    # data (a seek, a read and numpy conversions, which release the GIL; no pickling of arrays).
    pool = ProcessPoolExecutor(workers) if parallel else None
    threads = ThreadPoolExecutor(workers) if parallel else None
    try:
        yield from _run(files, reject, pool, threads, workers, keep_datasets, integers, limits)
    finally:
        for ex in (pool, threads):
            if ex is not None:
                ex.shutdown(wait=True, cancel_futures=True)


def _run(files: list[str], reject: Callable[[str, str], None], pool: ProcessPoolExecutor | None,
         threads: ThreadPoolExecutor | None, workers: int, keep_datasets: bool, integers: bool = False,
         limits: SizeLimits = SizeLimits()) -> Iterator[DicomSeries]:
    # pass 1
    size = max(1, min(64, len(files) // (4 * workers) or 1))
    if pool is None:
        scanned = _scan_many(files, keep_datasets, limits)
    else:
        parts = _chunks(files, size)
        scanned = [r for part in pool.map(_scan_many, parts, [keep_datasets] * len(parts), [limits] * len(parts))
                   for r in part]
    by_series: dict[str, list[FileHeader]] = collections.defaultdict(list)
    for item in scanned:
        if isinstance(item, Rejected):
            reject(item.path, item.reason)
        else:
            by_series[item.series_uid].append(item)
    plans = [_plan_series(by_series[uid], reject) for uid in sorted(by_series)]
    plans = [p for p in plans if _within_limits(p, limits, reject)]  # before any series array is allocated
    if integers:
        for plan in plans:
            plan.dtype = exact_integer_dtype(h.pixel for h in plan.headers) or plan.dtype

    # pass 2: decode files in series order, a bounded number of chunks in flight; native files go
    # straight into their series' array, others come back and are copied in; a series is yielded
    # once all its files are in.
    slots: dict[tuple[int, str], list[int]] = {}  # (plan, file) -> output row of each frame, in frame order
    for i, plan in enumerate(plans):
        for h in plan.headers:
            slots[(i, h.path)] = [0] * h.n_frames
        for k, sl in enumerate(plan.slices):
            slots[(i, sl.path)][sl.frame] = k
    arrays: dict[int, np.ndarray] = {}
    order = [(i, h) for i, plan in enumerate(plans) for h in plan.headers]
    chunks = _chunks(order, 8)
    pending: collections.deque[tuple[Sequence, Future | list]] = collections.deque()
    next_chunk, next_plan = 0, 0
    failed: dict[int, dict[str, Rejected | str]] = collections.defaultdict(dict)
    # decoded float values that an integer series array cannot hold (a codec gave values beyond
    # BitsStored): kept aside, and the series becomes float32 once no thread writes into it any more
    misfits: dict[int, list[tuple[list[int], np.ndarray]]] = collections.defaultdict(list)
    remaining = [len(p.headers) for p in plans]
    while next_plan < len(plans):
        while next_chunk < len(chunks) and len(pending) < 3 * workers:
            chunk = chunks[next_chunk]
            for i, _ in chunk:
                if i not in arrays:
                    h0 = plans[i].headers[0]
                    arrays[i] = np.empty((len(plans[i].slices), h0.rows, h0.cols), dtype=plans[i].dtype)
            jobs = [(h, (i, *slots[(i, h.path)])) for i, h in chunk]
            if all(h.pixel is not None and h.pixel.offset is not None for _, h in chunk):
                job = threads.submit(_decode_job, jobs, arrays) if threads else _decode_job(jobs, arrays)
            else:
                light = [(_light(h), s) for h, s in jobs]
                job = pool.submit(_decode_job, light, None) if pool else _decode_job(jobs, arrays)
            pending.append((chunk, job))
            next_chunk += 1
        if pending:
            chunk, result = pending.popleft()
            for (i, h), r in zip(chunk, result.result() if isinstance(result, Future) else result):
                remaining[i] -= 1
                if isinstance(r, Rejected):
                    failed[i][h.path] = r
                elif r is not None:
                    if r.shape != (h.n_frames, h.rows, h.cols):
                        failed[i][h.path] = Rejected(h.path, f"decoded {r.shape}, header says {h.n_frames} frame(s) of {h.rows}x{h.cols}")
                    elif arrays[i].dtype.kind != "f" and not _fits(r, arrays[i].dtype):
                        misfits[i].append((slots[(i, h.path)], r))
                    else:
                        arrays[i][slots[(i, h.path)]] = r
        while next_plan < len(plans) and remaining[next_plan] == 0:
            pixels = arrays.pop(next_plan)
            if next_plan in misfits:
                pixels = pixels.astype(np.float32)  # exact: the integers stored so far are float32 values
                for rows, values in misfits.pop(next_plan):
                    pixels[rows] = values
            series = _assemble(plans[next_plan], pixels, failed.pop(next_plan, {}), reject)
            next_plan += 1
            if series is not None:
                yield series


def _within_limits(plan: _Plan, limits: SizeLimits, reject: Callable[[str, str], None]) -> bool:
    """Whether a series' array fits ``limits`` (each file did; many files together may not)."""
    h0 = plan.headers[0]
    problem = limits.check(h0.rows, h0.cols, len(plan.slices))
    for h in plan.headers if problem else ():
        reject(h.path, f"series {plan.series_uid}: {problem}")
    return problem is None


def _light(h: FileHeader) -> FileHeader:
    """The header without its Dataset: what a decode worker needs, cheap to pickle."""
    return h if h.dataset is None else dataclasses.replace(h, dataset=None)


def _assemble(plan: _Plan, pixels: np.ndarray, failed: dict, reject: Callable[[str, str], None]) -> DicomSeries | None:
    for r in failed.values():
        reject(r.path, r.reason)
    keep = [k for k, s in enumerate(plan.slices) if s.path not in failed]
    if not keep:
        return None
    if len(keep) < len(plan.slices):
        pixels = pixels[keep]
    slices = [plan.slices[k] for k in keep]
    return DicomSeries(plan.series_uid, plan.patient_id, plan.description, slices, pixels, plan.spacing, plan.normal)


def read_dicom_series_files(
    paths: Iterable[str | Path], workers: int | None = 1, keep_datasets: bool = True,
    limits: SizeLimits = SizeLimits(),
) -> tuple[list[DicomSeries], list[Rejected]]:
    """All series among ``paths``, decoded and ordered, plus the rejected files.

    For callers that need the headers back (``mrsr upscale`` writes new files from them), so
    ``keep_datasets`` defaults to True and the pool to off (small inputs).
    """
    rejected: list[Rejected] = []
    series = list(iter_dicom_series(paths, lambda p, r: rejected.append(Rejected(p, r)), workers, keep_datasets,
                                    limits=limits))
    return series, rejected


def _keep_freed_memory() -> None:
    """Ask glibc to reuse freed series-sized blocks instead of returning them to the OS.

    Why: ingest allocates and frees hundreds of MB of 1-30 MB arrays (series arrays, the store's
    statistics buffers, the decoders' output). By default glibc serves each from fresh mmap pages, and first-touch page faults
    then dominate (2-3x slower end to end on a 2-core VM, measured). Costs only that the process
    keeps its peak heap; a no-op without glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 32 * 2**20)  # glibc's maximum on 64-bit
        libc.mallopt(m_trim_threshold, 1 * 2**30)
    except (OSError, AttributeError):
        pass


def ingest_dicom_files(paths: list[Path], writer: SliceStoreWriter, workers: int | None = None,
                       limits: SizeLimits = SizeLimits()) -> None:
    """Read DICOM files of any layout into a :class:`mrsr.data.store.SliceStoreWriter`.

    Each series becomes one ``add_series`` call; every unusable file becomes ``writer.reject``
    (a declared size over ``limits`` included: checked before any pixel memory is allocated).
    The writer runs in a background thread (np.save and its statistics release the GIL), one series
    at a time, while the next series is decoded.
    """
    _keep_freed_memory()
    with ThreadPoolExecutor(1) as background:
        writing: Future | None = None
        for series in iter_dicom_series(paths, writer.reject, workers, integers=True, limits=limits):
            if writing is not None:
                writing.result()
            writing = background.submit(writer.add_series, series.to_series_slices())
        if writing is not None:
            writing.result()
