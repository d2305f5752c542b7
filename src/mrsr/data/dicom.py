"""Read DICOM files of any layout into series of 2-D MR slices (the ``local`` data source of ``mrsr ingest``).

Headers are read and validated by :mod:`mrsr.data.dicom_header` and pixels decoded by
:mod:`mrsr.data.dicom_pixels`, the same code ``mrsr upscale`` reads through; this module runs them
over many files at once, fast and in bounded memory, and decides which images are training data.

Why it is built this way:

- Only MR acquisitions are kept (:func:`acquisition_problem`): not other modalities, and not
  Secondary Capture (masks such as Brain-Tumor-Progression's MaskTumor, screenshots). Every file
  that cannot contribute a slice is *rejected with a reason* and the run goes on: one bad file
  never stops an ingest.
- Headers are not trusted with memory: each file's declared size is checked in pass 1
  (:func:`mrsr.data.dicom_header.read_dicom_header`) and each series' before its array exists.
- Two passes, for speed and bounded memory: pass 1 reads headers only (pixel data located but not
  loaded) in a process pool to group, order and reject; pass 2 decodes series by series, a few
  chunks of files in flight, so at most a few series are in memory. Native (uncompressed) pixel data
  is read straight from its file offset by threads into the series array (no second parse, no
  pickling); compressed files are decoded by pydicom in the process pool.
- For the slice store (``integers=True``) a series whose values are exactly integers of at most 16
  bits (integer slope and intercept, the usual case) is kept in the smallest integer dtype that
  holds them (:func:`mrsr.data.dicom_pixels.exact_integer_dtype`): native files are then read
  straight into the series array with no float conversion, and the store writes half the bytes.
  Otherwise series are float32.

Public API: :func:`ingest_dicom_files` (what ``mrsr ingest --source local`` calls),
:func:`iter_dicom_series` (decoded series) and :func:`scan_dicom_file` (pass 1 for one file).
"""

from __future__ import annotations

import collections
import ctypes
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mrsr.data.dicom_header import (
    DicomSlice,
    FileHeader,
    Rejected,
    SeriesPlan,
    group_by_series,
    plan_series,
    read_dicom_header,
)
from mrsr.data.dicom_pixels import decode_dicom_file, decode_native_into, exact_integer_dtype, fits
from mrsr.limits import SizeLimits

if TYPE_CHECKING:
    from mrsr.data.store import SeriesSlices, SliceStoreWriter

SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"  # SC, and its multi-frame variants (.7.1-.7.4)
SERIAL_BELOW = 48  # fewer files than this: a process pool costs more than it saves


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


def acquisition_problem(header: FileHeader) -> str | None:
    """Why an image is not an MR acquisition that training may use, or None."""
    if header.modality != "MR":
        return f"not MR: Modality is {header.modality or 'missing'}"
    if header.sop_class.startswith(SECONDARY_CAPTURE_PREFIX):
        return "Secondary Capture image (a mask or screenshot, not an MR acquisition)"
    return None


def scan_dicom_file(path: str | Path, limits: SizeLimits = SizeLimits()) -> FileHeader | Rejected:
    """Pass 1 for one file: its header (:func:`mrsr.data.dicom_header.read_dicom_header`), rejected
    as well when it is not an MR acquisition (:func:`acquisition_problem`)."""
    header = read_dicom_header(path, limits)
    problem = acquisition_problem(header) if isinstance(header, FileHeader) else None
    return Rejected(header.path, problem) if problem else header


def _decode_job(jobs: Sequence[tuple[FileHeader, Sequence[int]]], out: dict[int, np.ndarray] | None
                ) -> list[np.ndarray | Rejected | None]:
    """Decode files: native ones straight into their series array (``out`` by plan, same process),
    others through pydicom (returned: they may come from another process)."""
    results: list[np.ndarray | Rejected | None] = []
    for header, (plan_index, *slots) in jobs:
        info = header.pixel
        if out is not None and info.offset is not None:
            results.append(decode_native_into(header.path, info, out[plan_index], slots))
        else:
            results.append(decode_dicom_file(header.path))
    return results


def _scan_many(paths: Sequence[str], limits: SizeLimits) -> list[FileHeader | Rejected]:
    return [scan_dicom_file(p, limits) for p in paths]


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
    integers: bool = False,
    limits: SizeLimits = SizeLimits(),
) -> Iterator[DicomSeries]:
    """Yield every decodable series among ``paths``; report each unusable file through ``reject``.

    Args:
        paths: files in any layout and order.
        reject: called as ``reject(path, reason)`` for each file that contributes no slice.
        workers: processes for reading/decoding (default: the usable cores; 1 = no pool).
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
        yield from _run(files, reject, pool, threads, workers, integers, limits)
    finally:
        for ex in (pool, threads):
            if ex is not None:
                ex.shutdown(wait=True, cancel_futures=True)


def _run(files: list[str], reject: Callable[[str, str], None], pool: ProcessPoolExecutor | None,
         threads: ThreadPoolExecutor | None, workers: int, integers: bool = False,
         limits: SizeLimits = SizeLimits()) -> Iterator[DicomSeries]:
    # pass 1
    size = max(1, min(64, len(files) // (4 * workers) or 1))
    if pool is None:
        scanned = _scan_many(files, limits)
    else:
        parts = _chunks(files, size)
        scanned = [r for part in pool.map(_scan_many, parts, [limits] * len(parts))
                   for r in part]
    for item in scanned:
        if isinstance(item, Rejected):
            reject(item.path, item.reason)
    by_series = group_by_series([item for item in scanned if isinstance(item, FileHeader)])
    plans = [plan_series(by_series[uid], reject) for uid in sorted(by_series)]
    plans = [p for p in plans if _within_limits(p, limits, reject)]  # before any series array is allocated
    float32 = np.dtype(np.float32)
    dtypes = [(exact_integer_dtype(h.pixel for h in plan.headers) if integers else None) or float32 for plan in plans]

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
                    arrays[i] = np.empty((len(plans[i].slices), h0.rows, h0.cols), dtype=dtypes[i])
            jobs = [(h, (i, *slots[(i, h.path)])) for i, h in chunk]
            if all(h.pixel.offset is not None for _, h in chunk):
                job = threads.submit(_decode_job, jobs, arrays) if threads else _decode_job(jobs, arrays)
            else:
                job = pool.submit(_decode_job, jobs, None) if pool else _decode_job(jobs, arrays)
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
                    elif arrays[i].dtype.kind != "f" and not fits(r, arrays[i].dtype):
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


def _within_limits(plan: SeriesPlan, limits: SizeLimits, reject: Callable[[str, str], None]) -> bool:
    """Whether a series' array fits ``limits`` (each file did; many files together may not)."""
    h0 = plan.headers[0]
    problem = limits.check(h0.rows, h0.cols, len(plan.slices))
    for h in plan.headers if problem else ():
        reject(h.path, f"series {plan.series_uid}: {problem}")
    return problem is None


def _assemble(plan: SeriesPlan, pixels: np.ndarray, failed: dict, reject: Callable[[str, str], None]) -> DicomSeries | None:
    for r in failed.values():
        reject(r.path, r.reason)
    keep = [k for k, s in enumerate(plan.slices) if s.path not in failed]
    if not keep:
        return None
    if len(keep) < len(plan.slices):
        pixels = pixels[keep]
    slices = [plan.slices[k] for k in keep]
    return DicomSeries(plan.series_uid, plan.patient_id, plan.description, slices, pixels, plan.spacing, plan.normal)


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
