"""Hostile inputs to ``mrsr upscale``: lying headers, non-finite voxels, mixed-up weights, kills.

Every input is generated here. The contract: a bad input is skipped with its reason (exit 2) while
the others are written; no output is silently wrong (non-finite, outside the input's value range,
labelled with another scale); an interrupted run leaves nothing that looks complete.
"""

from __future__ import annotations

import os
import stat
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch

from dicom_fixtures import mr_dataset, new_uid, save
from hostile_fixtures import cut_dicom, lying_dicom, lying_nifti
from mrsr.cli import main
from mrsr.weights import save_weights
from upscale_fixtures import TINY, tiny_model

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


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


# ---------------------------------------------------------------------- class 2: NaN and Inf
@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_nonfinite_nifti_is_skipped_not_written_as_nan(tmp_path, weights, capsys, value):
    rng = np.random.default_rng(1)
    volume = rng.random((12, 10, 3)).astype(np.float32) * 100
    volume[rng.integers(12), rng.integers(10), 1] = value
    src = nifti(tmp_path / "inf.nii.gz", volume)
    assert upscale(weights, tmp_path / "out", src) == 2
    assert "slice 1 holds NaN or infinite values" in capsys.readouterr().err
    assert not list((tmp_path / "out").glob("*.nii*"))


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_output_is_clipped_to_the_input_range(tmp_path, weights, dtype):
    """A step edge: bicubic-like upsampling overshoots below 0 and above the maximum; the stored
    output stays within the input volume's [min, max]."""
    volume = np.zeros((16, 16, 2), dtype)
    volume[4:12, 4:12] = 1000
    volume[6:10, 6:10, 1] = 200
    with torch.no_grad():
        raw = tiny_model()(torch.from_numpy(volume[..., 0].astype(np.float32) / 1000)[None, None])[0, 0].numpy() * 1000
    assert raw.min() < -1 and raw.max() > 1001  # the model does overshoot: the clip below is needed
    src = nifti(tmp_path / "step.nii", volume)
    assert upscale(weights, tmp_path / "out", src) == 0
    out = np.asarray(nib.load(tmp_path / "out" / "step_x2.nii").dataobj)
    assert out.dtype == dtype and out.min() >= 0 and out.max() <= 1000


def test_dicom_output_is_clipped_to_the_series_range_and_slope_zero_is_skipped(tmp_path, weights, capsys):
    uid = new_uid()
    step = np.full((16, 16), 100, np.int16)
    step[4:12, 4:12] = 2000
    for i in range(2):
        save(mr_dataset(step, series_uid=uid, position=(0, 0, 2.0 * i), instance=i + 1, slope=1.0, intercept=-100.0),
             tmp_path / "in" / f"{i}.dcm")
    zero = save(mr_dataset(step, series_uid=new_uid(), slope=0.0), tmp_path / "zero" / "z.dcm")
    assert upscale(weights, tmp_path / "out", tmp_path / "in", zero) == 2
    assert f"skipped {zero}: Rescale Slope 0.0" in capsys.readouterr().err
    for f in sorted((tmp_path / "out").rglob("*.dcm")):
        values = pydicom.dcmread(f).pixel_array.astype(float) - 100  # physical = stored + intercept
        assert values.min() >= 0 and values.max() <= 1900, f


def test_nonfinite_model_output_is_never_written(tmp_path, capsys):
    model = tiny_model()
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    broken = tmp_path / "models" / "broken.safetensors"
    save_weights(broken, model, {"model": "proposed", "scale": 2, "strategy": "multi", "options": TINY})
    src = nifti(tmp_path / "a.nii", np.random.default_rng(2).random((12, 10, 2)).astype(np.float32))
    assert upscale(broken, tmp_path / "out", src, *dicom_series(tmp_path / "dcm", n=1)) == 2
    err = capsys.readouterr().err
    assert err.count("holds NaN or infinite values (diverged weights?)") == 2
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]


