"""Benchmark: DICOM ingest throughput (``mrsr.data.dicom.ingest_dicom_files`` into a slice store).

Figures, machine and date: docs/benchmarks.md ("DICOM ingest throughput"). Target: >= 500 slices/s
end to end on 2 cores for uncompressed files.

Why this dataset: it is the size of the paper's data (52 sequences of ~22-25 slices) at the two
matrix sizes MR series come in: 1,200 slices (24 series x 25 of 256x256 + 24 series x 25 of
512x512), 16-bit (12 stored), so the figure says how long ``mrsr ingest`` takes on real-sized data.
The timing covers everything ``mrsr ingest`` does for DICOM: header pass, grouping/ordering, decoding,
rescale, and writing slices/KEY.npy + index.csv (the writer's per-slice statistics included).
"Reader alone" is the same reader without the store writer. Each run prints the 1-minute load
average: on a shared machine other jobs lower the wall-clock figures (and, less, the CPU ones).

Usage: python benchmarks/bench_ingest.py [--workers N] [--syntax explicit|rle|jpegls] [--data DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from dicom_fixtures import ExplicitVRLittleEndian, JPEGLSLossless, RLELossless, mr_dataset, new_uid, save  # noqa: E402
from mrsr.data.dicom import ingest_dicom_files, iter_dicom_series  # noqa: E402
from mrsr.data.store import SliceStoreWriter  # noqa: E402

SYNTAX = {"explicit": ExplicitVRLittleEndian, "rle": RLELossless, "jpegls": JPEGLSLossless}


def make_dataset(out: Path, syntax_name: str, series_per_size: int = 24, slices: int = 25) -> list[Path]:
    """Write the paper-sized dataset (one folder per series) and list its files."""
    rng = np.random.default_rng(0)
    files: list[Path] = []
    for size in (256, 512):
        yy, xx = np.mgrid[:size, :size] / size
        phantom = 1500 * np.exp(-((yy - 0.5) ** 2 + (xx - 0.5) ** 2) * 6)
        for s in range(series_per_size):
            uid = new_uid()
            for i in range(slices):
                img = np.clip(phantom * (1 + 0.02 * i) + rng.normal(0, 30, (size, size)), 0, 4095).astype(np.uint16)
                ds = mr_dataset(img, series_uid=uid, patient_id=f"P{s:03d}", description=f"T1post-{size}",
                                position=(0.0, 0.0, 5.0 * i), instance=i + 1, bits_stored=12)
                files.append(save(ds, out / f"{size}-{s:02d}" / f"{i:03d}.dcm", SYNTAX[syntax_name]))
    return files


def _cpu_seconds() -> float:
    """User + system CPU of this process and its reaped children (the decode pool)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--syntax", choices=sorted(SYNTAX), default="explicit")
    parser.add_argument("--data", type=Path, default=None, help="reuse/generate the dataset here")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    data = args.data or Path(tempfile.gettempdir()) / f"mrsr-bench-ingest-{args.syntax}"
    files = sorted(data.rglob("*.dcm")) if data.is_dir() else []
    if len(files) != 1200:
        shutil.rmtree(data, ignore_errors=True)
        t0 = time.perf_counter()
        files = make_dataset(data, args.syntax)
        print(f"generated {len(files)} files in {time.perf_counter() - t0:.1f} s under {data}")
    rates, reader_rates, cpu_rates = [], [], []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        n = sum(len(s.slices) for s in iter_dicom_series(files, lambda p, r: None, workers=args.workers, integers=True))
        reader_rates.append(n / (time.perf_counter() - t0))
        with tempfile.TemporaryDirectory() as tmp:
            writer = SliceStoreWriter(Path(tmp) / "store")
            cpu0 = _cpu_seconds()
            t0 = time.perf_counter()
            ingest_dicom_files(files, writer, workers=args.workers)
            summary = writer.close("local")
            dt = time.perf_counter() - t0
            cpu = _cpu_seconds() - cpu0
            stored = sum(p.stat().st_size for p in (Path(tmp) / "store" / "slices").iterdir())
        assert summary["slices"] == len(files), summary
        rates.append(len(files) / dt)
        cpu_rates.append(len(files) / (cpu / args.workers))
        print(f"{summary['slices']} slices in {dt:.2f} s: {rates[-1]:.0f} slices/s end to end "
              f"(CPU {cpu:.2f} s; reader alone {reader_rates[-1]:.0f} slices/s; {stored / 1e6:.0f} MB stored; "
              f"load average {os.getloadavg()[0]:.1f})")
    print(f"ingest, end to end: best {max(rates):.0f} slices/s, median {float(np.median(rates)):.0f} slices/s; "
          f"reader alone (no store writer): best {max(reader_rates):.0f}, median {float(np.median(reader_rates)):.0f} slices/s; "
          f"CPU-bound estimate on {args.workers} idle cores: {max(cpu_rates):.0f} slices/s "
          f"({args.syntax}, workers={args.workers}; load average {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
