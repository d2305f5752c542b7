"""Fixtures of the zoo tests: a small scan to upscale, and a copy of the shipped zoo to alter."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mrsr import zoo

SAMPLE_SCAN = Path("data/btp-sample/PGBM-002/T1post_pre-progression.nii.gz")


@pytest.fixture()
def small_scan(root, tmp_path) -> Path:
    """Three 64x64 slices of the sample's PGBM-002 scan (a NIfTI with its header), for quick runs."""
    image = nib.load(root / SAMPLE_SCAN)
    data = np.asarray(image.dataobj)[96:160, 96:160, 8:11]
    path = tmp_path / "small.nii.gz"
    nib.save(nib.Nifti1Image(data, image.affine, image.header), path)
    return path


@pytest.fixture()
def zoo_copy(tmp_path, monkeypatch) -> Path:
    """A copy of the shipped zoo that the commands read instead of the package's (to alter it)."""
    folder = tmp_path / "zoo"
    shutil.copytree(zoo.ZOO_DIR, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    monkeypatch.setattr(zoo, "ZOO_DIR", folder)
    return folder
