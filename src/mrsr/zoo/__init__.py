"""Shipped networks: trained weights installed with the package, so ``mrsr upscale --model NAME`` works
right after set-up, offline.

This folder holds, per shipped network NAME (``fsrcnn-x2``, ...), ``NAME.safetensors`` (the trained
file, byte for byte), ``NAME.json`` (a small sidecar: what was trained, how, on what, and how well)
and one ``manifest.json`` listing every network with the SHA-256 of both files, its parameter count,
its test metrics and its CPU time. Adding a network is data, not code: ``mrsr models --add`` (:func:`ship`)
writes the three from a trained weights file and the evaluation CSVs the workflow wrote for it.

Trust: a shipped file is used only after both of its files match the manifest's SHA-256
(:func:`shipped_weights`); nothing here unpickles (safetensors and JSON only, :mod:`mrsr.weights`).
``mrsr models --verify`` also checks that each sidecar's recipe is still the profile's, so the
retraining command in docs/model-zoo.md (:func:`model_cards`) makes the same network.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from mrsr.config import Job, file_sha256, job_train_settings, load_config, model_options, train_defaults
from mrsr.errors import UsageError, existing_file
from mrsr.io import atomic_path, write_json, write_text

ZOO_DIR = Path(__file__).resolve().parent  # tests point this at a copy (the functions read it at call time)
MANIFEST = "manifest.json"
FORMAT = 1
BENCH_SIZE = 256  # the CPU time is of one BENCH_SIZE x BENCH_SIZE output slice, as mrsr benchmark's default

# Train settings that say where and how fast a run went, not what it learnt: left out of the recipe check.
RUN_ENVIRONMENT_KEYS = frozenset({"val_slices", "deterministic", "device", "threads", "amp", "channels_last",
                                  "compile", "checkpoint_every_s"})

# What the embedded sample is (data/btp-sample/README.md): stated in every shipped sidecar and card.
SAMPLE_DATA: dict[str, Any] = {
    "source": "sample",
    "description": "data/btp-sample: 12 T1 post-contrast MR volumes (before and at progression) of six patients, "
                   "256x256 in-plane, 20 real slices each",
    "collection": "Brain-Tumor-Progression, The Cancer Imaging Archive (TCIA)",
    "licence": "CC BY 3.0 (Creative Commons Attribution 3.0 Unported)",
    "citations": ["https://doi.org/10.7937/K9/TCIA.2018.15quzvnb", "https://doi.org/10.1007/s10278-013-9622-7"],
}

LIMITS = ("one sequence type (T1 post-contrast, brain)", "bicubic degradation only (LR = bicubic downscaling "
          "of the HR slice): real low-resolution acquisitions blur differently", "2-D, in-plane: slices are "
          "super-resolved one at a time, the slice thickness is unchanged", "six patients (two scanner vendors): "
          "trained and tested on the same small cohort, split by series, so a patient's anatomy may be in both")
INTENDED_USE = ("Research and teaching: reproducing and comparing MR super-resolution. Not for diagnosis or "
                "any clinical decision: a network can invent or remove detail, and none here is validated clinically.")


class ZooError(UsageError):
    """A shipped network that cannot be named, found or trusted, or a network that cannot be shipped."""


# --- reading -------------------------------------------------------------------------------------


def zoo_dir(folder: Path | None = None) -> Path:
    """``folder``, or the package's zoo (read at call time, so tests can point it elsewhere)."""
    return Path(folder) if folder is not None else ZOO_DIR


def read_manifest(folder: Path | None = None) -> dict[str, Any]:
    """The manifest (``{"format": 1, "models": {NAME: entry}}``); an empty one where none is written yet.

    Args:
        folder: the zoo folder (default: the package's).
    """
    import json

    path = zoo_dir(folder) / MANIFEST
    if not path.exists():
        return {"format": FORMAT, "models": {}}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ZooError(f"{path}: not valid JSON ({exc}); reinstall mrsr") from exc
    if manifest.get("format") != FORMAT or not isinstance(manifest.get("models"), dict):
        raise ZooError(f"{path}: not a format-{FORMAT} manifest (keys format, models); reinstall mrsr")
    return manifest


def read_shipped_sidecar(name: str, folder: Path | None = None) -> dict[str, Any]:
    """The shipped sidecar of ``name`` (not checksummed: for listing; :func:`shipped_weights` checks)."""
    import json

    return json.loads((zoo_dir(folder) / f"{name}.json").read_text(encoding="utf-8"))


