"""Shipping a trained network: ``mrsr models --add`` and ``mrsr models --default``.

Every figure of a new card comes from the bytes shipped: the weights are copied once into a private
folder, and that copy is evaluated on the embedded sample (:mod:`mrsr.zoo.evaluation`), timed on this
CPU and then staged into the zoo, so the card's SHA-256 and its test figures belong to one file.
The zoo changes all at once or not at all (:mod:`mrsr.zoo.commit`).
"""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path
from typing import Any

from mrsr.config import Job
from mrsr.zoo.commit import Change
from mrsr.zoo.evaluation import PSNR_TOLERANCE_DB, SampleEvaluator, figures_of, find_sample, spec_for
from mrsr.zoo.manifest import MANIFEST, Card, FileRef, Manifest, ZooError, check_name, read_manifest, zoo_dir

BENCH_SIZE = 256  # the CPU time is of one BENCH_SIZE x BENCH_SIZE output slice, as mrsr benchmark's default

# What the embedded sample is (data/btp-sample/README.md): stated in every shipped sidecar and card.
SAMPLE_DATA: dict[str, Any] = {
    "source": "sample",
    "description": "data/btp-sample: 12 T1 post-contrast MR volumes (before and at progression) of six patients, "
                   "256x256 in-plane, 20 real slices each",
    "collection": "Brain-Tumor-Progression, The Cancer Imaging Archive (TCIA)",
    "licence": "CC BY 3.0 (Creative Commons Attribution 3.0 Unported)",
    "citations": ["https://doi.org/10.7937/K9/TCIA.2018.15quzvnb", "https://doi.org/10.1007/s10278-013-9622-7"],
}


def cpu_time(weights: Path, threads: int = 0, runs: int = 20, warmup: int = 2) -> dict[str, Any]:
    """CPU time of one forward pass on a BENCH_SIZE x BENCH_SIZE output slice, as ``mrsr benchmark``
    measures it (the inference path that upscale runs), with the CPU it ran on and how busy the
    machine was (``other_load_cores``: cores other processes used meanwhile)."""
    import torch

    from mrsr.data.patches import degrade
    from mrsr.flops import count_flops
    from mrsr.inference import prepare, to_input
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


def workflow_path(path: Path, top: str) -> str:
    """``path`` from its workflow's ``top`` folder on (``models/paper/...``): where the file lies in
    any clone, not on the machine that shipped it."""
    parts = Path(path).resolve().parts
    return Path(*parts[len(parts) - 1 - parts[::-1].index(top):]).as_posix() if top in parts else Path(path).name


def shipped_sidecar(name: str, meta: dict[str, Any], test: dict[str, Any], machine: str,
                    weights: Path) -> dict[str, Any]:
    """The small sidecar shipped with a network: the training sidecar's essentials (not its whole
    config, history or patch file) plus data, training time and machine, and test metrics."""
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
        "test": test,
        "source": {"weights": workflow_path(weights, "models"), "evaluation": "mrsr models --add, on the sample"},
    }


def stale_csv_problem(per_image: Path, psnr: float) -> str | None:
    """Why an evaluation CSV of the weights disagrees with their own evaluation (None: it agrees)."""
    import pandas as pd

    try:
        stated = float(pd.read_csv(per_image)["psnr"].mean())
    except (OSError, ValueError, KeyError) as exc:
        return f"{per_image}: not an evaluation CSV ({type(exc).__name__}: {exc})"
    if abs(stated - psnr) > PSNR_TOLERANCE_DB:
        return (f"{per_image}: states test PSNR {stated:.2f} dB, but these weights score {psnr:.2f} dB on the same "
                "split: the CSV is of other weights (retrained since?); refused, nothing shipped")
    return None


def _today() -> str:
    return datetime.datetime.now(datetime.timezone.utc).date().isoformat()


def _commit(folder: Path, manifest: Manifest, files: dict[str, Path | str]) -> None:
    """Stage ``files`` (name -> a file to copy, or text) and the new manifest; commit them as one change."""
    from mrsr.io import write_json

    change = Change(folder)
    try:
        for name, content in files.items():
            tmp = change.stage(name)
            if isinstance(content, Path):
                shutil.copyfile(content, tmp)
            else:
                tmp.write_text(content, encoding="utf-8")
        write_json(change.stage(MANIFEST), manifest.to_dict())  # write_json writes the staged name atomically
        change.commit()
    finally:
        change.discard()


