"""Shipped networks (:mod:`mrsr.zoo`): installed with the package, checksummed, listed, carded, verified.

- ``mrsr upscale --model fsrcnn-x2`` (and ``--scale N`` alone, which runs the default the manifest
  records) works on the sample's NIfTI and on a DICOM folder with nothing but the installed package.
- Unknown names and altered files are refused in one line, before any weights are loaded.
- The manifest's and the model cards' figures are the sidecars'; every shipped network beats bicubic,
  and (slow) ``mrsr models --verify --recompute`` computes every card's test figures again.
- ``mrsr models --verify`` holds for the shipped files and catches a changed recipe; the retraining
  command of the cards runs (slow).

The slow tests evaluate every shipped network on the sample, and run a Snakemake training job of the
paper profile cut to two steps. Shipping (``--add``) and its failure modes: tests/test_zoo_trust.py.
"""

from __future__ import annotations

import fnmatch
import json
import subprocess
import sys
import tomllib

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
import yaml
from pydicom.uid import generate_uid

from dicom_fixtures import mr_dataset, save
from workflow_fixtures import copy_workflow, run
from mrsr import zoo
from mrsr.cli import main
from mrsr.config import file_sha256, load_config
from mrsr.zoo.cards import model_cards, retrain_command
from mrsr.zoo.checks import recipe_mismatches
from zoo_fixtures import SAMPLE_SCAN, small_scan, zoo_copy  # noqa: F401  (fixtures)

MANIFEST = zoo.read_manifest()
DEFAULTS = {scale: chosen["name"] for scale, chosen in MANIFEST.defaults.items()}


def mrsr(*args) -> int:
    return main([str(a) for a in args])


def test_fsrcnn_x2_ships_inside_the_package_small_and_committed(root):
    assert "fsrcnn-x2" in MANIFEST.models
    files = [ref.file for e in MANIFEST.models.values() for ref in (e.weights, e.sidecar)]
    assert sum((zoo.ZOO_DIR / f).stat().st_size for f in files) < 20e6
    # pip install copies them: pyproject's package-data for mrsr.zoo matches every file and the manifest.
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["mrsr.zoo"]
    assert all(any(fnmatch.fnmatch(f, g) for g in globs) for f in [*files, zoo.MANIFEST])
    # a fresh clone has them: git tracks every one (none ignored, none forgotten).
    if (root / ".git").exists():
        listed = subprocess.run(["git", "ls-files", "src/mrsr/zoo"], cwd=root, capture_output=True, text=True).stdout
        assert {f"src/mrsr/zoo/{f}" for f in [*files, zoo.MANIFEST]} <= set(listed.split())
    assert not list(zoo.ZOO_DIR.glob("*.pt*")) and not list(zoo.ZOO_DIR.glob("*.pkl"))


def test_the_zoo_package_is_small_modules(root):
    sizes = {p.name: len(p.read_text().splitlines()) for p in (root / "src/mrsr/zoo").glob("*.py")}
    assert {"manifest.py", "shipping.py", "cards.py", "cli.py"} <= set(sizes)
    assert max(sizes.values()) <= 250, sizes


def test_upscale_a_sample_nifti_with_a_shipped_name(root, tmp_path):
    out = tmp_path / "sr"
    assert mrsr("upscale", "--model", "fsrcnn-x2", "--out", out, root / SAMPLE_SCAN) == 0
    written = nib.load(out / "T1post_pre-progression_x2.nii.gz")
    source = nib.load(root / SAMPLE_SCAN)
    assert written.shape == (2 * source.shape[0], 2 * source.shape[1], source.shape[2])
    data = np.asarray(written.dataobj)
    assert np.isfinite(data).all() and data.max() > 0


def test_upscale_a_dicom_folder_with_a_shipped_name(tmp_path):
    rng = np.random.default_rng(0)
    series = generate_uid()
    base = (rng.random((48, 40)) * 800 + 200).astype(np.uint16)
    for k in range(3):
        ds = mr_dataset(base + 10 * k, series_uid=series, instance=k + 1, position=(0.0, 0.0, 3.0 * k))
        save(ds, tmp_path / "in" / f"IM{k}.dcm")
    assert mrsr("upscale", "--model", "fsrcnn-x2", "--out", tmp_path / "out", tmp_path / "in") == 0
    outs = sorted((tmp_path / "out").rglob("*.dcm"))
    assert len(outs) == 3
    first = pydicom.dcmread(outs[0])
    assert (first.Rows, first.Columns) == (96, 80)
    assert "fsrcnn-x2" in first.DerivationDescription


