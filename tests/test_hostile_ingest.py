"""Hostile inputs to ingest, split and evaluation: every file here is generated to lie.

Headers declare sizes their files do not hold (or that no limit allows), volumes carry NaN and
Inf, folders cannot be listed. The run must go on: the good data indexed, every bad file in
rejected.csv with its reason, memory bounded (measured in a child process), nothing averaged over
NaN, and index.csv only when the store is complete.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.encaps import encapsulate

from dicom_fixtures import mr_dataset, new_uid, save
from hostile_fixtures import cut_dicom, lying_dicom, lying_nifti, make_unreadable
from mrsr.data.dicom import ingest_dicom_files, scan_dicom_file
from mrsr.data.ingest import ingest
from mrsr.data.store import SliceStoreWriter
from mrsr.limits import SizeLimits

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
RSS_BUDGET_MB = 500


# ------------------------------------------------------------------------------------- generators
def good_dicom_series(folder: Path, n: int = 3, size: int = 32) -> str:
    uid = new_uid()
    for i in range(n):
        img = (np.add.outer(np.arange(size), np.arange(size)) % 50 + 10 * (i + 1)).astype(np.uint16)
        save(mr_dataset(img, series_uid=uid, position=(0, 0, 3.0 * i), instance=i + 1), folder / f"{i}.dcm")
    return uid


def good_nifti(path: Path, dtype=np.int16) -> Path:
    rng = np.random.default_rng(0)
    volume = (rng.random((24, 20, 4)) * 1000 + 1).astype(dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), path)
    return path


def compressed_bomb_header(path: Path, rows: int = 4000, cols: int = 4000, frames: int = 30) -> Path:
    """An RLE file declaring 4000 x 4000 x 30 frames (within the limits) over a few KB of fragments."""
    ds = mr_dataset(np.ones((4, 4), np.uint16), series_uid=new_uid())
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, frames
    ds.PixelData = encapsulate([b"\x01\x00\x00\x00\x40\x00\x00\x00" + bytes(56) + b"\x00\x07" * 32] * frames)
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = pydicom.uid.RLELossless
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def deflate_bomb(path: Path, inflated: int = (1 << 30) + (200 << 20)) -> Path:
    """A deflated-transfer-syntax DICOM of about 1 MB whose data set inflates to ``inflated`` bytes
    (zeros): pydicom would inflate it whole before reading one header element."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.filewriter import write_file_meta_info

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = pydicom.uid.MRImageStorage
    meta.MediaStorageSOPInstanceUID = new_uid()
    meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(16 << 20)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(fh, meta, enforce_standard=True)
        for _ in range(inflated // len(zeros)):
            fh.write(deflater.compress(zeros))
        fh.write(deflater.flush())
    return path


def hostile_folder(root: Path) -> dict[str, str]:
    """Every lying header of class 1 beside a good NIfTI volume and a good DICOM series.

    Returns {file name: a phrase its rejection reason must contain}.
    """
    lying_dicom(root / "frames.dcm", 65535, 65535, 100_000)
    lying_dicom(root / "wide.dcm", 30000, 30000)
    lying_dicom(root / "short.dcm", 4000, 4000, 20)  # within the limits; 640 MB declared, 8 KB present
    cut_dicom(root / "cut.dcm")
    compressed_bomb_header(root / "bomb.dcm")
    deflate_bomb(root / "deflated.dcm")
    lying_nifti(root / "wide.nii", (30000, 30000, 1))
    lying_nifti(root / "short.nii", (2000, 2000, 100))
    lying_nifti(root / "short.nii.gz", (2000, 2000, 100))
    lying_nifti(root / "fourd.nii.gz", (2000, 2000, 100, 1), np.float64)
    good_nifti(root / "P1" / "good.nii.gz")
    good_dicom_series(root / "P2" / "dicom")
    over = "over the limit"
    held = "but the file holds only"
    return {"frames.dcm": over, "wide.dcm": over, "short.dcm": held, "cut.dcm": held,
            "bomb.dcm": "RLE", "deflated.dcm": "decompression bomb", "wide.nii": over, "short.nii": held, "short.nii.gz": held, "fourd.nii.gz": held}


CHILD = textwrap.dedent("""
    import resource, sys
    # a guard for the shared machine should the checks regress; the assertion is on the peak RSS
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
    from mrsr.cli import main
    rc = main(sys.argv[1:])
    # VmHWM: this process's own peak. getrusage's ru_maxrss survives execve on Linux, so after a
    # fork of a large test process it would report the parent's size, not ours.
    peak_kb = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:'))
    print("PEAK_RSS_KB", peak_kb)
    sys.exit(rc)
""")


def run_child(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    """``mrsr ARGS`` in a child process; returns (result, its peak RSS in MB)."""
    result = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, timeout=300)
    peak = [line for line in result.stdout.splitlines() if line.startswith("PEAK_RSS_KB")]
    return result, (int(peak[0].split()[1]) / 1024 if peak else float("nan"))


# ------------------------------------------------------------------------- class 1: sizes first
def test_hostile_headers_beside_good_data_ingest_in_bounded_memory(tmp_path):
    """Hostile input as a whole: exit 0, good data indexed, each lie a rejected.csv row, < 500 MB."""
    expected = hostile_folder(tmp_path / "in")
    result, peak_mb = run_child("ingest", "--source", "local", "--input", str(tmp_path / "in"), "--out", str(tmp_path / "store"))
    assert result.returncode == 0, result.stderr
    assert peak_mb < RSS_BUDGET_MB, f"peak RSS {peak_mb:.0f} MB"
    index = pd.read_csv(tmp_path / "store" / "index.csv", dtype=str)
    assert sorted(index.drop_duplicates("series_key")["path"].map(lambda p: Path(p).name)) == ["0.dcm", "good.nii.gz"]
    rejected = pd.read_csv(tmp_path / "store" / "rejected.csv")
    reasons = {Path(p).name: r for p, r in zip(rejected["path"], rejected["reason"])}
    assert set(reasons) == set(expected)
    for name, phrase in expected.items():
        assert phrase in reasons[name], (name, reasons[name])


def test_series_over_the_volume_limit_is_rejected_before_its_array_exists(tmp_path):
    """Each file fits; together they do not: every file of the series is rejected, naming the option."""
    good_dicom_series(tmp_path / "in", n=5, size=32)
    writer = SliceStoreWriter(tmp_path / "store")
    ingest_dicom_files(sorted((tmp_path / "in").iterdir()), writer, workers=1,
                       limits=SizeLimits(max_volume_voxels=4 * 32 * 32))
    assert writer.rows == [] and len(writer.rejected) == 5
    assert all("--max-volume-voxels" in r["reason"] and "series" in r["reason"] for r in writer.rejected)


@pytest.mark.parametrize("limits,phrase", [
    (SizeLimits(max_slice_voxels=31 * 32), "--max-slice-voxels"),
    (SizeLimits(), None),
])
def test_limits_are_options_and_a_good_file_passes(tmp_path, limits, phrase):
    good_dicom_series(tmp_path / "in", n=1)
    result = scan_dicom_file(tmp_path / "in" / "0.dcm", limits=limits)
    assert (getattr(result, "reason", None) is None) if phrase is None else phrase in result.reason
    summary = ingest("local", tmp_path / "in", tmp_path / "store") if phrase is None else None
    assert summary is None or summary["slices"] == 1


# ---------------------------------------------------------------------- class 2: NaN and Inf
def volume_with_nonfinite(path: Path, bad_slices: list[int], seed: int = 0) -> np.ndarray:
    """A float32 NIfTI (24 x 20 x 6) with one NaN, +Inf or -Inf voxel at a random place in each bad slice."""
    rng = np.random.default_rng(seed)
    volume = (rng.random((24, 20, 6)) * 900 + 50).astype(np.float32)
    for k, value in zip(bad_slices, [np.nan, np.inf, -np.inf] * len(bad_slices)):
        volume[rng.integers(24), rng.integers(20), k] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), path)
    return volume


