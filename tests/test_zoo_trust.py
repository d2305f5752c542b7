"""Shipping a network (``mrsr models --add``) as a careless or hostile user would: every card is
bound to the bytes it describes, the zoo changes all at once or not at all, and nothing escapes it.

One tiny ESPCN x2 is trained here (two steps of the quick profile) and evaluated with ``mrsr
evaluate`` into the workflow's folders; the zoo each test alters is a copy of the shipped one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mrsr import zoo
from mrsr.cli import main
from mrsr.config import Job
from zoo_fixtures import small_scan, zoo_copy  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parents[1]
SRC = Path(zoo.__file__).resolve().parents[2]  # the mrsr under test, for the subprocesses
WEIGHTS = Path("models/quick/seed0/espcn_x2.safetensors")
CSV = Path("results/quick/metrics/per_image/seed0/espcn_x2.csv")
BICUBIC = Path("results/quick/metrics/per_image/bicubic_x2.csv")


def mrsr(*args) -> int:
    return main([str(a) for a in args])


def _train(config: dict, npz: Path, out: Path, steps: int) -> None:
    from mrsr.train import train

    config = json.loads(json.dumps(config))
    config["train"].update(epochs=1, steps_per_epoch=steps, batch_size=8, val_slices=1, threads=1)
    config["experiments"] = [{"model": "espcn", "scales": [2]}]
    train(Job("espcn", None, 2), npz, out, config, seed=0)


@pytest.fixture(scope="module")
def workflow_tree(tmp_path_factory, default_config) -> Path:
    """A workflow's folders: trained espcn_x2 weights, and its and bicubic's evaluation CSVs
    (``mrsr evaluate`` on the quick profile's split of the sample); ``stale/`` holds the same
    tree after the weights were trained 5 more steps, the CSVs left as they were."""
    base = tmp_path_factory.mktemp("workflow")
    rng = np.random.default_rng(0)
    hr = rng.random((64, 1, 27, 27)).astype(np.float32)
    npz = base / "x2.npz"
    np.savez(npz, lr=hr[:, :, ::2, ::2][:, :, :14, :14].copy(), hr=hr, val_lr_0=hr[0, 0, ::2, ::2][:14, :14],
             val_hr_0=np.pad(hr[0, 0], ((0, 1), (0, 1))))
    tree = base / "tree"
    _train(default_config, npz, tree / WEIGHTS, steps=2)
    config = ROOT / "config.yaml"
    store, split = base / "store", base / "split.csv"
    assert mrsr("ingest", "--source", "sample", "--input", ROOT / "data/btp-sample", "--out", store) == 0
    assert mrsr("split", "--store", store, "--config", config, "--out", split) == 0
    for extra, out in ((["--method", "espcn", "--weights", tree / WEIGHTS], CSV), (["--method", "bicubic"], BICUBIC)):
        assert mrsr("evaluate", *extra, "--scale", 2, "--store", store, "--split", split, "--config", config,
                    "--out", tree / out) == 0
    stale = base / "stale"
    shutil.copytree(tree, stale)
    _train(default_config, npz, stale / WEIGHTS, steps=7)  # retrained after its CSV was written
    assert zoo_bytes(tree / "models/quick/seed0") != zoo_bytes(stale / "models/quick/seed0")
    return base


def zoo_bytes(folder: Path) -> dict[str, bytes]:
    """Every file of a folder, hidden ones included, by name."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def tree_copy(workflow_tree: Path, tmp_path: Path, which: str = "tree") -> Path:
    shutil.copytree(workflow_tree / which, tmp_path / which)
    return tmp_path / which


def zoo_problems(folder: Path, capsys) -> list[str]:
    """``mrsr models --verify``'s FAILED lines but those of recipes: a network trained here for two
    steps is not its profile's recipe, and says so."""
    capsys.readouterr()
    rc = mrsr("models", "--verify", "--zoo", folder)
    failed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("FAILED")]
    assert (rc == 0) == (not failed)
    return [line for line in failed if "in the profile" not in line and "trained with profile" not in line]


def listed(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())["models"]


# --- a card is bound to its weights ----------------------------------------------------------------


