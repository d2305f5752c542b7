"""``mrsr upscale`` never mislabels, overwrites or re-reads what it must not, and its derived DICOM
series are ones a PACS accepts: what a hostile or hurried user would try, with real ``mrsr``
subprocesses where processes race or are interrupted.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

import mrsr
from dicom_fixtures import mr_dataset, new_uid, save
from mrsr.cli import main
from zoo_fixtures import SAMPLE_SCAN, small_scan  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]
SRC = Path(mrsr.__file__).resolve().parents[1]  # the mrsr under test, for the subprocesses

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def mrsr_main(*args) -> int:
    return main([str(a) for a in args])


def command(*args) -> list[str]:
    return [sys.executable, "-m", "mrsr.cli", *map(str, args)]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SRC)}


def series(folder: Path, n: int = 3, number: int = 5, description: str = "T1good") -> list[Path]:
    """A DICOM series of ``n`` 32x24 slices, SeriesNumber ``number``."""
    uid, rng, paths = new_uid(), np.random.default_rng(number), []
    for k in range(n):
        ds = mr_dataset((rng.random((32, 24)) * 800 + 100).astype(np.uint16), series_uid=uid, instance=k + 1,
                        position=(0.0, 0.0, 3.0 * k), description=description)
        ds.SeriesNumber = number
        paths.append(save(ds, folder / f"IM{k}.dcm"))
    return paths


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- shipped names and local paths -------------------------------------------------------------------


def test_a_local_folder_named_like_a_shipped_network_never_shadows_it(tmp_path, small_scan, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "espcn-x2").mkdir()  # e.g. a previous run's --out espcn-x2
    assert mrsr_main("upscale", "--model", "espcn-x2", "--out", "sr", small_scan) == 0
    assert "espcn-x2" in str(nib.load(tmp_path / "sr/small_x2.nii.gz").header["descrip"])
    capsys.readouterr()
    assert mrsr_main("upscale", "--model", "./espcn-x2", "--out", "sr2", small_scan) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tmp_path / "espcn-x2") in err and "--model espcn-x2" in err, err


# --- outputs are claimed when written --------------------------------------------------------------------


def test_two_concurrent_upscales_into_one_out_never_share_an_output(tmp_path):
    """fsrcnn-x2 and espcn-x2 on the same scan into one --out at once: one writes it, the other says
    it did not, and the file holds what the writer's summary says."""
    runs = {name: subprocess.Popen(command("upscale", "--model", name, "--out", tmp_path / "out", ROOT / SAMPLE_SCAN),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
            for name in ("fsrcnn-x2", "espcn-x2")}
    results = {name: (proc.communicate(timeout=600), proc.returncode) for name, proc in runs.items()}
    output = tmp_path / "out" / "T1post_pre-progression_x2.nii.gz"
    writers = [name for name, ((out, _), _) in results.items() if f"wrote   {output}" in out]
    assert len(writers) == 1, results
    loser = next(name for name in results if name not in writers)
    assert results[writers[0]][1] == 0 and results[loser][1] == 2, results
    assert "wrote 0 file(s)" in results[loser][0][0] and "not replaced" in results[loser][0][1]
    assert writers[0] in str(nib.load(output).header["descrip"])


@pytest.mark.parametrize("kind", ["nifti", "dicom"])
def test_an_output_written_meanwhile_by_another_run_is_not_replaced(tmp_path, small_scan, monkeypatch, capsys, kind):
    """The name is claimed at the rename: a file that appeared after the early check stays as it is."""
    import mrsr.upscale_io as upscale_io

    if kind == "dicom":
        series(tmp_path / "in")
    source = tmp_path / "in" if kind == "dicom" else small_scan
    foreign = tmp_path / "out" / ("5_T1good_x2/IM0.dcm" if kind == "dicom" else "small_x2.nii.gz")
    real = upscale_io.finite_output

    def meanwhile(sr, where):  # another run finishes its output while this one computes
        if not foreign.exists():
            foreign.parent.mkdir(parents=True, exist_ok=True)
            foreign.write_bytes(b"another run's output")
        return real(sr, where)

    monkeypatch.setattr(upscale_io, "finite_output", meanwhile)
    assert mrsr_main("upscale", "--model", "fsrcnn-x2", "--out", tmp_path / "out", source) == 2
    out = capsys.readouterr().out
    assert "wrote 0 file(s)" in out and "  wrote " not in out, out
    assert foreign.read_bytes() == b"another run's output"
    assert sorted(p.name for p in foreign.parent.iterdir()) == [foreign.name]


def test_an_input_folder_named_like_an_output_is_never_replaced(tmp_path, capsys):
    """trap/1_T1good_x2/ holds the user's own series 1 "T1good": its planned output is that folder."""
    series(tmp_path / "trap" / "1_T1good_x2", number=1)
    before = snapshot(tmp_path / "trap")
    mrsr_main("upscale", "--model", "fsrcnn-x2", "--overwrite", "--out", tmp_path / "trap", tmp_path / "trap")
    assert snapshot(tmp_path / "trap") == before
    mrsr_main("upscale", "--model", "fsrcnn-x2", "--overwrite", "--out", tmp_path / "trap",
              tmp_path / "trap" / "1_T1good_x2")
    assert snapshot(tmp_path / "trap") == before
    assert "outputs are never read as inputs" in capsys.readouterr().err


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_out_equal_to_the_input_folder_never_reads_its_own_outputs(tmp_path, small_scan, overwrite):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(small_scan, data / "small.nii.gz")
    series(data / "dicom")
    for _ in range(2):
        mrsr_main("upscale", "--model", "fsrcnn-x2", *overwrite, "--out", data, data)
    names = {p.relative_to(data).as_posix() for p in data.rglob("*") if p.is_file()}
    assert names == {"small.nii.gz", "small_x2.nii.gz", *(f"{d}/IM{k}.dcm" for d in ("dicom", "5_T1good_x2")
                                                           for k in range(3))}, names


# --- modes and interrupts ------------------------------------------------------------------------------


def test_trained_weights_and_checkpoints_honour_the_umask(tmp_path, patches, default_config):
    import json

    from mrsr.config import Job
    from mrsr.train import train

    config = json.loads(json.dumps(default_config))
    config["train"].update(epochs=1, steps_per_epoch=2, batch_size=8, val_slices=1, threads=1)
    config["experiments"] = [{"model": "espcn", "scales": [2]}]
    old = os.umask(0o022)
    try:
        train(Job("espcn", None, 2), patches, tmp_path / "w" / "espcn_x2.safetensors", config, seed=0)
        from mrsr.io import atomic_path
        from safetensors.torch import save_file
        import torch

        with atomic_path(tmp_path / "w" / "x.ckpt.safetensors", suffix=".safetensors") as tmp:
            save_file({"a": torch.zeros(1)}, str(tmp))  # as the trainer writes its checkpoints
    finally:
        os.umask(old)
    for path in (tmp_path / "w").iterdir():
        assert path.stat().st_mode & 0o777 == 0o644, (path, oct(path.stat().st_mode))


def test_ctrl_c_of_upscale_is_one_line_and_leaves_nothing_half_written(tmp_path):
    big = tmp_path / "big.nii.gz"
    volume = np.random.default_rng(0).integers(0, 1000, (256, 256, 400), dtype=np.int16)  # minutes of work
    nib.save(nib.Nifti1Image(volume, np.eye(4)), big)
    proc = subprocess.Popen(command("upscale", "--model", "srcnn-x2", "--threads", 1, "--out", tmp_path / "out", big),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    time.sleep(8)  # past the imports, inside the volume
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip() and "slice" not in line]
    assert lines == [lines[-1]] and "interrupted" in lines[-1] and "Traceback" not in err, err
    assert not [p for p in (tmp_path / "out").rglob("*")], list((tmp_path / "out").rglob("*"))


# --- derived DICOM series a PACS accepts ---------------------------------------------------------------


def test_derived_series_have_their_own_number_and_name_their_network(tmp_path):
    series(tmp_path / "in", number=5)
    assert mrsr_main("upscale", "--model", "fsrcnn-x2", "--out", tmp_path / "out", tmp_path / "in") == 0
    outs = sorted((tmp_path / "out").rglob("*.dcm"))
    assert len(outs) == 3
    for path in outs:
        ds = pydicom.dcmread(path)
        assert ds.SeriesNumber == 2005 != 5  # the documented rule: input number + 1000 x scale
        text = ds.DerivationDescription
        assert "network fsrcnn," in text and "x2" in text and "shipped network fsrcnn-x2" in text, text
        assert "None" not in text
    weights = Path(mrsr.__file__).parent / "zoo" / "espcn-x3.safetensors"
    assert mrsr_main("upscale", "--model", weights, "--out", tmp_path / "out3", tmp_path / "in") == 0
    ds = pydicom.dcmread(next((tmp_path / "out3").rglob("*.dcm")))
    assert ds.SeriesNumber == 3005 and "weights file espcn-x3.safetensors" in ds.DerivationDescription
    # dcm2niix, as a PACS import would, keeps input and output apart: two series of their own numbers
    both = tmp_path / "both"
    shutil.copytree(tmp_path / "in", both / "in")
    shutil.copytree(tmp_path / "out", both / "out")
    exe = shutil.which("dcm2niix") or __import__("dcm2niix").bin
    (tmp_path / "nii").mkdir()
    subprocess.run([exe, "-z", "n", "-b", "n", "-f", "series%s", "-o", tmp_path / "nii", both], check=True,
                   capture_output=True)
    volumes = {p.name: nib.load(p).shape for p in (tmp_path / "nii").glob("*.nii")}
    assert volumes == {"series5.nii": (24, 32, 3), "series2005.nii": (48, 64, 3)} or volumes == {
        "series5.nii": (32, 24, 3), "series2005.nii": (64, 48, 3)}, volumes


def test_readme_and_licence_beside_dicom_are_ignored_by_upscale_and_ingest(tmp_path, capsys):
    folder = tmp_path / "mydicom"
    series(folder / "series")
    notes = {"README.md": "# my scans\n", "LICENSE": "CC BY 4.0\n", "notes.txt": "T1\n", "meta.json": "{}\n"}
    for name, text in notes.items():
        (folder / name).write_text(text)
    assert mrsr_main("upscale", "--model", "fsrcnn-x2", "--out", tmp_path / "out", folder) == 0
    captured = capsys.readouterr()
    for name in notes:
        assert (captured.out + captured.err).count(name) <= 1, (name, captured)
    assert "skipped" not in captured.err
    assert mrsr_main("ingest", "--source", "local", "--input", folder, "--out", tmp_path / "store") == 0
    rejected = (tmp_path / "store" / "rejected.csv")
    assert not rejected.exists() or not any(name in rejected.read_text() for name in notes)