def defaults(manifest: dict[str, Any]) -> dict[int, str]:
    """scale -> the shipped name with the best test PSNR at that scale (ties: the first name in order)."""
    best: dict[int, str] = {}
    for name, entry in sorted(manifest["models"].items()):
        scale = int(entry["scale"])
        if scale not in best or entry["test"]["psnr"] > manifest["models"][best[scale]]["test"]["psnr"]:
            best[scale] = name
    return best


def file_problems(name: str, entry: dict[str, Any], folder: Path | None = None) -> list[str]:
    """One line per shipped file of ``name`` that is missing or fails its SHA-256 (empty: both fine)."""
    problems = []
    for kind in ("weights", "sidecar"):
        path = zoo_dir(folder) / entry[kind]["file"]
        if not path.exists():
            problems.append(f"{path}: missing (shipped network {name}); reinstall mrsr")
        elif (found := file_sha256(path)) != entry[kind]["sha256"]:
            problems.append(f"{path}: SHA-256 {found[:12]}... is not the manifest's {entry[kind]['sha256'][:12]}... "
                            f"(shipped network {name} altered or corrupt): refused; reinstall mrsr")
    return problems


def shipped_weights(name: str, folder: Path | None = None) -> Path:
    """The weights file of shipped network ``name``, after both its files passed their SHA-256 check.

    Args:
        name: a shipped name (``mrsr models`` lists them).
        folder: the zoo folder (default: the package's).

    Raises:
        ZooError: an unknown name (the message lists the shipped ones), or a file that is missing or
            fails its checksum (never loaded).
    """
    manifest = read_manifest(folder)
    entry = manifest["models"].get(name)
    if entry is None:
        shipped = ", ".join(sorted(manifest["models"])) or "none"
        raise ZooError(f"--model {name}: not a shipped network nor a weights file; shipped: {shipped}")
    problems = file_problems(name, entry, folder)
    if problems:
        raise ZooError(problems[0])
    return zoo_dir(folder) / entry["weights"]["file"]


def resolve_model(model: str | None, scale: int | None, folder: Path | None = None) -> Path:
    """What ``mrsr upscale --model MODEL --scale SCALE`` runs: a weights path, a shipped name, or (no
    ``--model``) the default shipped network of ``--scale``.

    Args:
        model: ``--model`` as given (a path, a shipped name, or None).
        scale: ``--scale`` (or None).
        folder: the zoo folder (default: the package's).

    Raises:
        ZooError: neither given; no shipped network at ``scale``; an unknown name; a failed checksum.
    """
    if model is None:
        if scale is None:
            raise ZooError("--model: give weights (.safetensors) or a shipped name (mrsr models lists them), "
                           "or --scale alone for the default shipped network of that scale")
        chosen = defaults(read_manifest(folder)).get(scale)
        if chosen is None:
            scales = ", ".join(f"x{s}" for s in sorted(defaults(read_manifest(folder)))) or "none"
            raise ZooError(f"--scale {scale}: no shipped network at x{scale} (shipped scales: {scales}); "
                           "give --model with weights trained for it")
        return shipped_weights(chosen, folder)
    if _is_path(model):
        return Path(model)
    return shipped_weights(model, folder)


def _is_path(text: str) -> bool:
    """A ``--model`` that names a file rather than a shipped network (shipped names have no dot or slash)."""
    return Path(text).exists() or "/" in text or "\\" in text or "." in text


# --- checking ------------------------------------------------------------------------------------


