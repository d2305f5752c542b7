"""Hostile inputs to ``mrsr upscale``: lying headers, non-finite voxels, mixed-up weights, kills.

Every input is generated here. The contract: a bad input is skipped with its reason (exit 2) while
the others are written; no output is silently wrong (non-finite, outside the input's value range,
labelled with another scale); an interrupted run leaves nothing that looks complete.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from dicom_fixtures import mr_dataset, new_uid, save
from mrsr.cli import main
from mrsr.models import build_model
from mrsr.weights import save_weights
from test_hostile_ingest import cut_dicom, lying_dicom, lying_nifti

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
TINY = {"features": 8, "units": 2, "image_deconv_init": "bicubic"}


def tiny_model(scale: int = 2):
    torch.manual_seed(0)
    return build_model("proposed", scale, "multi", **TINY).eval()


@pytest.fixture()
def weights(tmp_path) -> Path:
    path = tmp_path / "models" / "proposed_multi_x2.safetensors"
    save_weights(path, tiny_model(), {"model": "proposed", "scale": 2, "strategy": "multi", "options": TINY})
    return path


def nifti(path: Path, volume: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), path)
    return path


def dicom_series(folder: Path, n: int = 2, size: int = 16) -> list[Path]:
    uid, paths = new_uid(), []
    for i in range(n):
        img = (np.add.outer(np.arange(size), 3 * np.arange(size)) % 61 + 20 * (i + 1)).astype(np.uint16)
        paths.append(save(mr_dataset(img, series_uid=uid, position=(0, 0, 2.0 * i), instance=i + 1), folder / f"{i}.dcm"))
    return paths


def upscale(weights: Path, out: Path, *inputs: Path, extra: tuple[str, ...] = ()) -> int:
    return main(["upscale", "--model", str(weights), "--out", str(out), *extra, *map(str, inputs)])


# ------------------------------------------------------------------------- class 1: sizes first
def test_lying_headers_are_skipped_before_any_allocation(tmp_path, weights, capsys):
    bad = tmp_path / "bad"
    files = [lying_dicom(bad / "wide.dcm", 30000, 30000), lying_dicom(bad / "short.dcm", 4000, 4000, 20),
             cut_dicom(bad / "cut.dcm"), lying_nifti(bad / "wide.nii", (30000, 30000, 1)),
             lying_nifti(bad / "short.nii.gz", (4000, 4000, 30))]
    good = nifti(tmp_path / "good.nii", np.random.default_rng(0).random((12, 10, 2)).astype(np.float32))
    tracemalloc.start()
    try:
        rc = upscale(weights, tmp_path / "out", *files, good)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    err = capsys.readouterr().err
    assert rc == 2 and (tmp_path / "out" / "good_x2.nii").exists()
    for f in files:
        assert f"skipped {f}: " in err and "header declares" in err.split(f"skipped {f}: ")[1].splitlines()[0], f
    assert peak < 100 * 2**20, f"peak {peak / 2**20:.0f} MB"