def test_add_ships_the_figures_of_the_weights_it_ships(workflow_tree, tmp_path, zoo_copy, small_scan, capsys):
    tree = tree_copy(workflow_tree, tmp_path)
    assert mrsr("models", "--add", tree / WEIGHTS, "--name", "espcn-quick-x2", "--runs", 2, "--zoo", zoo_copy) == 0
    card = listed(zoo_copy)["espcn-quick-x2"]
    evaluated = pd.read_csv(tree / CSV)  # mrsr evaluate, run independently on the same split
    assert card["test"]["psnr"] == pytest.approx(evaluated["psnr"].mean(), abs=1e-6)
    assert card["test"]["bicubic_psnr"] == pytest.approx(pd.read_csv(tree / BICUBIC)["psnr"].mean(), abs=1e-6)
    assert card["test"]["n_slices"] == len(evaluated)
    shipped = zoo_copy / "espcn-quick-x2.safetensors"
    assert shipped.read_bytes() == (tree / WEIGHTS).read_bytes()
    assert card["weights"]["sha256"] == card["evaluation"]["weights_sha256"] == zoo.manifest.file_sha256(shipped)
    assert zoo_problems(zoo_copy, capsys) == []
    assert mrsr("upscale", "--model", "espcn-quick-x2", "--out", tmp_path / "sr", small_scan) == 0


def test_a_stale_evaluation_csv_is_refused(workflow_tree, tmp_path, zoo_copy, capsys):
    """Weights retrained after their CSV was written: the CSV's figure is not theirs."""
    stale = tree_copy(workflow_tree, tmp_path, "stale")
    before = zoo_bytes(zoo_copy)
    assert mrsr("models", "--add", stale / WEIGHTS, "--per-image", stale / CSV, "--name", "probe-x2",
                "--zoo", zoo_copy) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "espcn_x2.csv" in err and "these weights score" in err, err
    assert zoo_bytes(zoo_copy) == before


def test_the_default_name_never_replaces_a_shipped_network(workflow_tree, tmp_path, zoo_copy, capsys):
    tree = tree_copy(workflow_tree, tmp_path)
    before = zoo_bytes(zoo_copy)
    assert mrsr("models", "--add", tree / WEIGHTS, "--zoo", zoo_copy) == 2  # its default name: espcn-x2
    err = capsys.readouterr().err
    assert "espcn-x2" in err and "--replace" in err
    assert zoo_bytes(zoo_copy) == before
    assert mrsr("models", "--add", tree / WEIGHTS, "--replace", "--runs", 2, "--zoo", zoo_copy) == 0
    manifest = json.loads((zoo_copy / "manifest.json").read_text())
    assert manifest["models"]["espcn-x2"]["weights"]["sha256"] != json.loads(before["manifest.json"])["models"][
        "espcn-x2"]["weights"]["sha256"]
    assert manifest["defaults"] == json.loads(before["manifest.json"])["defaults"]  # --add never moves a default
    assert "replaced espcn-x2" in manifest["changelog"][-1]


# --- the zoo changes all at once -------------------------------------------------------------------


@pytest.mark.parametrize("cut", range(6))
def test_an_add_interrupted_at_any_write_leaves_the_zoo_before_or_after(workflow_tree, tmp_path, zoo_copy,
                                                                       small_scan, monkeypatch, capsys, cut):
    """Ctrl-C at each rename into the zoo folder (weights, sidecar, manifest, and what stages them)."""
    tree = tree_copy(workflow_tree, tmp_path)
    before = zoo_bytes(zoo_copy)
    real, calls = os.replace, []

    def replace(src, dst, *args, **kwargs):
        if Path(dst).parent == zoo_copy:
            calls.append(dst)
            if len(calls) == cut + 1:
                raise KeyboardInterrupt
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    try:
        rc = mrsr("models", "--add", tree / WEIGHTS, "--name", "probe-x2", "--runs", 2, "--zoo", zoo_copy)
    except KeyboardInterrupt:
        rc = "traceback"
    monkeypatch.setattr(os, "replace", real)
    assert rc in (0, 130), rc
    assert zoo_problems(zoo_copy, capsys) == []  # reads (and completes) what was committed
    after = {k: v for k, v in zoo_bytes(zoo_copy).items() if not k.startswith(".")}
    if "probe-x2" in listed(zoo_copy):
        assert set(after) == set(before) | {"probe-x2.safetensors", "probe-x2.json"}
        assert after["probe-x2.safetensors"] == (tree / WEIGHTS).read_bytes()
    else:
        assert after == before
    assert mrsr("upscale", "--model", "fsrcnn-x2", "--scale", 2, "--out", tmp_path / "sr", small_scan) == 0


