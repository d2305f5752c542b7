"""The slice store: the one on-disk layout every data source ends in.

Layout of a store folder ``DIR``::

    DIR/index.csv        one row per kept slice (columns: INDEX_COLUMNS)
    DIR/rejected.csv     one row per rejected input file, or per file with dropped slices (path, reason)
    DIR/slices/KEY.npy   array (n_slices, rows, cols) per series, raw intensities (Rescale
                         Slope/Intercept applied, MONOCHROME1 inverted), DICOM row/column order;
                         dtype uint8/int8/uint16/int16 when every value is an integer that dtype
                         holds, float32 otherwise (see "dtype" below)
    DIR/ingest.json      counts: series, slices kept, all-zero and non-finite slices dropped, files rejected

index.csv is written last and only by an ingest that succeeded with at least one slice: its
presence means a complete store (a failed ingest leaves rejected.csv and ingest.json, never it).

Slices holding a NaN or infinite value are dropped with a rejected.csv row naming them: such a
slice has no maximum to normalise by and no defined PSNR, so downstream stages could only average
NaN or skip it silently. Every stored value is therefore finite.

``index.csv`` rows point into the arrays by ``series_key`` and ``slice_index``; rows of a series are
ordered along the slice normal. Downstream stages (split, patches, evaluation, report) read only this,
and read the arrays only through :func:`load_series`.

dtype: MR scanners store 8-16-bit integers, and with no or integer Rescale Slope/Intercept the
scanner values are those integers again. Such series are stored as the smallest of uint8, int8,
uint16, int16 that holds them (half the bytes of float32 or less: ingest is bound by writing them),
anything else as float32. :func:`load_series` always returns float32, and the conversion is exact
(every integer below 2**24 is a float32), so readers get the same values either way. Per-slice
statistics of integer series are computed exactly (float64 sums of integers); those of float32
series in float32, as before.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mrsr.errors import InputFileError
from mrsr.io import atomic_path, clean_stale_temporaries, write_csv, write_json

INDEX_COLUMNS = [
    "slice_id",  # f"{series_key}:{slice_index:04d}"
    "series_key",  # filesystem-safe id of the series (file stem of slices/KEY.npy)
    "slice_index",  # row in slices/KEY.npy
    "patient_id",
    "series_uid",  # SeriesInstanceUID, or a stable id for NIfTI volumes
    "series_description",
    "path",  # the source file the slice came from
    "position",  # position along the slice normal in mm (NaN when unknown)
    "rows",
    "cols",
    "pixel_spacing_row",  # mm, NaN when unknown
    "pixel_spacing_col",
    "min",
    "max",
    "mean",
    "std",
]
REJECTED_COLUMNS = ["path", "reason"]
# Stored as they are (exact); any other dtype is stored as float32, as before integer storage existed.
INTEGER_DTYPES = tuple(np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16))


def series_key(patient_id: str, description: str, uid: str) -> str:
    """A short, readable, filesystem-safe key that is unique per series UID."""
    stem = re.sub(r"[^A-Za-z0-9]+", "-", f"{patient_id}_{description}").strip("-")[:48]
    digest = hashlib.sha1(uid.encode()).hexdigest()[:8]
    return f"{stem}_{digest}"


@dataclass
class SeriesSlices:
    """One series ready to be stored: slices already ordered along the normal.

    Args:
        patient_id: patient identifier.
        series_uid: SeriesInstanceUID (or a stable id for a NIfTI volume).
        description: series description.
        pixels: array (n, rows, cols), raw intensities in DICOM row/column order: float, or an
            integer dtype of INTEGER_DTYPES when the values are exactly those integers.
        paths: source file of each slice (length n).
        positions: position of each slice along the normal in mm (length n; NaN when unknown).
        pixel_spacing: (row, col) spacing in mm, or None when unknown.
    """

    patient_id: str
    series_uid: str
    description: str
    pixels: np.ndarray
    paths: list[str]
    positions: list[float]
    pixel_spacing: tuple[float, float] | None = None


@dataclass
class SliceStoreWriter:
    """Collects series and rejections, then writes the store atomically (file by file).

    Opening a writer removes the folder's index.csv (the store is being rewritten: not complete
    until :meth:`close` succeeds) and what killed runs left half-written. All-zero slices (padding) are dropped and counted, not stored; so are slices with a NaN or
    infinite value, each file concerned also getting a rejected.csv row.
    """

    out_dir: Path
    rows: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    zero_slices_dropped: int = 0
    nonfinite_slices_dropped: int = 0
    n_series: int = 0

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        (self.out_dir / "slices").mkdir(parents=True, exist_ok=True)
        (self.out_dir / "index.csv").unlink(missing_ok=True)
        for folder in (self.out_dir, self.out_dir / "slices"):
            clean_stale_temporaries(folder)

    def reject(self, path: str | Path, reason: str) -> None:
        self.rejected.append({"path": str(path), "reason": reason})

    def add_series(self, series: SeriesSlices) -> str | None:
        """Store one series; returns its key, or None when every slice was all-zero."""
        pixels = storage_array(series.pixels)
        if pixels.ndim != 3:
            raise ValueError(f"series {series.series_uid}: expected (n, rows, cols), got {pixels.shape}")
        flat = pixels.reshape(len(pixels), -1)
        lows, highs = flat.min(1), flat.max(1)
        # min and max propagate NaN and reach +-Inf: a slice is finite iff both are (no extra pass)
        finite = np.isfinite(lows) & np.isfinite(highs)
        nonzero = (lows != 0) | (highs != 0)  # all-zero <=> min == max == 0
        keep = finite & nonzero
        self.zero_slices_dropped += int((finite & ~nonzero).sum())
        self.nonfinite_slices_dropped += int((~finite).sum())
        bad: dict[str, list[int]] = {}
        for i in np.flatnonzero(~finite):
            bad.setdefault(series.paths[i], []).append(int(i))
        for path, slices in bad.items():
            shown = ", ".join(map(str, slices[:10])) + (", ..." if len(slices) > 10 else "")
            self.reject(path, f"{len(slices)} slice(s) with NaN or infinite values dropped (slice index {shown} "
                              "of the series): no defined intensity to normalise by or to compare")
        if not keep.any():
            for p in dict.fromkeys(series.paths):
                if p not in bad:
                    self.reject(p, "series holds only all-zero slices")
            return None
        kept = pixels if keep.all() else pixels[keep]  # no copy in the common case
        paths = [p for p, k in zip(series.paths, keep) if k]
        positions = [float(z) for z, k in zip(series.positions, keep) if k]
        key = series_key(series.patient_id, series.description, series.series_uid)
        with atomic_path(self.out_dir / "slices" / f"{key}.npy", suffix=".npy") as tmp:
            with open(tmp, "wb") as fh:  # a file object: np.save would append ".npy" to a path
                np.save(fh, kept)
        spacing = series.pixel_spacing or (float("nan"), float("nan"))
        stats = dict(min=lows[keep], max=highs[keep], **mean_std(kept))
        for i in range(len(kept)):
            self.rows.append(
                {
                    "slice_id": f"{key}:{i:04d}",
                    "series_key": key,
                    "slice_index": i,
                    "patient_id": series.patient_id,
                    "series_uid": series.series_uid,
                    "series_description": series.description,
                    "path": paths[i],
                    "position": positions[i],
                    "rows": kept.shape[1],
                    "cols": kept.shape[2],
                    "pixel_spacing_row": spacing[0],
                    "pixel_spacing_col": spacing[1],
                    **{name: float(v[i]) for name, v in stats.items()},
                }
            )
        self.n_series += 1
        return key

    def close(self, source: str, complete: bool = True) -> dict:
        """Write rejected.csv and ingest.json, then index.csv; returns the summary.

        Args:
            source: the data source, recorded in ingest.json.
            complete: False after a failed ingest: the reports are written (what was read, what
                was rejected) but not index.csv, whose presence means a complete store. Neither
                is it written for a store without a single slice.
        """
        write_csv(self.out_dir / "rejected.csv", pd.DataFrame(self.rejected, columns=REJECTED_COLUMNS))
        summary = {
            "source": source,
            "series": self.n_series,
            "slices": len(self.rows),
            "zero_slices_dropped": self.zero_slices_dropped,
            "nonfinite_slices_dropped": self.nonfinite_slices_dropped,
            "files_rejected": len(self.rejected),
        }
        write_json(self.out_dir / "ingest.json", summary)
        if complete and self.rows:  # last, and only now: its presence marks a complete store
            write_csv(self.out_dir / "index.csv", pd.DataFrame(self.rows, columns=INDEX_COLUMNS))
        return summary


def read_index(store_dir: str | Path) -> pd.DataFrame:
    """Read a store's index.csv, with a clear error when the store is incomplete."""
    path = Path(store_dir) / "index.csv"
    if not path.is_file():
        raise InputFileError(f"{path}: no slice index (run the ingest step first)")
    frame = pd.read_csv(path, dtype={"patient_id": str, "series_uid": str, "series_key": str})
    missing = [c for c in INDEX_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    return frame


def load_series(store_dir: str | Path, key: str, mmap: bool = True) -> np.ndarray:
    """The (n, rows, cols) float32 array of one series, whatever dtype it is stored in.

    float32 files are memory-mapped when ``mmap``; integer files are read whole and converted, which
    is exact (integers of 16 bits or less are float32 values), so every reader sees the same floats.
    """
    array = np.load(Path(store_dir) / "slices" / f"{key}.npy", mmap_mode="r" if mmap else None)
    return array if array.dtype == np.float32 else array.astype(np.float32)


def storage_array(pixels: np.ndarray) -> np.ndarray:
    """``pixels`` as the store keeps them: INTEGER_DTYPES unchanged, anything else as float32."""
    pixels = np.asarray(pixels)
    return pixels if pixels.dtype in INTEGER_DTYPES else np.asarray(pixels, dtype=np.float32)


def mean_std(stack: np.ndarray) -> dict[str, np.ndarray]:
    """Per-slice mean and (population) standard deviation of a (n, rows, cols) stack.

    Integer stacks: exact, from float64 sums of the integers (exact below 2**53, which 16-bit slices
    of up to 2**21 pixels stay under), one slice at a time so the float64 copy stays in cache; about
    4x faster than float32 reductions over the whole stack. float32 stacks: numpy's float32
    reductions, unchanged, so float stores keep the statistics they always had.
    """
    flat = stack.reshape(len(stack), -1)
    if flat.dtype.kind == "f":
        return {"mean": flat.mean(1), "std": flat.std(1)}
    n = flat.shape[1]
    mean, std = np.empty(len(flat)), np.empty(len(flat))
    values, squares_buf = np.empty(n, dtype=np.float64), np.empty(n, dtype=np.float64)
    for i, row in enumerate(flat):
        np.copyto(values, row)
        # no BLAS dot: OpenBLAS threads busy-wait, which costs dearly on a shared 2-core machine
        np.multiply(values, values, out=squares_buf)
        total, squares = int(values.sum()), int(squares_buf.sum())
        mean[i] = total / n  # Python ints: exact numerators, one rounding each
        std[i] = math.sqrt((n * squares - total * total) / (n * n))
    return {"mean": mean, "std": std}