def recipe_mismatches(sidecar: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """Where a shipped sidecar's recipe differs from the profile's current one for its job and seed.

    Compared: the model options and every train setting but those of :data:`RUN_ENVIRONMENT_KEYS`.

    Args:
        sidecar: a shipped sidecar (``job``, ``seed``, ``options``, ``train``).
        config: the loaded profile (:func:`mrsr.config.load_config`).
    """
    job = Job.from_name(sidecar["job"])
    out = []
    if job not in {Job(e["model"], e.get("strategy"), s) for e in config["experiments"] for s in e["scales"]}:
        return [f"job {job.name} is not trained by profile {config['profile']}"]
    if (options := model_options(config, job.model)) != sidecar["options"]:
        out.append(f"model.{job.model}: {sidecar['options']} shipped, {options} in the profile")
    wanted = job_train_settings(config, job, seed=int(sidecar["seed"]))
    # A setting added after the network was trained is read as its schema default: every default
    # reproduces the training as it was before the setting existed.
    shipped = {**train_defaults(), **sidecar["train"]}
    for key in sorted(set(wanted) - RUN_ENVIRONMENT_KEYS):
        if shipped.get(key, "<absent>") != wanted[key]:
            out.append(f"train.{key}: {shipped.get(key, '<absent>')!r} shipped, {wanted[key]!r} in the profile")
    return out


def verify(config_path: Path, folder: Path | None = None) -> list[str]:
    """Every problem of the shipped networks, one line each (empty: all verified).

    Per network: both files match their SHA-256; the manifest's figures are the sidecar's; the recipe
    is ``config_path``'s (the profile named in the sidecar must be that file's).

    Args:
        config_path: the profile the networks were trained with (config/paper.yaml).
        folder: the zoo folder (default: the package's).
    """
    config = load_config(config_path)
    manifest = read_manifest(folder)
    problems = []
    for name, entry in sorted(manifest["models"].items()):
        files = file_problems(name, entry, folder)
        problems += files
        if files:
            continue
        sidecar = read_shipped_sidecar(name, folder)
        if sidecar["test"] != entry["test"]:
            problems.append(f"{name}: the manifest's test figures are not the sidecar's")
        if sidecar["profile"] != config["profile"]:
            problems.append(f"{name}: trained with profile {sidecar['profile']}, {config_path} is {config['profile']}")
            continue
        problems += [f"{name}: {config_path}: {m}" for m in recipe_mismatches(sidecar, config)]
    return problems


# --- shipping ------------------------------------------------------------------------------------


def evaluation_metrics(per_image: Path, bicubic: Path, job: Job, seed: int) -> dict[str, Any]:
    """Test-split means of a trained job and of bicubic from their ``mrsr evaluate`` CSVs, and the gain.

    Args:
        per_image: the job's per-image CSV (results/PROFILE/metrics/per_image/seedK/JOB.csv).
        bicubic: bicubic's at the same scale (results/PROFILE/metrics/per_image/bicubic_xS.csv).
        job: the job the weights are of; ``seed`` their training seed.

    Raises:
        ZooError: a CSV of another method, scale or seed, or the two on different slices.
    """
    import pandas as pd

    from mrsr.evaluate import summarize

    frames = {path: pd.read_csv(path, keep_default_na=False, dtype={"strategy": str, "seed": str})
              for path in (per_image, bicubic)}
    wanted = {per_image: (job.model, job.strategy or "", job.scale, str(seed)), bicubic: ("bicubic", "", job.scale, "")}
    for path, expected in wanted.items():
        got = frames[path][["method", "strategy", "scale", "seed"]].drop_duplicates()
        if len(got) != 1 or tuple(got.iloc[0]) != expected:
            raise ZooError(f"{path}: rows of {got.values.tolist()}, expected {list(expected)} "
                           "(method, strategy, scale, seed): the CSV of another run?")
    if sorted(frames[per_image]["slice_id"]) != sorted(frames[bicubic]["slice_id"]):
        raise ZooError(f"{per_image} and {bicubic}: evaluated on different test slices; evaluate both again")
    try:
        rows = summarize([per_image, bicubic]).set_index("method")
    except ValueError as exc:
        raise ZooError(str(exc)) from exc
    ours, bic = rows.loc[job.model], rows.loc["bicubic"]
    return {"psnr": float(ours["psnr"]), "ssim": float(ours["ssim"]), "psnr_fg": float(ours["psnr_fg"]),
            "bicubic_psnr": float(bic["psnr"]), "bicubic_ssim": float(bic["ssim"]),
            "gain_db": float(ours["psnr"] - bic["psnr"]), "ssim_gain": float(ours["ssim"] - bic["ssim"]),
            "n_slices": int(ours["n_images"]),
            "test_patients": sorted(set(frames[per_image]["patient_id"].astype(str))),
            "csv": {"per_image": {"file": workflow_path(per_image, "results"), "sha256": file_sha256(per_image)},
                    "bicubic": {"file": workflow_path(bicubic, "results"), "sha256": file_sha256(bicubic)}}}


def workflow_path(path: Path, top: str) -> str:
    """``path`` from its workflow's ``top`` folder on (``results/paper/metrics/...``, ``models/paper/...``):
    where the file lies in any clone, not on the machine that shipped it."""
    parts = Path(path).resolve().parts
    return Path(*parts[len(parts) - 1 - parts[::-1].index(top):]).as_posix() if top in parts else Path(path).name


def cpu_time(weights: Path, threads: int = 0, runs: int = 20, warmup: int = 2) -> dict[str, Any]:
    """CPU time of one forward pass on a BENCH_SIZE x BENCH_SIZE output slice, as ``mrsr benchmark``
    measures it (the inference path that upscale runs), with the CPU it ran on and how busy the
    machine was (``other_load_cores``: cores other processes used meanwhile).

    Args:
        weights: the trained file; ``threads``: torch threads (0: every core); ``runs``/``warmup``: passes.
    """
    import torch

    from mrsr.data.patches import degrade
    from mrsr.inference import prepare, to_input
    from mrsr.flops import count_flops
    from mrsr.machine import OtherLoad, cpu_info, use_threads
    from mrsr.timing import measure, phantom
    from mrsr.weights import load_model

    used = use_threads(threads)
    model, meta = load_model(weights)
    hr = phantom(BENCH_SIZE)
    flops = count_flops(model, to_input(degrade(hr[None], int(meta["scale"]))[1][0]))
    model = prepare(model, "fp32")
    with OtherLoad() as load:
        figures, _ = measure(model, [hr], int(meta["scale"]), runs=runs, warmup=warmup, flops=flops)
    info = cpu_info()
    return {"ms_per_slice": figures["ms_per_slice"], "ms_min": figures["ms_min"], "ms_max": figures["ms_max"],
            "size": BENCH_SIZE, "gflop_per_slice": figures["gflop_per_slice"], "threads": used,
            "cpu": info["cpu"], "cores": info["cores"], "other_load_cores": load.cores, "runs": runs,
            "torch": torch.__version__}


def shipped_sidecar(name: str, meta: dict[str, Any], metrics: dict[str, Any], machine: str,
                    weights: Path) -> dict[str, Any]:
    """The small sidecar shipped with a network: the training sidecar's essentials (not its whole
    config, history or patch file) plus data, training time and machine, and test metrics.

    Args:
        name: the shipped name; ``meta``: the training sidecar; ``metrics``: :func:`evaluation_metrics`.
        machine: what the network was trained on (the training sidecar names the device only).
        weights: the trained file (its path is recorded as the source).
    """
    config, train, timing = meta["config"], meta["train"], meta.get("timing") or {}
    if config["data"]["source"] != "sample":
        raise ZooError(f"{weights}: trained on data.source {config['data']['source']}; only networks trained on "
                       "the embedded sample (its licence and cohort are known here) can be shipped")
    job = Job(meta["model"], meta.get("strategy"), int(meta["scale"]))
    return {
        "name": name, "model": meta["model"], "scale": int(meta["scale"]), "strategy": meta.get("strategy"),
        "options": meta.get("options", {}), "job": job.name, "profile": config["profile"], "seed": train["seed"],
        "recipe": meta.get("recipe"), "train": train, "git_revision": meta.get("git_revision"),
        "data": {**SAMPLE_DATA, "split": config["split"], "patches": config["patches"][f"x{job.scale}"]},
        "training": {"device": meta.get("device"), "machine": machine, "torch": meta.get("torch"),
                     "seconds": float(timing.get("setup_s", 0.0) + timing.get("epochs_s", 0.0)),
                     "steady_samples_per_s": timing.get("steady_samples_per_s"),
                     "patches": (meta.get("patches") or {}).get("count"),
                     "final_val_psnr": meta.get("final_val_psnr")},
        "test": {k: v for k, v in metrics.items() if k != "csv"},
        "source": {"weights": workflow_path(weights, "models"), "evaluation": metrics["csv"]},
    }


def this_machine(info: dict[str, Any]) -> str:
    """A CPU machine in words, e.g. ``AMD EPYC, 2 cores`` (from :func:`mrsr.machine.cpu_info`)."""
    return f"{info['cpu']}, {info['cores']} cores"


def ship(weights: Path, per_image: Path, bicubic: Path, *, name: str | None = None, machine: str | None = None,
         folder: Path | None = None, threads: int = 0, runs: int = 20) -> dict[str, Any]:
    """Add (or replace) a shipped network: copy the weights, write the small sidecar and the manifest entry.

    Every figure comes from the files given: test metrics from the evaluation CSVs, parameters from
    the weights, CPU time measured here and now.

    Args:
        weights: trained weights (models/PROFILE/seedK/JOB.safetensors with its .json sidecar).
        per_image: the job's evaluation CSV; ``bicubic``: bicubic's at its scale.
        name: shipped name (default ``MODEL-xSCALE``, ``MODEL-STRATEGY-xSCALE`` with a strategy).
        machine: what it was trained on (default: this machine's CPU, right when shipping where it trained).
        folder: the zoo folder (default: the package's).
        threads: torch threads for the CPU time; ``runs``: timed passes.

    Returns:
        The manifest entry written.
    """
    from mrsr.machine import cpu_info
    from mrsr.weights import WeightsError, load_model, read_sidecar

    try:
        model, _ = load_model(weights)  # refuses pickles, mismatched headers, weights that do not fit
        meta = read_sidecar(weights)
    except WeightsError as exc:
        raise ZooError(str(exc)) from exc
    if "config" not in meta or "train" not in meta:
        raise ZooError(f"{weights}: its sidecar lacks the training config (not written by mrsr train?)")
    job = Job(meta["model"], meta.get("strategy"), int(meta["scale"]))
    name = name or job.name.replace("_", "-")
    metrics = evaluation_metrics(Path(per_image), Path(bicubic), job, int(meta["train"]["seed"]))
    sidecar = shipped_sidecar(name, meta, metrics, machine or this_machine(cpu_info()), Path(weights))
    target = zoo_dir(folder)
    target.mkdir(parents=True, exist_ok=True)
    with atomic_path(target / f"{name}.safetensors", suffix=".safetensors") as tmp:
        shutil.copyfile(weights, tmp)
    write_json(target / f"{name}.json", sidecar)
    entry = {
        "model": job.model, "strategy": job.strategy, "scale": job.scale, "job": job.name,
        "profile": sidecar["profile"], "seed": sidecar["seed"],
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "weights": {"file": f"{name}.safetensors", "sha256": file_sha256(target / f"{name}.safetensors")},
        "sidecar": {"file": f"{name}.json", "sha256": file_sha256(target / f"{name}.json")},
        "test": sidecar["test"],
        "cpu": cpu_time(target / f"{name}.safetensors", threads, runs),
    }
    manifest = read_manifest(folder)
    manifest["models"][name] = entry
    manifest["models"] = dict(sorted(manifest["models"].items()))
    write_json(target / MANIFEST, manifest)
    return entry


# --- showing -------------------------------------------------------------------------------------


def retrain_command(sidecar: dict[str, Any]) -> str:
    """The Snakemake command that retrains a shipped network (its profile, seed and job)."""
    config = "config.yaml" if sidecar["profile"] == "quick" else f"config/{sidecar['profile']}.yaml"
    # The target before --configfile: snakemake's --configfile takes every value that follows it.
    return (f"snakemake --cores 2 models/{sidecar['profile']}/seed{sidecar['seed']}/{sidecar['job']}.safetensors "
            f"--configfile {config}")


def table(folder: Path | None = None) -> str:
    """``mrsr models``' table: one row per shipped network, the default of each scale marked."""
    manifest = read_manifest(folder)
    if not manifest["models"]:
        return "no shipped networks"
    best = set(defaults(manifest).values())
    cpus = sorted({e["cpu"]["cpu"] for e in manifest["models"].values()})
    lines = [f"{'name':<14} {'scale':>5} {'params':>8} {'test PSNR':>9} {'gain':>7} {'CPU ms':>7}  default",
             f"{'':<14} {'':>5} {'':>8} {'dB':>9} {'dB':>7} {'/slice':>7}"]
    for name, e in manifest["models"].items():
        lines.append(f"{name:<14} {'x' + str(e['scale']):>5} {e['parameters']:>8,} {e['test']['psnr']:>9.2f} "
                     f"{e['test']['gain_db']:>+7.2f} {e['cpu']['ms_per_slice']:>7.1f}  "
                     f"{'yes (x' + str(e['scale']) + ')' if name in best else ''}".rstrip())
    busy = max((e["cpu"]["other_load_cores"] or 0.0) for e in manifest["models"].values())
    lines.append(f"Test PSNR and gain over bicubic on the sample's test split; CPU ms per {BENCH_SIZE}x{BENCH_SIZE} "
                 f"output slice (fp32) on {'; '.join(cpus)}"
                 + (f", measured while other processes kept up to {busy:.1f} cores busy (slower than idle)" if busy >= 0.5
                    else "") + ". `mrsr upscale --scale N` without --model runs the default.")
    return "\n".join(lines)


def _hours(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def _steady_time(samples: int | None, per_s: float | None) -> str:
    """The budget at the run's steady rate: wall time also holds whatever shared or paused the machine."""
    return f"; {_hours(samples / per_s)} at its steady {per_s:,.0f} samples/s" if samples and per_s else ""


def model_card(name: str, entry: dict[str, Any], sidecar: dict[str, Any], default: bool) -> str:
    """One network's card in docs/model-zoo.md, every figure from its manifest entry and sidecar."""
    t, train, cpu, tr = sidecar["test"], sidecar["train"], entry["cpu"], sidecar["training"]
    steps = (sidecar.get("recipe") or {}).get("steps_per_epoch") or train["steps_per_epoch"]
    samples = train["epochs"] * steps * train["batch_size"] if steps else None
    load = "" if cpu["other_load_cores"] is None else f", {cpu['other_load_cores']:.1f} other cores busy"
    return "\n".join([
        f"## {name}" + (f" (default at x{entry['scale']})" if default else ""),
        "",
        f"- **Network**: {sidecar['model']}" + (f" ({sidecar['strategy']})" if sidecar["strategy"] else "")
        + f", x{entry['scale']}, {entry['parameters']:,} parameters; options {sidecar['options'] or 'none (defaults)'}",
        f"- **Test metrics** ({t['n_slices']} test slices of patients {', '.join(t['test_patients'])}): "
        f"PSNR {t['psnr']:.2f} dB, SSIM {t['ssim']:.4f}; bicubic {t['bicubic_psnr']:.2f} dB, "
        f"{t['bicubic_ssim']:.4f}; gain {t['gain_db']:+.2f} dB, SSIM {t['ssim_gain']:+.4f}",
        f"- **Training data**: {sidecar['data']['description']}; {sidecar['data']['collection']}; licence "
        f"{sidecar['data']['licence']}; split by {sidecar['data']['split']['by']}, seed {sidecar['data']['split']['seed']}",
        f"- **Recipe**: {train['recipe']}",
        f"- **Budget**: {train['epochs']} epochs x {steps} steps x batch {train['batch_size']} = "
        f"{samples:,} samples" if samples else f"- **Budget**: {train['epochs']} epochs, batch {train['batch_size']}",
        f"- **Trained**: profile {sidecar['profile']}, seed {sidecar['seed']}, git {sidecar['git_revision']}, "
        f"{_hours(tr['seconds'])} wall time on {tr['machine']} (device {tr['device']}, torch {tr['torch']})"
        + _steady_time(samples, tr.get("steady_samples_per_s")),
        f"- **CPU time**: {cpu['ms_per_slice']:.1f} ms per {cpu['size']}x{cpu['size']} output slice, "
        f"{cpu['threads']} threads on {cpu['cpu']}{load}",
        f"- **SHA-256**: `{entry['weights']['sha256']}` ({entry['weights']['file']})",
        f"- **Retrain**: `{retrain_command(sidecar)}`",
        f"- **Use**: `mrsr upscale --model {name} --out sr/ SCAN.nii.gz`",
        "",
    ])


def model_cards(folder: Path | None = None) -> str:
    """docs/model-zoo.md: the shared facts, then one card per shipped network (``mrsr models --cards``)."""
    manifest = read_manifest(folder)
    best = set(defaults(manifest).values())
    head = [
        "# Model zoo: the shipped networks",
        "",
        "Generated by `mrsr models --cards docs/model-zoo.md` from src/mrsr/zoo/manifest.json and the shipped "
        "sidecars (tests/test_zoo.py checks that this file is what they say). `mrsr models` lists the networks, "
        "`mrsr models --verify` checks each file's SHA-256 and that its recipe is still config/paper.yaml's.",
        "",
        f"**Intended use**: {INTENDED_USE}",
        "",
        "**Known limits** (all networks): " + "; ".join(LIMITS) + ".",
        "",
        f"**Data**: {SAMPLE_DATA['collection']}, {SAMPLE_DATA['licence']}; cite "
        + " and ".join(SAMPLE_DATA["citations"]) + " (data/btp-sample/README.md).",
        "",
        "**Metrics**: PSNR and SSIM on the sample's test split, as `mrsr evaluate` computes them "
        "(docs/models.md); the gain is over bicubic interpolation on the same slices.",
        "",
    ]
    cards = [model_card(n, e, read_shipped_sidecar(n, folder), n in best) for n, e in manifest["models"].items()]
    return "\n".join(head + cards)


# --- the command ---------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("List the networks shipped with mrsr (scale, parameters, test PSNR gain over bicubic, "
                          "CPU time, the default per scale); verify them; add one; write their model cards.")
    parser.add_argument("--verify", action="store_true",
                        help="check every shipped file's SHA-256 and that its recipe is --config's")
    parser.add_argument("--config", type=Path, default=Path("config/paper.yaml"),
                        help="the profile the networks were trained with (default config/paper.yaml)")
    parser.add_argument("--add", type=existing_file, metavar="WEIGHTS",
                        help="ship trained weights (models/PROFILE/seedK/JOB.safetensors with its .json sidecar)")
    parser.add_argument("--per-image", type=existing_file, help="with --add: the job's evaluation CSV "
                        "(default results/PROFILE/metrics/per_image/seedK/JOB.csv beside models/)")
    parser.add_argument("--bicubic", type=existing_file, help="with --add: bicubic's evaluation CSV at the scale "
                        "(default results/PROFILE/metrics/per_image/bicubic_xS.csv)")
    parser.add_argument("--name", help="with --add: shipped name (default MODEL-xSCALE)")
    parser.add_argument("--trained-on", help="with --add: the training machine (default: this machine's CPU)")
    parser.add_argument("--threads", type=int, default=0, help="with --add: torch threads for the CPU time (0: all)")
    parser.add_argument("--cards", type=Path, metavar="MD", help="write the model cards (docs/model-zoo.md)")
    parser.add_argument("--zoo", type=Path, help=argparse.SUPPRESS)  # another zoo folder (tests)


def evaluation_csvs(weights: Path) -> tuple[Path, Path]:
    """The workflow's evaluation CSVs of models/PROFILE/[SPLIT/]seedK/JOB.safetensors and of bicubic."""
    parts = weights.resolve().parts
    if "models" not in parts:
        raise ZooError(f"--add {weights}: not under models/; give --per-image and --bicubic")
    i = len(parts) - 1 - parts[::-1].index("models")
    root, rest = Path(*parts[:i]), parts[i + 1:]
    if len(rest) < 3:  # PROFILE/seedK/JOB.safetensors at least
        raise ZooError(f"--add {weights}: not models/PROFILE/seedK/JOB.safetensors; give --per-image and --bicubic")
    profile, *split, _seed, _file = rest
    job = Job.from_name(weights.stem)
    per_image = root / "results" / profile / "metrics" / "per_image" / Path(*split, _seed, f"{job.name}.csv")
    bicubic = root / "results" / profile / "metrics" / "per_image" / Path(*split, f"bicubic_x{job.scale}.csv")
    return per_image, bicubic


def run(args: argparse.Namespace) -> int:
    if args.add:
        per_image, bicubic = evaluation_csvs(args.add) if not (args.per_image and args.bicubic) else (None, None)
        per_image, bicubic = args.per_image or per_image, args.bicubic or bicubic
        for path in (per_image, bicubic):
            if not path.exists():
                raise ZooError(f"--add {args.add}: no evaluation CSV {path}; run the workflow's evaluate step first")
        entry = ship(args.add, per_image, bicubic, name=args.name, machine=args.trained_on, folder=args.zoo,
                     threads=args.threads)
        print(f"shipped {entry['weights']['file']}: x{entry['scale']}, test PSNR {entry['test']['psnr']:.2f} dB "
              f"({entry['test']['gain_db']:+.2f} dB over bicubic), {entry['cpu']['ms_per_slice']:.1f} ms/slice")
    if args.cards:
        write_text(args.cards, model_cards(args.zoo))
        print(f"wrote {args.cards}")
    if args.verify:
        problems = verify(args.config, args.zoo)
        for line in problems:
            print(f"FAILED {line}")
        if problems:
            return 2
        print(f"verified {len(read_manifest(args.zoo)['models'])} shipped networks against {args.config}")
    if not (args.add or args.cards or args.verify):
        print(table(args.zoo))
    return 0