def ship(weights: Path, *, name: str | None = None, replace: bool = False, machine: str | None = None,
         folder: Path | None = None, threads: int = 0, runs: int = 20, sample: Path | None = None,
         per_image: Path | None = None) -> tuple[str, Card]:
    """Add a network to the zoo (or, with ``replace``, replace one of the same name).

    Args:
        weights: trained weights (models/PROFILE/seedK/JOB.safetensors with its .json sidecar).
        name: shipped name (:data:`mrsr.zoo.manifest.NAME_PATTERN`; default ``MODEL[-STRATEGY]-xSCALE``).
        replace: allow replacing a shipped network of that name.
        machine: what it was trained on (default: this machine's CPU).
        folder: the zoo folder (default: the package's).
        threads, runs: torch threads and timed passes for the CPU time.
        sample: the embedded sample folder (default: :func:`mrsr.zoo.evaluation.find_sample`).
        per_image: an evaluation CSV of these weights, refused when it disagrees with their own evaluation.

    Returns:
        The name and the card written.
    """
    import json

    from mrsr.machine import cpu_info
    from mrsr.weights import WeightsError, load_model, sidecar_path

    target = zoo_dir(folder)
    manifest = read_manifest(folder, must_exist=any(target.glob("*.safetensors")))
    try:
        model, meta = load_model(weights)  # refuses pickles, mismatched headers, weights that do not fit
    except WeightsError as exc:
        raise ZooError(str(exc)) from exc
    if "config" not in meta or "train" not in meta:
        raise ZooError(f"{weights}: its sidecar lacks the training config (not written by mrsr train?)")
    job = Job(meta["model"], meta.get("strategy"), int(meta["scale"]))
    name = check_name(name or job.name.replace("_", "-"), job.scale)
    if name in manifest.models and not replace:
        old = manifest.models[name]
        raise ZooError(f"--name {name}: shipped already (test PSNR {old.test['psnr']:.2f} dB, "
                       f"{old.test['gain_db']:+.2f} over bicubic); give --replace to replace it, or another --name")
    with SampleEvaluator(find_sample(sample)) as testset:
        # One private copy: the bytes evaluated, timed, hashed and shipped are the same.
        copy = testset.workdir / "weights.safetensors"
        shutil.copyfile(weights, copy)
        shutil.copyfile(sidecar_path(weights), sidecar_path(copy))
        spec = spec_for(copy, meta["config"], job.scale)
        test = figures_of(testset, copy, job.model, job.scale, spec)
        if per_image is not None and (problem := stale_csv_problem(per_image, test["psnr"])):
            raise ZooError(problem)
        sidecar = shipped_sidecar(name, meta, test, machine or f"{cpu_info()['cpu']}, {cpu_info()['cores']} cores",
                                  Path(weights))
        sidecar_text = json.dumps(sidecar, indent=2, sort_keys=True, default=str) + "\n"
        card = Card(model=job.model, strategy=job.strategy, scale=job.scale, job=job.name, profile=sidecar["profile"],
                    seed=int(sidecar["seed"]), parameters=int(sum(p.numel() for p in model.parameters())),
                    weights=FileRef(f"{name}.safetensors", spec.weights_sha256),
                    sidecar=FileRef(f"{name}.json", _text_sha256(sidecar_text)), test=test,
                    cpu=cpu_time(copy, threads, runs), evaluation=spec)
        verb = "replaced" if name in manifest.models else "added"
        manifest.models[name] = card
        manifest.changelog.append(f"{_today()}: {verb} {name} (x{job.scale}, test PSNR {test['psnr']:.2f} dB, "
                                  f"{test['gain_db']:+.2f} over bicubic)")
        if manifest.default(job.scale) is None:
            manifest.defaults[job.scale] = {"name": name, "message": f"the first network shipped at x{job.scale}"}
        _commit(target, manifest, {card.weights.file: copy, card.sidecar.file: sidecar_text})
    return name, card


def _text_sha256(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def set_default(name: str, message: str, folder: Path | None = None) -> int:
    """Make shipped ``name`` the network that ``--scale`` runs at its scale, recording ``message``.

    Returns:
        The scale whose default changed.
    """
    if not message or not message.strip():
        raise ZooError("--default: give --message saying why the default changes (it is kept in the changelog)")
    manifest = read_manifest(folder)
    if name not in manifest.models:
        raise ZooError(f"--default {name}: not a shipped network; shipped: {', '.join(sorted(manifest.models))}")
    scale = manifest.models[name].scale
    before = manifest.default(scale)
    manifest.defaults[scale] = {"name": name, "message": message.strip()}
    manifest.changelog.append(f"{_today()}: default at x{scale}: {before} -> {name} ({message.strip()})")
    _commit(zoo_dir(folder), manifest, {})
    return scale