@pytest.mark.parametrize("scale", sorted(DEFAULTS))
def test_scale_alone_runs_the_default_network_the_manifest_records(root, small_scan, tmp_path, scale):
    default = json.loads((root / "src/mrsr/zoo/manifest.json").read_text())["defaults"][str(scale)]["name"]
    assert DEFAULTS[scale] == default and MANIFEST.models[default].scale == scale
    assert mrsr("upscale", "--scale", scale, "--out", tmp_path / "a", small_scan) == 0
    assert mrsr("upscale", "--model", default, "--out", tmp_path / "b", small_scan) == 0
    name = f"small_x{scale}.nii.gz"
    np.testing.assert_array_equal(nib.load(tmp_path / "a" / name).get_fdata(), nib.load(tmp_path / "b" / name).get_fdata())


def test_weights_paths_still_work_and_their_scale_is_checked(small_scan, tmp_path):
    weights = zoo.ZOO_DIR / MANIFEST.models["fsrcnn-x2"].weights.file
    assert mrsr("upscale", "--model", weights, "--out", tmp_path / "a", small_scan) == 0
    assert mrsr("upscale", "--model", weights, "--scale", 3, "--out", tmp_path / "b", small_scan) == 2


@pytest.mark.parametrize("args, words", [
    (["--model", "nosuch-x2"], ["--model nosuch-x2", "shipped:", "fsrcnn-x2"]),
    ([], ["--model", "--scale"]),
    (["--scale", "7"], ["--scale 7", "no shipped network at x7"]),
])
def test_bad_model_choices_are_one_line_exit_2(small_scan, tmp_path, capsys, args, words):
    assert mrsr("upscale", *args, "--out", tmp_path / "out", small_scan) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and all(w in err for w in words), err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["weights", "sidecar"])
def test_a_shipped_file_that_fails_its_checksum_is_never_loaded(root, zoo_copy, small_scan, tmp_path, capsys,
                                                                 monkeypatch, kind):
    path = zoo_copy / getattr(MANIFEST.models["fsrcnn-x2"], kind).file
    data = bytearray(path.read_bytes())
    data[-2] ^= 1  # one bit: a weight (or a figure) changed, the file still parses
    path.write_bytes(bytes(data))

    def never(*args, **kwargs):
        raise AssertionError("load_model called on a file that failed its checksum")

    monkeypatch.setattr("mrsr.upscale.load_model", never)
    assert mrsr("upscale", "--model", "fsrcnn-x2", "--out", tmp_path / "out", small_scan) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and path.name in err and "SHA-256" in err and "refused" in err, err
    assert not (tmp_path / "out").exists()
    assert mrsr("models", "--verify", "--config", root / "config/paper.yaml") == 2


def test_models_lists_every_network_with_its_figures_and_the_defaults(capsys):
    assert mrsr("models") == 0
    out = capsys.readouterr().out
    for name, entry in MANIFEST.models.items():
        row = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert f"x{entry.scale}" in row and f"{entry.parameters:,}" in row
        assert f"{entry.test['psnr']:.2f}" in row and f"{entry.test['gain_db']:+.2f}" in row
        assert f"{entry.cpu['ms_per_slice']:.1f}" in row
        assert ("yes (x" in row) == (DEFAULTS[entry.scale] == name)
    assert all(e.cpu["cpu"] in out for e in MANIFEST.models.values())


def test_model_cards_are_the_sidecars_figures(root):
    text = (root / "docs/model-zoo.md").read_text()
    assert text == model_cards(), "docs/model-zoo.md is stale: mrsr models --cards docs/model-zoo.md"
    for name in MANIFEST.models:
        side = zoo.read_shipped_sidecar(name)
        card = text.split(f"## {name}")[1].split("\n## ")[0]
        for figure in (f"PSNR {side['test']['psnr']:.2f} dB", f"gain {side['test']['gain_db']:+.2f} dB",
                       f"{side['train']['epochs']} epochs", side["data"]["licence"], retrain_command(side)):
            assert figure in card, (name, figure)