# ------------------------------------------------------------ class 5: atomicity and leftovers
KILL_ON_SECOND_WRITE = """
import os, signal, sys
import pydicom
real, calls = pydicom.dcmwrite, []
def dcmwrite(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # killed mid-series, after one file is complete
    return real(*args, **kwargs)
pydicom.dcmwrite = dcmwrite
from mrsr.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_killed_series_leaves_nothing_that_looks_complete_and_is_cleaned(tmp_path, weights, capsys):
    import signal
    import subprocess
    import sys

    dicom_series(tmp_path / "in" / "study", n=3)
    out = tmp_path / "out"
    killed = subprocess.run([sys.executable, "-c", KILL_ON_SECOND_WRITE, "upscale", "--model", str(weights),
                             "--out", str(out), str(tmp_path / "in")], capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left = list(out.iterdir())
    assert left and all(p.name.startswith(".") and p.name.endswith(".tmp") for p in left), left  # hidden only
    assert upscale(weights, out, tmp_path / "in") == 0
    assert f"removed {left[0]}: left half-written by a killed run" in capsys.readouterr().err
    (series,) = out.iterdir()
    assert not series.name.startswith(".") and sorted(p.name for p in series.iterdir()) == ["0.dcm", "1.dcm", "2.dcm"]


def test_second_run_into_the_same_out_refuses_unless_overwrite(tmp_path, weights, capsys):
    src = nifti(tmp_path / "a.nii", np.random.default_rng(3).random((12, 10, 2)).astype(np.float32))
    dicom_series(tmp_path / "in", n=2)
    out = tmp_path / "out"
    assert upscale(weights, out, src, tmp_path / "in") == 0
    first = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert upscale(weights, out, src, tmp_path / "in") == 2
    err = capsys.readouterr().err
    assert err.count("exists (an earlier output?): not replaced; use --overwrite") == 2
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == first
    assert upscale(weights, out, src, tmp_path / "in", extra=("--overwrite",)) == 0
    second = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert second.keys() == first.keys() and all(second[p] != first[p] for p in first)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_outputs_honour_the_umask(tmp_path, weights, umask):
    src = nifti(tmp_path / "a.nii", np.random.default_rng(3).random((12, 10, 2)).astype(np.float32))
    dicom_series(tmp_path / "in", n=1)
    old = os.umask(umask)
    try:
        assert upscale(weights, tmp_path / "out", src, tmp_path / "in") == 0
    finally:
        os.umask(old)
    made = list((tmp_path / "out").rglob("*"))
    assert len(made) == 3
    for p in made:
        assert stat.S_IMODE(p.stat().st_mode) == (0o777 if p.is_dir() else 0o666) & ~umask, p


# -------------------------------------------------------------------- class 4: provenance
@pytest.mark.parametrize("key,value", [("scale", 4), ("scale", 3), ("model", "srcnn"), ("strategy", "single")])
def test_sidecar_disagreeing_with_the_weights_is_refused(tmp_path, weights, capsys, key, value):
    import json

    from mrsr.weights import WeightsError, load_model

    side = weights.with_suffix(".json")
    meta = json.loads(side.read_text())
    side.write_text(json.dumps({**meta, key: value}))
    with pytest.raises(WeightsError) as exc:
        load_model(weights)
    assert "\n" not in str(exc.value) and f"saved as {key} {str(meta[key])!r}" in str(exc.value)
    src = nifti(tmp_path / "a.nii", np.random.default_rng(3).random((12, 10, 2)).astype(np.float32))
    assert upscale(weights, tmp_path / "out", src) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "mixed up" in err
    assert not (tmp_path / "out").exists()


def test_weights_without_full_provenance_and_shape_mismatches(tmp_path):
    import json

    from safetensors.torch import save_file

    from mrsr.weights import WeightsError, load_model

    model = tiny_model()
    old = tmp_path / "old.safetensors"  # written before the strategy was in the header: still loads
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(old), metadata={"model": "proposed", "scale": "2"})
    old.with_suffix(".json").write_text(json.dumps({"model": "proposed", "scale": 2, "strategy": "multi", "options": TINY}))
    assert load_model(old)[0].scale == 2
    old.with_suffix(".json").write_text(json.dumps({"model": "proposed", "scale": 2, "strategy": "multi",
                                                    "options": {**TINY, "features": 16}}))
    with pytest.raises(WeightsError, match="do not match model 'proposed'") as exc:
        load_model(old)
    assert "\n" not in str(exc.value)


def test_upscaler_refuses_output_of_another_scale():
    from mrsr.inference import Upscaler

    model = tiny_model(2)
    upscaler = Upscaler(model)
    upscaler.scale = 4  # as if labelled x4 while the weights compute x2
    with pytest.raises(RuntimeError, match="not x4"):
        upscaler(np.zeros((8, 8), np.float32))


# -------------------------------------------------- class 3: an unreadable folder is reported
def test_unreadable_subfolder_is_skipped_with_its_reason(tmp_path, weights, capsys, monkeypatch):
    from hostile_fixtures import make_unreadable

    dicom_series(tmp_path / "in" / "a", n=1)
    dicom_series(tmp_path / "in" / "locked", n=1)
    make_unreadable(tmp_path / "in" / "locked", monkeypatch)
    try:
        assert upscale(weights, tmp_path / "out", tmp_path / "in") == 2
    finally:
        (tmp_path / "in" / "locked").chmod(0o755)
    err = capsys.readouterr().err
    assert f"skipped {tmp_path / 'in' / 'locked'}: unreadable folder, its files were not read: PermissionError" in err
    assert len(list((tmp_path / "out").rglob("*.dcm"))) == 1
