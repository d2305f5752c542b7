"""Hostile files shared by the ingest and upscale tests: headers that lie about the data behind them,
and a folder that cannot be listed."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np

from dicom_fixtures import mr_dataset, new_uid


def lying_dicom(path: Path, rows: int, cols: int, frames: int | None = None, pixel_bytes: int = 8192) -> Path:
    """A native DICOM whose header declares rows x cols (x frames) over ``pixel_bytes`` of pixel data."""
    side = int(np.sqrt(pixel_bytes // 2))
    ds = mr_dataset(np.ones((side, side), np.uint16), series_uid=new_uid())
    ds.Rows, ds.Columns = rows, cols
    if frames is not None:
        ds.NumberOfFrames = frames
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def cut_dicom(path: Path, rows: int = 2000, cols: int = 2000) -> Path:
    """A native DICOM whose pixel data element *claims* rows x cols x 2 bytes, in a file cut after 8 KB."""
    ds = mr_dataset(np.ones((64, 64), np.uint16), series_uid=new_uid())
    ds.Rows, ds.Columns = rows, cols
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    data = bytearray(path.read_bytes())
    tag = data.rindex(b"\xe0\x7f\x10\x00OW\x00\x00")
    data[tag + 8 : tag + 12] = (rows * cols * 2).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return path


def lying_nifti(path: Path, shape: tuple[int, ...], dtype=np.int16, data_bytes: int = 100) -> Path:
    """A NIfTI whose header declares ``shape`` over ``data_bytes`` of voxel data (gzip when .gz)."""
    header = nib.Nifti1Header()
    header.set_data_dtype(dtype)
    header.set_data_shape(shape)
    header["vox_offset"] = 352
    raw = header.binaryblock + b"\0" * 4 + bytes(range(256)) * (data_bytes // 256) + b"\1" * (data_bytes % 256)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    return path


def make_unreadable(folder: Path, monkeypatch) -> None:
    """chmod 000; where that does not deny access (root), listing it raises PermissionError as it
    would for anyone else (os.walk lists folders with os.scandir)."""
    folder.chmod(0)
    if os.access(folder, os.R_OK):
        real = os.scandir

        def scandir(path=".", *args):
            if Path(path) == folder:
                raise PermissionError(13, "Permission denied", str(folder))
            return real(path, *args)

        monkeypatch.setattr(os, "scandir", scandir)