@pytest.mark.parametrize("bad_slices", [[1, 2, 4], [0, 1, 2, 3, 4, 5]])
def test_ingest_drops_nonfinite_slices_naming_them(tmp_path, bad_slices):
    volume_with_nonfinite(tmp_path / "in" / "P1" / "nan.nii.gz", bad_slices)
    good_nifti(tmp_path / "in" / "P2" / "good.nii.gz")
    summary = ingest("local", tmp_path / "in", tmp_path / "store")
    assert summary["nonfinite_slices_dropped"] == len(bad_slices)
    index = pd.read_csv(tmp_path / "store" / "index.csv", dtype={"series_key": str})
    kept = index[index["path"].str.endswith("nan.nii.gz")]
    assert len(kept) == 6 - len(bad_slices)
    assert np.isfinite(index[["min", "max", "mean", "std"]].to_numpy()).all()
    for key in index["series_key"].unique():
        assert np.isfinite(np.load(tmp_path / "store" / "slices" / f"{key}.npy")).all()
    rejected = pd.read_csv(tmp_path / "store" / "rejected.csv")
    assert len(rejected) == 1 and rejected["path"].iloc[0].endswith("nan.nii.gz")
    reason = rejected["reason"].iloc[0]
    assert f"{len(bad_slices)} slice(s) with NaN or infinite values dropped" in reason
    assert ", ".join(map(str, bad_slices)) in reason