def test_ctrl_c_during_add_is_one_line_and_leaves_the_zoo_as_it_was(workflow_tree, tmp_path, zoo_copy):
    tree = tree_copy(workflow_tree, tmp_path)
    before = zoo_bytes(zoo_copy)
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    # --runs 100000: the timing alone would take minutes, so the signal surely finds it at work
    proc = subprocess.Popen([sys.executable, "-m", "mrsr.cli", "models", "--add", str(tree / WEIGHTS), "--name",
                             "probe-x2", "--runs", "100000", "--zoo", str(zoo_copy)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    time.sleep(6)  # past the imports: evaluating or timing the weights
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert len(err.strip().splitlines()) == 1 and "interrupted" in err and "Traceback" not in err, err
    assert zoo_bytes(zoo_copy) == before  # no hidden temporary left either


# --- names -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../../../escape-x2", "../escape", "fsrcnn-x2.v2", "FSRCNN-x2", "fsrcnn_x2",
                                  "espcn-x3", "ABSOLUTE/abs-x2", "probe"])
def test_only_documented_names_are_shipped_and_nothing_is_written_outside(workflow_tree, tmp_path, zoo_copy,
                                                                          capsys, name):
    tree = tree_copy(workflow_tree, tmp_path)
    before = zoo_bytes(zoo_copy)
    name = name.replace("ABSOLUTE", str(tmp_path / "elsewhere"))
    assert mrsr("models", "--add", tree / WEIGHTS, "--name", name, "--zoo", zoo_copy) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--name" in err, err
    assert zoo_bytes(zoo_copy) == before
    for suffix in (".json", ".safetensors"):  # where a name used as a path would have written
        target = (zoo_copy / f"{name}{suffix}").resolve()
        assert target.parent == zoo_copy or not target.exists(), target
    assert not [p for p in tmp_path.rglob("*escape*")] and not (tmp_path / "elsewhere").exists()


# --- verify ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["missing", "garbage", "unlisted"])
def test_verify_fails_on_a_missing_unreadable_or_incomplete_manifest(zoo_copy, capsys, damage):
    manifest = zoo_copy / "manifest.json"
    if damage == "missing":
        manifest.unlink()
    elif damage == "garbage":
        manifest.write_bytes(b"\x00{not json")
    else:
        shutil.copyfile(zoo_copy / "espcn-x2.safetensors", zoo_copy / "extra-x2.safetensors")
    assert mrsr("models", "--verify", "--zoo", zoo_copy) == 2
    text = capsys.readouterr()
    assert ("extra-x2.safetensors" if damage == "unlisted" else "manifest.json") in text.out + text.err


def test_verify_works_in_an_installed_copy_without_a_clone(tmp_path):
    """The package alone (as pip installs it: no config/, no data/), run from an unrelated folder."""
    site = tmp_path / "site"
    shutil.copytree(SRC / "mrsr", site / "mrsr", ignore=shutil.ignore_patterns("__pycache__"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run([sys.executable, "-m", "mrsr.cli", "models", "--verify"], cwd=elsewhere, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"verified {len(zoo.read_manifest().models)} shipped networks" in result.stdout and "recipe not checked" in result.stdout


# --- the default per scale ---------------------------------------------------------------------------


def test_the_default_of_a_scale_changes_only_on_purpose(workflow_tree, tmp_path, zoo_copy, small_scan, capsys):
    import nibabel as nib

    tree = tree_copy(workflow_tree, tmp_path)
    assert mrsr("models", "--add", tree / WEIGHTS, "--name", "espcn-quick-x2", "--runs", 2, "--zoo", zoo_copy) == 0
    assert json.loads((zoo_copy / "manifest.json").read_text())["defaults"]["2"]["name"] == "proposed-multi-x2"
    assert mrsr("models", "--default", "espcn-x2", "--zoo", zoo_copy) == 2  # no message: refused
    assert "--message" in capsys.readouterr().err
    assert mrsr("models", "--default", "espcn-x2", "--message", "faster on CPUs", "--zoo", zoo_copy) == 0
    manifest = json.loads((zoo_copy / "manifest.json").read_text())
    assert manifest["defaults"]["2"] == {"name": "espcn-x2", "message": "faster on CPUs"}
    assert "proposed-multi-x2 -> espcn-x2 (faster on CPUs)" in manifest["changelog"][-1]
    assert mrsr("upscale", "--scale", 2, "--out", tmp_path / "a", small_scan) == 0
    assert mrsr("upscale", "--model", "espcn-x2", "--out", tmp_path / "b", small_scan) == 0
    np.testing.assert_array_equal(nib.load(tmp_path / "a/small_x2.nii.gz").get_fdata(),
                                  nib.load(tmp_path / "b/small_x2.nii.gz").get_fdata())