def test_every_shipped_network_beats_bicubic_and_its_figures_agree(root):
    """Each card's test figures are those of an independent evaluation of its weights: `mrsr evaluate`
    of the shipped file on the same test split, committed with the CPU reference run
    (docs/reference/cpu/.../shipped/NAME.csv, scripts/reference-cpu.sh), slice by slice; and the card
    names the weights it was evaluated with."""
    shipped = root / "docs/reference/cpu/results/metrics/per_image/shipped"
    for name, entry in MANIFEST.models.items():
        side = zoo.read_shipped_sidecar(name)
        assert entry.evaluation.weights_sha256 == entry.weights.sha256 == file_sha256(zoo.ZOO_DIR / entry.weights.file)
        evaluated = pd.read_csv(shipped / f"{name}.csv")
        t = entry.test
        assert len(evaluated) == t["n_slices"] and set(evaluated["patient_id"]) == set(t["test_patients"]), name
        assert t["psnr"] == pytest.approx(evaluated["psnr"].mean(), abs=1e-6), name
        assert t["ssim"] == pytest.approx(evaluated["ssim"].mean(), abs=1e-8), name
        assert t["psnr"] > t["bicubic_psnr"] and t["gain_db"] == pytest.approx(t["psnr"] - t["bicubic_psnr"]), name
        assert side["profile"] in ("paper", "paper-cpu") and side["data"]["source"] == "sample"
        assert "config" not in side and len(json.dumps(side)) < 20_000  # small: no whole config, no history


def test_verify_passes_and_catches_a_changed_recipe(root, tmp_path, capsys):
    """Each shipped network against its own profile's file (paper; paper-cpu for the reference's
    proposed net) passes; an edited recipe is named."""
    assert mrsr("models", "--verify") == 0
    paper = yaml.safe_load((root / "config/paper.yaml").read_text())
    for exp in paper["experiments"]:
        if exp["model"] == "fsrcnn":
            exp["train"]["lr"] = 0.5
    (tmp_path / "paper.yaml").write_text(yaml.safe_dump(paper))
    capsys.readouterr()
    assert mrsr("models", "--verify", "--config", tmp_path / "paper.yaml") == 2
    out = capsys.readouterr().out
    assert "fsrcnn-x2" in out and "train.lr: 0.002 shipped, 0.5 in the profile" in out


# --- recomputed: every card's figures from its weights, on the sample ------------------------------


@pytest.mark.slow
def test_verify_recompute_reproduces_every_shipped_card(root, capsys):
    """``mrsr models --verify --recompute`` evaluates every shipped network (and bicubic) on the
    sample's test split each card records: every test PSNR within 0.01 dB of its card."""
    assert mrsr("models", "--verify", "--recompute", "--sample", root / "data/btp-sample") == 0
    out = capsys.readouterr().out
    for name, card in MANIFEST.models.items():
        line = next(line for line in out.splitlines() if line.startswith(f"note: {name}: recomputed"))
        recomputed = float(line.split("recomputed test PSNR ")[1].split(" dB")[0])
        assert abs(recomputed - card.test["psnr"]) <= 0.01, (name, recomputed, card.test["psnr"])
    assert f"verified {len(MANIFEST.models)} shipped networks (test figures recomputed)" in out


# --- retraining through the workflow -------------------------------------------------------------


@pytest.mark.slow
def test_the_cards_retraining_command_trains_with_the_profiles_recipe(root, tmp_path):
    """The card's command for a light model, on a copy of config/paper.yaml cut to one epoch of two steps."""
    paper = yaml.safe_load((root / "config/paper.yaml").read_text())
    paper["train"].update(epochs=1, steps_per_epoch=2, seeds=[0], threads=1)
    work = tmp_path / "repo"
    copy_workflow(root, work, yaml.safe_load((root / "config.yaml").read_text()))
    (work / "config").mkdir()
    (work / "config/paper.yaml").write_text(yaml.safe_dump(paper))
    side = {"profile": "paper", "seed": 0, "job": "espcn_x2"}
    command = retrain_command(side).split()
    assert command[:2] == ["snakemake", "--cores"]
    result = run([sys.executable, "-m", *command], work, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    trained = json.loads((work / "models/paper/seed0/espcn_x2.json").read_text())
    profile = load_config(work / "config/paper.yaml")
    shipped_like = {"job": "espcn_x2", "seed": 0, "options": trained["options"], "train": trained["train"]}
    assert recipe_mismatches(shipped_like, profile) == []
    assert trained["train"]["lr"] == 0.002 and trained["train"]["optimizer"] == "adam"
    assert trained["train"]["epochs"] == 1 and trained["recipe"]["steps_per_epoch"] == 2