def test_split_refuses_a_nan_or_nonpositive_norm():
    from mrsr.data.split import make_split

    index = pd.DataFrame({"series_key": ["a", "b", "c"], "patient_id": ["p", "q", "r"], "series_uid": ["1", "2", "3"],
                          "series_description": ["", "", ""], "slice_id": ["a:0", "b:0", "c:0"],
                          "max": [1.0, np.nan, 5.0]})
    with pytest.raises(ValueError, match=r"not a positive finite number: \['b'\]"):
        make_split(index, "series", 0, 1, 1)
    index.loc[1, "max"] = np.inf
    with pytest.raises(ValueError, match=r"\['b'\]"):
        make_split(index, "series", 0, 1, 1)


def test_evaluation_never_averages_nan(tmp_path, monkeypatch):
    """A store written before NaN slices were dropped, a model emitting NaN, a NaN per-image row:
    each stops with the slice named, never a mean "over 64 slices" with NaN rows in it."""
    import torch

    from mrsr.data.split import make_split
    from mrsr.evaluate import evaluate, summarize
    from mrsr.models import build_model

    good_nifti(tmp_path / "in" / "P1" / "a.nii.gz", np.float32)
    good_nifti(tmp_path / "in" / "P2" / "b.nii.gz", np.float32)
    store = tmp_path / "store"
    ingest("local", tmp_path / "in", store)
    split = make_split(pd.read_csv(store / "index.csv", dtype={"series_key": str, "patient_id": str}), "series", 0, 1, 1)
    bicubic = build_model("bicubic", 2)
    frame, _ = evaluate(bicubic, store, split, 2, 2, 0.05)
    assert np.isfinite(frame[["psnr", "ssim"]].to_numpy()).all()

    test_key = split.loc[split["split"] == "test", "series_key"].iloc[0]
    stale = np.load(store / "slices" / f"{test_key}.npy").astype(np.float32)
    stale[1, 3, 3] = np.nan  # as an older ingest stored it
    np.save(store / "slices" / f"{test_key}.npy", stale)
    with pytest.raises(ValueError, match=rf"test slice {test_key}:0001 holds NaN"):
        evaluate(bicubic, store, split, 2, 2, 0.05)

    stale[1, 3, 3] = 1.0
    np.save(store / "slices" / f"{test_key}.npy", stale)
    monkeypatch.setattr(type(bicubic), "forward", lambda self, x: torch.full_like(
        torch.nn.functional.interpolate(x, scale_factor=2), float("nan")))
    with pytest.raises(ValueError, match="output for test slice .* holds NaN"):
        evaluate(bicubic, store, split, 2, 2, 0.05)

    rows = frame.assign(method="bicubic", strategy="", scale=2)
    rows.loc[rows.index[1], "psnr"] = np.nan
    rows.to_csv(tmp_path / "per_image.csv", index=False)
    with pytest.raises(ValueError, match=r"per_image.csv: 1 of \d+ slices have no PSNR/SSIM"):
        summarize([tmp_path / "per_image.csv"])


# ------------------------------------------------------ class 5: index.csv means a complete store
def test_failed_ingest_never_leaves_an_index(tmp_path, monkeypatch):
    good_nifti(tmp_path / "in" / "P1" / "a.nii.gz")
    store = tmp_path / "store"
    ingest("local", tmp_path / "in", store)
    assert (store / "index.csv").exists()

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.dcm").write_text("not an image")
    with pytest.raises(ValueError, match="no usable image slices.*no index.csv written"):
        ingest("local", tmp_path / "empty", store)  # the earlier index.csv must not survive either
    assert not (store / "index.csv").exists()
    assert "not a DICOM file" in (store / "rejected.csv").read_text()

    def crash(*args, **kwargs):
        raise OSError("disk vanished")

    (tmp_path / "in" / "x.dcm").write_text("not an image")
    monkeypatch.setattr("mrsr.data.dicom.ingest_dicom_files", crash)
    with pytest.raises(OSError, match="disk vanished"):
        ingest("local", tmp_path / "in", store)
    assert not (store / "index.csv").exists() and (store / "ingest.json").exists()


# -------------------------------------------------- class 3: an unreadable folder is reported
@pytest.fixture()
def restore_modes(tmp_path):
    yield
    for p in tmp_path.rglob("*"):  # pytest must be able to delete it afterwards
        if p.is_dir():
            p.chmod(0o755)


def test_unreadable_subfolder_is_a_rejected_row(tmp_path, monkeypatch, restore_modes):
    good_nifti(tmp_path / "in" / "P1" / "a.nii.gz")
    good_nifti(tmp_path / "in" / "locked" / "b.nii.gz")
    make_unreadable(tmp_path / "in" / "locked", monkeypatch)
    summary = ingest("local", tmp_path / "in", tmp_path / "store")
    assert summary["series"] == 1 and summary["files_rejected"] == 1
    rejected = pd.read_csv(tmp_path / "store" / "rejected.csv")
    assert rejected["path"].tolist() == [str(tmp_path / "in" / "locked")]
    assert "unreadable folder, its files were not read: PermissionError" in rejected["reason"].iloc[0]
